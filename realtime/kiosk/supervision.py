"""Keeping the kiosk's audio devices alive: start and close the streams off the event loop, notice
a device that stopped (PortAudio ended the stream, or its callbacks stopped), reopen it by name for
``reconnect_s``, else stop the kiosk with exit code 3 and the devices it can see now."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from realtime.kiosk.barge_in import BargeIn
from realtime.kiosk.devices import AudioDeviceError, Device, format_devices, list_devices, rescan, resolve

log = logging.getLogger(__name__)

__all__ = ["DeviceSupervision"]


class DeviceSupervision:
    """The device half of :class:`~realtime.kiosk.kiosk.Kiosk` (it supplies ``config``, ``mic``,
    ``speaker``, ``mic_device``, ``out_device``, ``pacer``, ``state``, ``reconnects``, ``_stop``,
    ``_stuck`` and ``request_stop``)."""

    async def _start_streams(self) -> None:
        from realtime.kiosk.audio_io import MicInput

        c = self.config
        if self.mic_device is not None:
            if c.barge_in:
                self._barge = BargeIn(speech_s=c.barge_in_s)
            self.mic = MicInput(self.mic_device, self._on_mic, asyncio.get_running_loop(), stall_s=c.stall_s)
            await self._in_thread(self.mic.start, 10.0)
        if self.out_device is not None:
            await self._in_thread(self.speaker.start, 10.0)

    async def _close_streams(self) -> None:
        for stream in (self.mic, self.speaker):
            if stream is not None and getattr(stream, "stream", None) is not None:
                ok = await asyncio.get_running_loop().run_in_executor(None, stream.close)
                self._stuck |= not ok

    async def _in_thread(self, fn, timeout_s: float):  # noqa: ANN001, ANN202
        """Run a PortAudio call on a daemon thread (it may block on a vanished device)."""
        fut = asyncio.get_running_loop().create_future()
        aio = asyncio.get_running_loop()

        def settle(exc: BaseException | None, result: object) -> None:
            if not fut.done():
                fut.set_exception(exc) if exc is not None else fut.set_result(result)

        def target() -> None:
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                aio.call_soon_threadsafe(settle, exc, None)
            else:
                aio.call_soon_threadsafe(settle, None, result)

        threading.Thread(target=target, name="lipstream-portaudio", daemon=True).start()
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except asyncio.TimeoutError:
            self._stuck = True
            raise AudioDeviceError(f"PortAudio did not answer within {timeout_s:.0f} s") from None

    def _lost(self, now: float) -> str | None:
        c = self.config
        for name, stream in (("microphone", self.mic), ("speaker", self.speaker if self.out_device else None)):
            if stream is None:
                continue
            if stream.finished or stream.stream is None:
                return name
            if not stream.callbacks:
                if now - stream.started_at > c.first_audio_s:
                    return name
            elif not stream.healthy(now):
                return name
        return None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            lost = self._lost(time.monotonic())
            if lost is not None:
                await self._reconnect(lost)

    async def _reconnect(self, what: str) -> None:
        c = self.config
        device = self.mic_device if what == "microphone" else self.out_device
        log.warning("the %s %s stopped (device gone?); reconnecting for up to %.0f s", what, device.label(),
                    c.reconnect_s)
        self.state = "reconnecting"
        self.reconnects += 1
        deadline = time.monotonic() + c.reconnect_s
        last: Exception | None = None
        while time.monotonic() < deadline and not self._stop.is_set():
            await self._close_streams()
            try:
                await self._in_thread(rescan, 5.0)
                devices = await self._in_thread(list_devices, 5.0)
                if self.mic is not None:
                    self.mic.device = self.mic_device = _same_device(self.mic_device, c.input, "input", devices)
                if self.out_device is not None:
                    self.speaker.device = self.out_device = _same_device(self.out_device, c.output, "output", devices)
                self.pacer.clear()  # their FIFO marks belong to the old stream
                await self._start_streams_again()
                log.info("audio devices reconnected")
                self.state = "running"
                return
            except (AudioDeviceError, OSError) as exc:
                last = exc
            except Exception as exc:  # noqa: BLE001 - PortAudioError and friends
                last = exc
            await asyncio.sleep(1.0)
        try:
            now_devices = format_devices(list_devices())
        except AudioDeviceError as exc:
            now_devices = f"  ({exc})"
        first = str(last).splitlines()[0] if last else "stopped"
        self.request_stop(3, f"the {what} {device.label()} disappeared and did not come back within "
                             f"{c.reconnect_s:.0f} s ({first}).\nAudio devices now:\n{now_devices}")

    async def _start_streams_again(self) -> None:
        if self.mic is not None:
            await self._in_thread(self.mic.start, 10.0)
        if self.out_device is not None:
            await self._in_thread(self.speaker.start, 10.0)


def _same_device(old: Device, spec: str | None, kind: str, devices: list[Device]) -> Device:
    """After a rescan: the device with the old one's name, else whatever ``spec`` picks now."""
    for d in devices:
        if d.name == old.name and d.channels(kind) > 0:
            return d
    return resolve(spec, kind, devices)
