"""The kiosk's microphone and speaker: PortAudio streams (sounddevice) at the device's own rate.

- :class:`MicInput`: PortAudio's callback thread only copies each block and wakes the event
  loop; the event loop resamples to 16 kHz mono (the same :class:`~realtime.audio_io.Resampler`
  every input goes through) and hands the samples on (``Session.on_mic_audio``, or the barge-in
  detector).  No inference, no locks held, nothing slow on the audio thread.
- :class:`Speaker`: the session's **audio sink**.  ``Session.on_frame`` delivers the speech of
  frame ``k`` together with frame ``k``; the speaker queues it (resampled to the device rate) in
  a FIFO that the output callback drains.  Each callback records when the first sample of its
  buffer reaches the DAC (PortAudio's ``outputBufferDacTime``), so :meth:`Speaker.play_time`
  says when any queued sample will be heard: the display shows frame ``k`` at the moment its
  first sample plays (the lips on time with the sound, whatever the output latency is).

  The FIFO keeps a small cushion (``prime_s``): after running dry it waits for that much before
  playing again, so the 40 ms steps of the frame loop never cut the sound.  More queued than the
  cushion plus ``slack_s`` (after the device stalled, or a sound card slower than the system
  clock) is brought back down by not queueing the samples of quiet frames (pauses, under
  -45 dBFS); past ``max_backlog_s`` the oldest audio is dropped, speech or not.

Both streams are watched (:meth:`healthy`): a stream PortAudio stopped, or whose callbacks
stopped coming for ``stall_s``, counts as a lost device (the kiosk reconnects or exits).
Closing runs on a helper thread with a time limit, since PortAudio can block on a device that
vanished.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Callable

import numpy as np

from realtime.audio_io import Resampler
from realtime.kiosk.devices import AudioDeviceError, Device, sounddevice

log = logging.getLogger(__name__)

__all__ = ["MicInput", "Speaker", "NullSpeaker", "close_quietly"]

RATES = (48000, 44100, 32000, 16000)
QUIET_MS = 10 ** (-45 / 10)  # mean square below -45 dBFS: a pause that may be shed to bring the backlog down


CLOSE_S = 6.0  # PortAudio's ALSA thread notices an abort at its next poll timeout: ~2 s on a dead server


def close_quietly(stream, timeout_s: float = CLOSE_S) -> bool:  # noqa: ANN001 - a sounddevice stream
    """Abort and close ``stream`` on a helper thread; False when PortAudio did not return in time."""
    if stream is None:
        return True

    def _close() -> None:
        try:
            stream.abort(ignore_errors=True)
        except Exception:  # noqa: BLE001 - a vanished device may fail any call
            pass
        try:
            stream.close(ignore_errors=True)
        except Exception:  # noqa: BLE001
            pass

    t = threading.Thread(target=_close, name="lipstream-audio-close", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        log.warning("PortAudio did not close an audio stream within %.0f s; leaving it", timeout_s)
        return False
    return True


def _open(factory, device: Device, kind: str, **kwargs):  # noqa: ANN001, ANN202
    """Open a stream at the device's default rate, else the first common rate it takes."""
    sd = sounddevice()
    rates = [int(device.samplerate)] + [r for r in RATES if r != int(device.samplerate)]
    errors = []
    for rate in rates:
        try:
            return factory(device=device.index, samplerate=rate, **kwargs), rate
        except (sd.PortAudioError, ValueError) as exc:
            errors.append(f"{rate} Hz: {exc}")
    raise AudioDeviceError(f"cannot open {kind} device {device.label()}: " + "; ".join(errors))


class _Watched:
    """What both streams share: callback bookkeeping and the health check."""

    stream = None
    rate = 0

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self.callbacks = 0
        self.status_flags = 0  # PortAudio over/underflow reports
        self.last_callback = 0.0
        self.started_at = 0.0
        self.finished = False

    def _finished(self) -> None:
        self.finished = True

    def healthy(self, now: float | None = None) -> bool:
        """Open, active, and its callbacks still coming (allowing ``stall_s`` for the first)."""
        if self.stream is None or self.finished:
            return False
        now = time.monotonic() if now is None else now
        try:
            if not self.stream.active:
                return False
        except Exception:  # noqa: BLE001 - a stream PortAudio lost
            return False
        last = self.last_callback or self.started_at
        return now - last < self.stall_s

    def close(self, timeout_s: float = CLOSE_S) -> bool:
        stream, self.stream = self.stream, None
        return close_quietly(stream, timeout_s)


class MicInput(_Watched):
    """A microphone: blocks from PortAudio's thread, resampled to 16 kHz on the event loop."""

    def __init__(self, device: Device, on_audio: Callable[[np.ndarray], None], loop: asyncio.AbstractEventLoop,
                 *, latency: str | float = "low", stall_s: float = 1.5) -> None:
        super().__init__(stall_s)
        self.device = device
        self.on_audio = on_audio
        self.loop = loop
        self.latency = latency
        self.samples_in = 0
        self.level_dbfs = -120.0  # RMS of the last drained audio
        self._chunks: deque[np.ndarray] = deque()
        self._scheduled = False
        self._resampler = Resampler()

    def start(self) -> None:
        sd = sounddevice()
        stream, rate = _open(sd.InputStream, self.device, "input", channels=1, dtype="float32",
                             latency=self.latency, callback=self._callback, finished_callback=self._finished)
        self._resampler = Resampler()
        self._chunks.clear()
        self.rate = rate
        self.finished = False
        self.started_at = time.monotonic()
        self.last_callback = 0.0
        self.callbacks = 0
        self.stream = stream
        stream.start()
        log.info("microphone: %s at %d Hz (input latency %.0f ms)", self.device.label(), rate,
                 1000 * float(stream.latency))

    def _callback(self, indata: np.ndarray, frames: int, time_info, status) -> None:  # noqa: ANN001
        # PortAudio's thread: copy and wake the event loop, nothing else
        self.last_callback = time.monotonic()
        self.callbacks += 1
        if status:
            self.status_flags += 1
        self._chunks.append(indata[:, 0].copy())
        if not self._scheduled:
            self._scheduled = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: the kiosk is shutting down
                pass

    def _drain(self) -> None:
        self._scheduled = False
        chunks = []
        while self._chunks:
            chunks.append(self._chunks.popleft())
        if not chunks:
            return
        x = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
        self.samples_in += x.size
        ms = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
        self.level_dbfs = 10.0 * np.log10(max(ms, 1e-12))
        out = self._resampler.push(x, self.rate)
        if out.size:
            self.on_audio(out)


class Speaker(_Watched):
    """The session's audio sink: a FIFO drained by the output callback, with DAC timing."""

    def __init__(self, device: Device, *, latency: str | float = "low", prime_s: float = 0.06,
                 max_backlog_s: float = 0.3, stall_s: float = 1.5, samples_per_frame: int = 640,
                 in_rate: int = 16000) -> None:
        super().__init__(stall_s)
        self.device = device
        self.latency = latency
        self.prime_s = prime_s
        self.max_backlog_s = max_backlog_s
        self.spf_in = samples_per_frame
        self.in_rate = in_rate
        self.channels = 1
        self.underruns = 0
        self.samples_dropped = 0
        self.samples_shed = 0  # silence not queued because the backlog ran over the cushion
        self.slack_s = 0.06  # backlog allowed above the cushion before silence is shed
        self.deliveries = 0  # audio deliveries so far: the display pairs a frame with the latest
        self._lock = threading.Lock()
        self._buf = np.zeros(0, np.float32)
        self._written = 0  # samples ever queued (device rate)
        self._consumed = 0  # samples ever taken off the FIFO
        self._priming = True
        self._anchor: tuple[int, float, float] | None = None  # (sample index, its DAC time, callback time)
        self._frame_mark = 0
        self._resampler = Resampler(quality="LQ")

    # -- the sink side (event loop) ---------------------------------------------------------
    def start(self) -> None:
        sd = sounddevice()
        channels = max(1, min(2, self.device.outputs))
        stream, rate = _open(sd.OutputStream, self.device, "output", channels=channels, dtype="float32",
                             latency=self.latency, callback=self._callback, finished_callback=self._finished)
        self.reset(rate, channels)  # deliver() may run meanwhile: all it touches is set before the stream
        self.stream = stream
        stream.start()
        log.info("speaker: %s at %d Hz, %d channel(s) (output latency %.0f ms)", self.device.label(), rate,
                 channels, 1000 * float(stream.latency))

    def reset(self, rate: int, channels: int) -> None:
        """An empty FIFO for a stream at ``rate`` (start() calls it; tests drive it without PortAudio)."""
        with self._lock:
            self.channels, self.rate = channels, rate
            self._buf = np.zeros(int(rate * 2.0), np.float32)  # ring; 2 s > any backlog kept
            self._resampler = Resampler(out_rate=rate, quality="LQ")
            self._written = self._consumed = 0
            self._priming = True
            self._anchor = None
        self.finished = False
        self.started_at = time.monotonic()
        self.last_callback = 0.0
        self.callbacks = 0

    def deliver(self, samples16k: np.ndarray) -> None:
        """Queue one frame's speech (16 kHz mono float32); the newest frame's first sample is marked."""
        if self.stream is None or not self.rate:
            return
        with self._lock:
            up = self._resampler.push(samples16k, self.in_rate)
            excess = self._written - self._consumed + up.size - int((self.prime_s + self.slack_s) * self.rate)
            if excess > 0 and up.size and float(np.mean(np.square(up, dtype=np.float64))) < QUIET_MS:
                # more queued than the cushion needs (the device stalled a while): shed silence, so
                # the sound (and the picture, which waits for it) does not stay late for good
                cut = min(excess, up.size)
                up = up[:up.size - cut]
                self.samples_shed += cut
            n = min(up.size, self._buf.size)
            idx = (self._written + np.arange(n)) % self._buf.size
            self._buf[idx] = up[-n:] if n else up[:0]
            self._written += n
            over = self._written - self._consumed - int(self.max_backlog_s * self.rate)
            if over > 0:  # the device plays slower than we deliver: drop the oldest
                self._consumed += over
                self.samples_dropped += over
            frame_len = int(round(self.spf_in * self.rate / self.in_rate))
            self._frame_mark = max(self._consumed, self._written - frame_len)
            self.deliveries += 1

    def clear(self) -> None:
        """Interrupt: forget queued speech (the next frame's audio starts fresh)."""
        with self._lock:
            self._consumed = self._written
            self._priming = True
        self._resampler.flush()

    def stop(self) -> None:
        self.close()

    @property
    def backlog_s(self) -> float:
        return (self._written - self._consumed) / self.rate if self.rate else 0.0

    @property
    def frame_mark(self) -> int:
        """FIFO index of the first sample of the frame delivered last."""
        return self._frame_mark

    def play_time(self, index: int, now: float | None = None) -> float | None:
        """Monotonic time at which FIFO sample ``index`` reaches the DAC, from the last callback;
        None while unknown (no callback yet, or none for half a second)."""
        anchor = self._anchor
        now = time.monotonic() if now is None else now
        if anchor is None or now - anchor[2] > 0.5:
            return None
        i0, dac, _ = anchor
        t = dac + (index - i0) / self.rate
        if self._priming:  # not playing yet: it starts once the cushion is full
            with self._lock:
                missing = max(0, int(self.prime_s * self.rate) - (self._written - self._consumed))
            t += missing / self.rate
        return t

    # -- PortAudio's thread -----------------------------------------------------------------
    def _callback(self, outdata: np.ndarray, frames: int, time_info, status) -> None:  # noqa: ANN001
        now = time.monotonic()
        self.last_callback = now
        self.callbacks += 1
        if status:
            self.status_flags += 1
        ahead = 0.0
        try:
            if time_info.currentTime > 0 and time_info.outputBufferDacTime > 0:
                ahead = min(2.0, max(0.0, time_info.outputBufferDacTime - time_info.currentTime))
            else:
                ahead = float(self.stream.latency) if self.stream is not None else 0.0
        except Exception:  # noqa: BLE001 - timing is advisory
            pass
        with self._lock:
            backlog = self._written - self._consumed
            if self._priming and backlog >= int(self.prime_s * self.rate):
                self._priming = False
            n = 0 if self._priming else min(frames, backlog)
            self._anchor = (self._consumed, now + ahead, now)
            if n:
                idx = (self._consumed + np.arange(n)) % self._buf.size
                chunk = self._buf[idx]
                self._consumed += n
            if not self._priming and n < frames:
                self.underruns += 1
                self._priming = True
        if n:
            outdata[:n] = chunk[:, None]
        outdata[n:] = 0.0


class NullSpeaker:
    """``--output none``: the audio sink that plays nothing (the display shows frames at once)."""

    backlog_s = 0.0
    deliveries = 0
    frame_mark = 0
    underruns = 0
    samples_dropped = 0
    status_flags = 0
    callbacks = 0
    device = None
    stream = None

    def deliver(self, samples16k: np.ndarray) -> None:
        self.deliveries += 1

    def clear(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self, timeout_s: float = 2.0) -> bool:
        return True

    def healthy(self, now: float | None = None) -> bool:
        return True

    def play_time(self, index: int, now: float | None = None) -> float | None:
        return None
