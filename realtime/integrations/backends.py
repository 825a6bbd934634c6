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
- :class:`RemoteAvatar`: a lipstream server.  A presenter session over WebRTC (aiortc, receive
  only) for the video and the returned speech, and the streaming WebSocket for speech in.

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

__all__ = ["AvatarBackend", "AvatarVideo", "AvatarAudio", "AvatarEvent", "InProcessAvatar", "RemoteAvatar"]


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


def _discard_media(queue: asyncio.Queue) -> None:
    """Drop the frames and audio waiting in ``queue`` (made before an interrupt); keep events."""
    keep = []
    while not queue.empty():
        item = queue.get_nowait()
        if isinstance(item, AvatarEvent):
            keep.append(item)
    for item in keep:
        queue.put_nowait(item)


class _Pacing:
    """Back-pressure from the speech stream's events: ``push`` waits while the buffer is full."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.ready.set()

    def on_event(self, event: dict) -> None:
        if event["type"] == "backpressure":
            self.ready.clear()
        elif event["type"] in ("resume", "interrupted", "closed"):
            self.ready.set()


class _SendWindow:
    """The sender's own estimate of the server's unplayed speech (a bucket draining at real time),
    so that a TTS which delivers a segment faster than real time never overfills the bounded
    buffer.  The server's ``backpressure`` event alone comes one WebSocket round trip late: by
    then a burst has gone out whole and the server dropped what did not fit (a 4.6 s segment sent
    at once lost its last 1.6 s to a 3 s buffer).  ``MARGIN_S`` covers the playout's start delay."""

    MARGIN_S = 0.5

    def __init__(self, max_buffer_s: float) -> None:
        self.max_buffer_s = max_buffer_s
        self.queued_s = 0.0
        self._at = 0.0

    def _drain(self, now: float) -> None:
        self.queued_s = max(0.0, self.queued_s - (now - self._at))
        self._at = now

    def wait_s(self, seconds: float, now: float) -> float:
        """How long to wait before ``seconds`` more speech fits."""
        self._drain(now)
        room = max(self.max_buffer_s - self.MARGIN_S, seconds)  # a chunk bigger than the window still goes
        return max(0.0, self.queued_s + seconds - room)

    def sent(self, seconds: float, now: float) -> None:
        self._drain(now)
        self.queued_s += seconds

    def reset(self) -> None:
        self.queued_s = 0.0


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
        self._pacing = _Pacing()
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
        _discard_media(self.output)

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


class RemoteAvatar:
    """A lipstream server: a receive-only WebRTC presenter session plus the speech WebSocket.

    ``base_url``: e.g. ``http://127.0.0.1:8080``; ``rate``: the WebSocket's PCM rate (16000, 24000
    or 48000; other input rates are resampled to it here); ``token``: the server's ``--token``.  The audio that comes out is the
    server's returned speech track (48 kHz), ``speech`` True between ``speech_started`` and a
    short tail after ``speech_ended`` / ``interrupted``.
    """

    TAIL_S = 0.15  # returned audio still counted as speech after the segment's end event

    def __init__(self, base_url: str, *, rate: int = 24000, avatar: str | None = None,
                 token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.rate = rate
        self.avatar = avatar
        self.output: asyncio.Queue = asyncio.Queue()
        self.session_id: str | None = None
        self._pacing = _Pacing()
        self._window = _SendWindow(3.0)  # the server's default; its 'session' event says the real one
        self._http = None
        self._pc = None
        self._ws = None
        self._tasks: list[asyncio.Task] = []
        self._resampler = None
        self._speaking = False
        self._quiet_from = 0.0  # clock time the speech flag drops, after an end event

    async def start(self) -> None:
        import aiohttp
        from aiortc import RTCPeerConnection, RTCSessionDescription

        from realtime.audio_io import Resampler
        from realtime.ice import peer_configuration

        self._resampler = Resampler(out_rate=self.rate)
        self._http = aiohttp.ClientSession(headers=self._headers)  # --token servers: on every request
        pc = self._pc = RTCPeerConnection(configuration=peer_configuration())
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")

        @pc.on("track")
        def on_track(track) -> None:  # noqa: ANN001
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

        await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers its candidates here
        body = {"sdp": pc.localDescription.sdp, "type": "offer"}
        if self.avatar:
            body["avatar"] = self.avatar
        async with self._http.post(f"{self.base_url}/offer", json=body) as r:
            answer = await r.json()
            if r.status != 200:
                await self.stop()
                raise RuntimeError(f"lipstream server refused the offer: {r.status} {answer.get('error')}")
        self.session_id = answer["session_id"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        self._ws = await self._http.ws_connect(
            f"{self.base_url}/api/sessions/{self.session_id}/stream?rate={self.rate}")
        self._tasks.append(asyncio.ensure_future(self._read_events()))

    async def _consume(self, track) -> None:  # noqa: ANN001
        from aiortc.mediastreams import MediaStreamError

        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.output.put_nowait(AvatarVideo(frame.to_ndarray(format="rgb24")))
                else:
                    pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0].astype(np.int16)
                    speech = self._speaking or loop.time() < self._quiet_from
                    self.output.put_nowait(AvatarAudio(pcm, frame.sample_rate, speech))
        except MediaStreamError:
            pass

    async def _read_events(self) -> None:
        import aiohttp

        loop = asyncio.get_running_loop()
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            event = msg.json()
            kind = event.get("type")
            if kind == "session":
                self._window.max_buffer_s = float(event.get("max_buffer_s", self._window.max_buffer_s))
            elif kind == "speech_started":
                self._speaking = True
            elif kind in ("speech_ended", "interrupted", "closed"):
                self._speaking = False
                self._quiet_from = loop.time() + (self.TAIL_S if kind == "speech_ended" else 0.0)
            self._pacing.on_event(event)
            self.output.put_nowait(AvatarEvent(event))

    async def push(self, pcm: np.ndarray, rate: int) -> None:
        """Send speech; waits while the server's buffer would overflow (our own estimate, and the
        server's ``backpressure`` until ``resume``)."""
        if rate != self.rate:
            pcm = (np.clip(self._resampler.push(pcm, rate), -1, 1) * 32767).astype(np.int16)
        if not pcm.size:
            return
        loop = asyncio.get_running_loop()
        seconds = pcm.size / self.rate
        while (wait := self._window.wait_s(seconds, loop.time())) > 0:
            await asyncio.sleep(wait)
        await self._pacing.ready.wait()
        self._window.sent(seconds, loop.time())
        await self._ws.send_bytes(np.asarray(pcm, "<i2").tobytes())

    async def flush(self) -> None:
        if self._resampler is not None:
            tail = self._resampler.flush()
            if tail.size:
                await self._ws.send_bytes((np.clip(tail, -1, 1) * 32767).astype("<i2").tobytes())
        await self._ws.send_str('{"type": "flush"}')

    async def clear(self) -> None:
        self._pacing.ready.set()
        self._window.reset()
        self._speaking, self._quiet_from = False, 0.0
        _discard_media(self.output)
        await self._ws.send_str('{"type": "clear"}')

    async def stop(self) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._http is not None and self.session_id is not None:
            try:
                async with self._http.delete(f"{self.base_url}/api/sessions/{self.session_id}"):
                    pass
            except Exception as exc:  # the server may be gone already
                log.debug("closing the remote session: %r", exc)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._pc is not None:
            await self._pc.close()
            self._pc = None
        if self._http is not None:
            await self._http.close()
            self._http = None
