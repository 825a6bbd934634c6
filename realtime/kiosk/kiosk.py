"""The presenter kiosk: a local microphone and speaker, the avatar full screen on this machine.

The same front end and frame step as the server: one :class:`~realtime.session.Session`
(timeline, mel, VAD) and the 25 fps :class:`~realtime.frame_loop.FrameLoop` on the wall clock
(inference on its worker thread).  Only the ends differ: the session's source is the local mic
(or queued speech), its audio sink is the :class:`~realtime.kiosk.audio_io.Speaker` and its video
sink the :class:`~realtime.kiosk.pacer.ScreenSink`, which puts frame ``k`` on screen when the
first sample of frame ``k``'s speech reaches the speaker's DAC.

Threads: the **main thread** supervises (status file, signals, a hung window); an **event-loop
thread** runs the frame loop, the session, the mic's resampling, the playlist, barge-in, the
device watchdog and the optional HTTP API; the frame loop's **worker thread** runs the engine;
PortAudio's **callback threads** only copy audio; a **screen thread** hands each due frame to the
window process (``realtime.kiosk.display``), whose reader thread reports when it was shown.

Modes:

- **mic** (no ``--play``/``--http``): the microphone drives the mouth and comes out of the speaker
  with the lips (a headset or ``--output none`` avoids feedback from speaker to mic);
- **presenter** (``--play FILE_OR_DIR``, ``--http PORT``): queued speech drives it; with
  ``--barge-in`` the mic is listened to (webrtcvad) and speech on it interrupts playback through
  the frame step's :class:`~realtime.frame_step.Interrupt` event; the playlist goes on with the
  next file once the mic has been quiet for a second.

A device that stops (PortAudio ends the stream, or its callbacks stop) is reopened by name for
``reconnect_s``; if it does not come back the kiosk exits (code 3) with a message listing the
devices it can see.  Exit codes: 0 quit (Esc, q, window closed, playlist done with
``exit_when_done``), 1 the window failed (its X server went away), 2 bad configuration (no
device, no display, no such file), 3 device lost, 130 Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from realtime.kiosk.barge_in import BargeIn
from realtime.kiosk.config import AUDIO_SUFFIXES, KioskConfig, KioskError, config_from_args, playlist_files
from realtime.kiosk.devices import AudioDeviceError, Device, list_devices, resolve
from realtime.kiosk.http_api import start_http
from realtime.kiosk.supervision import DeviceSupervision
from realtime.kiosk.status import kiosk_status, write_status
from realtime.sessions import union_box

log = logging.getLogger(__name__)

__all__ = ["KioskConfig", "Kiosk", "KioskError", "BargeIn", "playlist_files", "config_from_args",
           "AUDIO_SUFFIXES"]

SESSION_ID = "kiosk"
SPEECH_TAIL_S = 0.4  # queued speech is "being spoken" until this long after its last sample is due


class Kiosk(DeviceSupervision):
    """One kiosk: prepare (devices, display, engine, avatar), then :meth:`run` until it ends."""

    def __init__(self, config: KioskConfig, *, engine=None, avatar=None) -> None:  # noqa: ANN001
        self.config = config
        self.engine = engine
        self.avatar = avatar
        self.mic_device: Device | None = None
        self.out_device: Device | None = None
        self.files: list[Path] = []
        self.exit_code = 0
        self.message: str | None = None
        self.state = "starting"
        self.barge_ins = 0
        self.last_barge_in_at: float | None = None  # time.monotonic() of the last one
        self.reconnects = 0
        self.playlist = {"index": -1, "file": None, "done": not config.play, "paused": False}
        self.session = None
        self.loop = None  # FrameLoop
        self.mic = None
        self.speaker = None
        self.pacer = None
        self.window: dict = {}
        self._aio: asyncio.AbstractEventLoop | None = None
        self._astop: asyncio.Event | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._speech_until = 0.0
        self._http_runner = None
        self._stuck = False  # a PortAudio call never returned: exit without waiting for it
        self._barge = None
        self.screen = None
        self._inflight: dict[int, tuple] = {}
        self._inflight_lock = threading.Lock()
        self._show_delays: deque[float] = deque(maxlen=50)

    # -- preparation (main thread) ----------------------------------------------------------------
    def prepare(self) -> None:
        """Everything that can fail with a clear message before anything starts."""
        c = self.config
        if c.wants_mic or c.wants_speaker:
            devices = list_devices()
            if c.wants_mic:
                self.mic_device = resolve(c.input, "input", devices)
            if c.wants_speaker:
                self.out_device = resolve(c.output, "output", devices)
        if c.barge_in and self.mic_device is None:
            raise KioskError("--barge-in listens to the microphone: it cannot be used with --input none")
        if c.barge_in and not c.presenter:
            raise KioskError("--barge-in interrupts played speech: use it with --play or --http")
        self.files = playlist_files(c.play)
        from realtime.kiosk.display import check_display

        check_display()
        if self.engine is None:
            from engines.factory import create_engine
            from engines.manifest import DEFAULT_MODEL_DIR

            self.engine = create_engine(c.engine, c.model_dir or DEFAULT_MODEL_DIR)
        if self.avatar is None:
            from realtime.avatars import load_for_model

            self.avatar = load_for_model(c.avatar, c.avatars_dir, self.engine.manifest.features_version,
                                         self.engine.model_dir)
        self.engine.warmup(self.engine.warmup_batches(1))

    # -- running ----------------------------------------------------------------------------------
    def run(self) -> int:
        """Main thread: the window, the event-loop thread and the screen thread, until the kiosk
        ends; returns the exit code."""
        from realtime.kiosk.display import DisplayError, ScreenProcess
        from realtime.kiosk.pacer import FramePacer

        self.speaker = self._make_speaker()
        self.pacer = FramePacer(self.speaker)
        h, w = self.avatar.frames.shape[1:3]
        self.screen = ScreenProcess(w, h, title=self.config.title, fullscreen=self.config.fullscreen,
                                    scale=self.config.scale, on_shown=self._on_shown, on_event=self._on_window_event)
        loop_thread = threading.Thread(target=self._thread_main, name="lipstream-kiosk-loop", daemon=True)
        screen_thread = threading.Thread(target=self._screen_main, name="lipstream-kiosk-screen", daemon=True)
        old_term = None
        if threading.current_thread() is threading.main_thread():
            old_term = signal.signal(signal.SIGTERM, lambda *_: self.request_stop(0))
        try:
            try:
                self._window_info(self.screen.start())
            except DisplayError as exc:
                self.request_stop(2, str(exc))
                return self.exit_code
            loop_thread.start()
            screen_thread.start()
            while not self._stop.wait(0.25):
                now = time.monotonic()
                if self.screen.hung(now):  # its end is reported by the screen's reader ("closed"/"died")
                    self.request_stop(1, "the display window stopped responding")
                self._window_info(self.screen.info)  # the window manager may move it; eyes known later
                self._write_status()
        except KeyboardInterrupt:
            self.request_stop(130, "interrupted")
        finally:
            self._stop.set()
            if self._aio is not None and self._astop is not None:
                try:
                    self._aio.call_soon_threadsafe(self._astop.set)
                except RuntimeError:
                    pass
            if loop_thread.is_alive():
                loop_thread.join(15.0)
                if loop_thread.is_alive():
                    log.error("the kiosk's event loop did not stop in 15 s")
                    self._stuck = True
            self.screen.close()
            if old_term is not None:
                signal.signal(signal.SIGTERM, old_term)
            self.state = "stopped"
            self._write_status()
        return self.exit_code

    def request_stop(self, code: int = 0, message: str | None = None) -> None:
        """Any thread: end the kiosk with ``code`` (the first non-zero code wins)."""
        if code and not self.exit_code:
            self.exit_code = code
        if message and not self.message:
            self.message = message
        self._stop.set()
        if self._aio is not None and self._astop is not None:
            try:
                self._aio.call_soon_threadsafe(self._astop.set)
            except RuntimeError:
                pass

    def _screen_main(self) -> None:
        """Screen thread: each due frame to the window process, a little early by the time the
        window takes to show one (measured), so it is on screen when its sound plays."""
        pacer, screen = self.pacer, self.screen
        fid = 0
        while not self._stop.is_set():
            item, target, wait = pacer.due(time.monotonic() + self._show_lead())
            if item is None:
                self._stop.wait(min(wait, 0.004))
                continue
            fid += 1
            with self._inflight_lock:
                self._inflight[fid] = (item, target, time.monotonic())
                for old in [k for k in self._inflight if k < fid - 50]:
                    del self._inflight[old]
            screen.show(fid, item.planes)

    def _show_lead(self) -> float:
        """The median time from handing a frame to the window process to its being shown, <= 20 ms."""
        if not self._show_delays:
            return 0.0
        return min(0.02, max(0.0, float(np.median(self._show_delays))))

    def _on_shown(self, fid: int, t: float) -> None:
        with self._inflight_lock:
            entry = self._inflight.pop(fid, None)
        if entry is None:
            return
        item, target, sent = entry
        self._show_delays.append(t - sent)
        self.pacer.shown(item, target, t)

    def _on_window_event(self, name: str) -> None:
        if name == "died":
            code = self.screen.exit_code if self.screen is not None else None
            self.request_stop(1, f"the display window failed (window process exit status {code}; "
                                 f"did the X server on {os.environ.get('DISPLAY')!r} go away?)")
            return
        log.info("window %s: stopping", "closed" if name == "closed" else "quit key")
        self.request_stop(0)

    def _window_info(self, info: dict) -> None:
        from realtime.kiosk.display import map_box

        box = union_box(self.avatar.mouth_boxes)
        frame_wh = tuple(self.avatar.frames.shape[2:0:-1])
        origin, rect = tuple(info.get("origin", (0, 0))), tuple(info.get("rect", (0, 0, *frame_wh)))
        self.window = {"size": info.get("size"), "rect": list(rect), "origin": list(origin),
                       "fullscreen": info.get("fullscreen"), "mouth_box": list(box),
                       "mouth_box_screen": list(map_box(box, origin, rect, frame_wh))}
        idle = self._idle_motion()
        if idle is not None and idle.face is not None:
            self.window["eye_boxes_screen"] = [list(map_box(b, origin, rect, frame_wh)) for b in idle.face.eye_boxes()]

    def _idle_motion(self):  # noqa: ANN202
        if self.loop is None:
            return None
        renderer = self.loop.step.renderers.get(self.avatar.name)
        return None if renderer is None else renderer.idle

    # -- the event-loop thread --------------------------------------------------------------------
    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # noqa: BLE001 - any failure ends the kiosk with its message
            log.exception("kiosk failed")
            self.request_stop(2 if isinstance(exc, (AudioDeviceError, KioskError)) else 1, str(exc))
        finally:
            self._stop.set()

    async def _main(self) -> None:
        from realtime.clock import WallClock
        from realtime.frame_loop import FrameLoop
        from realtime.kiosk.pacer import ScreenSink
        from realtime.session import Session

        self._aio = asyncio.get_running_loop()
        self._astop = asyncio.Event()
        if self._stop.is_set():
            return
        c, engine, avatar = self.config, self.engine, self.avatar
        clock = WallClock()
        self.loop = FrameLoop(engine, clock, None, max_lag=c.max_lag_frames, idle_motion=c.idle_motion)
        rows = self.loop.add_avatar(avatar)
        renderer = self.loop.step.renderers[avatar.name]
        if renderer.idle is not None:  # a still image: blinks and head motion (its face's geometry)
            from realtime.idle_motion import IdleMotion

            renderer.idle = await self._aio.run_in_executor(None, IdleMotion.for_avatar, avatar)
            log.info("idle motion: blinks and head motion (eyes from the %s)", renderer.idle.face.source)
        video = ScreenSink(self.pacer, self.speaker)
        self.session = Session(SESSION_ID, avatar.name, rows, clock, video, self.speaker, engine.convention,
                               mouth_box=union_box(avatar.mouth_boxes))
        tasks = []
        try:
            await self._start_streams()
            self.loop.add(self.session)
            self.loop.start()
            if c.http_port is not None:
                await self._start_http()
            if self.files:
                tasks.append(asyncio.ensure_future(self._play()))
            tasks.append(asyncio.ensure_future(self._watch()))
            self.state = "running"
            self._ready.set()
            log.info("kiosk running: %s mode, avatar %r, engine %s", "presenter" if c.presenter else "mic",
                     avatar.name, engine.name)
            await self._astop.wait()
        finally:
            self.state = "stopping"
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._http_runner is not None:
                await self._http_runner.cleanup()
            await self.loop.stop()
            await self._close_streams()

    def _make_speaker(self):  # noqa: ANN202
        from realtime.kiosk.audio_io import NullSpeaker, Speaker

        if self.out_device is None:
            return NullSpeaker()
        return Speaker(self.out_device, stall_s=self.config.stall_s, latency=self.config.output_latency_s,
                       prime_s=self.config.speaker_cushion_s,
                       samples_per_frame=self.engine.convention.samples_per_frame,
                       in_rate=self.engine.convention.sample_rate)

    def _on_mic(self, samples16k: np.ndarray) -> None:
        """Event loop: mic audio, 16 kHz mono."""
        now = time.monotonic()
        if self._barge is None:
            self.session.on_mic_audio(samples16k)
            return
        if self._barge.push(samples16k, now) and self.speaking(now):
            self.barge_ins += 1
            self.last_barge_in_at = now
            log.info("barge-in: speech on the microphone interrupts playback")
            self.interrupt()
            if self.files:
                self.playlist["paused"] = True

    # -- speech -------------------------------------------------------------------------------------
    def speaking(self, now: float | None = None) -> bool:
        """Queued speech is still being spoken (or has just been, within the pipeline's delay)."""
        now = time.monotonic() if now is None else now
        return now < self._speech_until

    def speak(self, wav: np.ndarray) -> float:
        """Queue presenter speech (event loop); the seconds queued in all."""
        queued = self.session.speak(wav)
        # spoken by when all that is queued has played, plus the pipeline (lookahead, tick, speaker)
        self._speech_until = time.monotonic() + queued + SPEECH_TAIL_S
        return queued

    def interrupt(self) -> None:
        """Event loop: drop queued and unsent speech (the frame step applies it at its next step)."""
        from realtime.frame_step import Interrupt

        self.loop.post(Interrupt(self.session.id))
        self.pacer.clear()
        self._speech_until = time.monotonic()

    async def _play(self) -> None:
        from realtime.audio_io import load_audio

        c, aio = self.config, asyncio.get_running_loop()
        i = 0
        while True:
            if i >= len(self.files):
                if not c.loop_playlist:
                    break
                i = 0
            path = self.files[i]
            wav = await aio.run_in_executor(None, load_audio, path)
            await self._resume_when_quiet()
            while self.session.source.queued_s > 0.2:  # speech pushed over HTTP goes first
                await asyncio.sleep(0.05)
            self.playlist.update(index=i, file=str(path))
            log.info("playing %s (%.1f s)", path, wav.size / self.engine.convention.sample_rate)
            self.speak(wav)
            # the next file is queued once this one is spoken (or interrupted)
            while self.session.source.queued_s > 0.2 and not self.playlist["paused"]:
                await asyncio.sleep(0.05)
            i += 1
        await self._resume_when_quiet()
        self.playlist["done"] = True
        while self.speaking():
            await asyncio.sleep(0.05)
        if c.exit_when_done and c.http_port is None:
            await asyncio.sleep(0.6)  # the last frames and their sound leave the pipeline
            log.info("playlist done")
            self.request_stop(0)

    async def _resume_when_quiet(self) -> None:
        """After a barge-in: wait until the microphone has been quiet for ``resume_s``."""
        while self.playlist["paused"]:
            if self._barge is None or self._barge.quiet_for(time.monotonic()) >= self.config.resume_s:
                self.playlist["paused"] = False
                log.info("the microphone is quiet again: the playlist goes on")
                return
            await asyncio.sleep(0.05)

    # -- devices ------------------------------------------------------------------------------------
    async def _start_http(self) -> None:
        self._http_runner = await start_http(self)

    def status(self) -> dict:
        return kiosk_status(self)

    def _write_status(self) -> None:
        write_status(self)
