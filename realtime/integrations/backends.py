"""The avatar behind an agent-framework adapter: in this process, or a lipstream server elsewhere.

Both take speech (int16 PCM, any rate), ``flush`` (end of a segment) and ``clear`` (interrupt),
and put what comes out on ``output``, an asyncio queue, in the order it is to be played:
for each video frame, the :class:`AvatarAudio` that goes with it first, then the
:class:`AvatarVideo`; :class:`AvatarEvent` items carry the speech stream's events
(``speech_started``, ``speech_ended``, ``interrupted``, ...; ``realtime/stream_api.py``).

- :class:`InProcessAvatar`: the engine runs here.  A presenter :class:`~realtime.session.Session`
  on a :class:`~realtime.frame_loop.FrameLoop` of its own, on the wall clock — the server's own
  frame step, 25 frames a second, paced by real time; its sinks hand frames to ``output``
  instead of WebRTC tracks.  Speech goes in through a :class:`~realtime.stream_api.SpeechStream`
  (the WebSocket's logic without the socket); the audio that comes out with each frame is the
  sender's own audio at its own rate (``SpeechStream(on_audio=...)``), not the 16 kHz timeline.
- :class:`~realtime.integrations.remote.RemoteAvatar` (``remote.py``): a lipstream server.  A
  presenter session over WebRTC (aiortc, receive only) for the video and the returned speech, and
  the streaming WebSocket for speech in.

Framework-free: the Pipecat and LiveKit adapters (``pipecat.py``, ``livekit.py``) sit on these.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from engines.avatar import Avatar
    from engines.base import Engine

log = logging.getLogger(__name__)

__all__ = ["AvatarBackend", "AvatarVideo", "AvatarAudio", "AvatarEvent", "InProcessAvatar"]


@dataclass
class AvatarVideo:
    rgb: np.ndarray  # (H, W, 3) uint8
    frame: int | None = None  # the session's frame number (in-process)
    opening: float | None = None  # the rendered mouth opening, 0..1 (in-process)


@dataclass
class AvatarAudio:
    pcm: np.ndarray  # int16 mono
    rate: int
    speech: bool  # False: silence between segments (adapters may drop it)


@dataclass
class AvatarEvent:
    event: dict


Output = AvatarVideo | AvatarAudio | AvatarEvent


class AvatarBackend(Protocol):
    rate: int  # the rate of the audio that comes out
    output: asyncio.Queue

    async def start(self) -> None: ...
    async def push(self, pcm: np.ndarray, rate: int) -> None: ...
    async def flush(self) -> None: ...
    async def clear(self) -> None: ...
    async def stop(self) -> None: ...


def discard_media(queue: asyncio.Queue) -> None:
    """Drop the frames and audio waiting in ``queue`` (made before an interrupt); keep events."""
    keep = []
    while not queue.empty():
        item = queue.get_nowait()
        if isinstance(item, AvatarEvent):
            keep.append(item)
    for item in keep:
        queue.put_nowait(item)


class Pacing:
    """Back-pressure from the speech stream's events: ``push`` waits while the buffer is full."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.ready.set()

    def on_event(self, event: dict) -> None:
        if event["type"] == "backpressure":
            self.ready.clear()
        elif event["type"] in ("resume", "interrupted", "closed"):
            self.ready.set()


class InProcessAvatar:
    """The engine in this process: a presenter session on its own 25 fps frame loop.

    ``engine``: an :class:`~engines.base.Engine`, or a name for ``engines.factory.create_engine``
    (default ``auto``); ``avatar``: an :class:`~engines.avatar.Avatar` or a prepared avatar's name
    (default: the built-in one); ``rate``: the rate of the audio handed back with the frames.
    """

    def __init__(self, *, engine: Engine | str | None = None, avatar: Avatar | str | None = None,
                 rate: int = 24000, idle_motion: bool = True, max_buffer_s: float = 3.0) -> None:
        self.rate = rate
        self.output: asyncio.Queue = asyncio.Queue()
        self._engine_arg = engine
        self._avatar_arg = avatar
        self._idle_motion = idle_motion
        self._max_buffer_s = max_buffer_s
        self._pacing = Pacing()
        self.engine: Engine | None = None
        self.avatar: Avatar | None = None
        self.loop = None  # FrameLoop
        self.session = None  # Session
        self.stream = None  # SpeechStream
        self._audio: AvatarAudio | None = None
        self._in_frame = False
        self._frame_events: list[dict] = []  # events of the frame being delivered: they follow it

    async def start(self) -> None:
        from engines.factory import create_engine
        from realtime.avatars import load_for_model
        from realtime.clock import WallClock
        from realtime.frame_loop import FrameLoop
        from realtime.frame_step import Interrupt
        from realtime.session import Session
        from realtime.sessions import union_box
        from realtime.speech_stream import SpeechStream

        aio = asyncio.get_running_loop()
        engine = self._engine_arg
        if engine is None or isinstance(engine, str):
            engine = await aio.run_in_executor(None, create_engine, engine or "auto")
        avatar = self._avatar_arg
        if avatar is None or isinstance(avatar, str):
            avatar = await aio.run_in_executor(None, load_for_model, avatar or "default", None,
                                               engine.manifest.features_version)
        self.engine, self.avatar = engine, avatar
        clock = WallClock()
        self.loop = FrameLoop(engine, clock, None, idle_motion=self._idle_motion)
        rows = self.loop.add_avatar(avatar)
        await aio.run_in_executor(None, engine.warmup, engine.warmup_batches(1))
        owner = self

        class _Session(Session):
            def on_frame(self, frame, planes, params, timing=None):  # noqa: ANN001, ANN202
                owner._audio, owner._in_frame = None, True
                try:
                    super().on_frame(frame, planes, params, timing)  # speech first (-> _on_audio), then video
                finally:
                    owner._in_frame = False
                owner._on_frame(frame, planes, self.stats.openings[-1])

        sid = f"inprocess-{uuid.uuid4().hex[:8]}"
        sink = _NullSinks()
        self.session = _Session(sid, avatar.name, rows, clock, sink, sink, engine.convention,
                                mouth_box=union_box(avatar.mouth_boxes))
        # Frames skipped under load (a late inference) still hand their speech over: a pipeline
        # paces the audio itself, so a skipped frame must not cost its sound (the server caps it at 2).
        self.session.max_catchup = 25
        self.loop.add(self.session)
        self.stream = SpeechStream(self.session, interrupt=lambda: self.loop.post(Interrupt(sid)),
                                   on_event=self._on_event, rate=self.rate, max_buffer_s=self._max_buffer_s,
                                   on_audio=self._on_audio)
        self.loop.start()

    # -- what the frame step hands out ---------------------------------------------------------
    def _on_audio(self, pcm: np.ndarray, speech: bool) -> None:
        self._audio = AvatarAudio(pcm, self.rate, speech)

    def _on_frame(self, frame: int, planes: np.ndarray, opening: float) -> None:
        import cv2

        audio, self._audio = self._audio, None

        events, self._frame_events = self._frame_events, []
        if not self.stream.clear_pending:  # else: rendered before the interrupt was applied, its speech void
            if audio is not None:
                self.output.put_nowait(audio)
            self.output.put_nowait(AvatarVideo(cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420), frame, opening))
        for event in events:  # speech_started / speech_ended come after the frame they describe
            self.output.put_nowait(AvatarEvent(event))

    def _on_event(self, event: dict) -> None:
        self._pacing.on_event(event)
        if self._in_frame:
            self._frame_events.append(event)
        else:
            self.output.put_nowait(AvatarEvent(event))

    # -- input ----------------------------------------------------------------------------------
    async def push(self, pcm: np.ndarray, rate: int) -> None:
        """Queue speech; waits while the buffer is full (``backpressure`` until ``resume``)."""
        await self._pacing.ready.wait()
        self.stream.push(pcm, rate)

    async def flush(self) -> None:
        self.stream.flush()

    async def clear(self) -> None:
        self._pacing.ready.set()
        self.stream.clear()
        discard_media(self.output)

    async def stop(self) -> None:
        if self.loop is None:
            return
        from realtime.frame_step import EndSession

        self.stream.close()
        self.loop.post(EndSession(self.session.id))
        await self.session.close()
        await self.loop.stop()
        self.loop = None


class _NullSinks:
    """The in-process session's video and audio sinks: the frames leave through ``on_frame``."""

    frames_sent = 0
    frames_repeated = 0
    backlog_s = 0.0

    def deliver(self, *_args) -> None:  # noqa: ANN002
        pass

    def clear(self) -> None:
        pass

    def stop(self) -> None:
        pass
