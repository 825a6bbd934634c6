"""The HTTP + WebRTC front door: an aiohttp app that turns offers into streaming sessions.

Routes (every error is JSON ``{"error": "..."}`` with a 4xx/5xx status, never a stack trace):

- ``POST /offer`` ``{sdp, type: "offer", avatar?}`` -> ``{sdp, type: "answer", session_id}``.
  A mic track in the offer makes a video-call session; no mic makes a presenter session.  The
  server sends one 25 fps video track and one audio track (the speech, delayed to match the lips).
- ``POST /api/sessions/{id}/speak`` (an audio file body) queues speech; ``.../interrupt`` drops
  queued and in-flight speech; ``DELETE /api/sessions/{id}`` ends the session;
  ``GET /api/sessions/{id}`` describes it (frames, recent mouth openings, recent latency);
  ``GET /api/avatars`` lists the prepared avatars (the browser client's choice).
- ``GET /healthz``, ``GET /metrics`` (Prometheus), ``GET /`` the browser client (``client_web/``).

One :class:`~realtime.frame_loop.FrameLoop` (one tick, one worker thread) serves all sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from engines.base import Engine
from engines.manifest import DEFAULT_MODEL_DIR
from export.avatar import Avatar, AvatarError, default_avatars_dir, ensure_default_avatar, load_avatar
from realtime import low_latency
from realtime.audio_io import AudioFormatError, load_audio
from realtime.clock import MediaClock, WallClock
from realtime.frame_loop import FrameLoop
from realtime.ice import is_loopback_host, peer_configuration, use_loopback_candidates
from realtime.mel import SAMPLE_RATE
from realtime.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from realtime.session import Session, SpeechQueueFull
from realtime.tracks import AvatarVideoTrack, DelayedAudioTrack

log = logging.getLogger(__name__)

__all__ = ["ServerConfig", "create_app", "run_server", "CLIENT_DIR"]

CLIENT_DIR = Path(__file__).resolve().parent.parent / "client_web"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_AUDIO_TYPES = ("application/octet-stream",)
_LATENCY_WINDOW = 50  # frames (2 s) behind a session's reported latency
_PLACEHOLDER = """<!doctype html><meta charset="utf-8"><title>lipstream</title>
<h1>lipstream server</h1><p>No browser client installed (client_web/index.html). The API:
<code>POST /offer</code>, <code>POST /api/sessions/{id}/speak</code>, <code>GET /metrics</code>.</p>
"""

# app keys
K_STATE = web.AppKey("lipstream_state", object)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    avatar: str = "default"
    avatars_dir: Path | None = None
    engine: str = "auto"
    model_dir: Path = DEFAULT_MODEL_DIR
    max_sessions: int = 8
    codec: str = "vp8"  # vp8 | h264
    max_offer_bytes: int = 64 * 1024
    max_speech_bytes: int = 16 * 1024 * 1024
    max_speech_s: float = 300.0
    connect_timeout_s: float = 30.0
    idle_motion: bool = True
    max_lag_frames: int = 2  # 2: ~no repeated frames under mic jitter; 1: ~10 ms less latency, 7-16 % repeats
    # "batched": one 25 fps tick, one batched engine call for all sessions (FrameLoop); "naive": a
    # timer and a batch-1 engine call per session (NaiveFrameLoop), only for benchmark comparison
    scheduler: str = "batched"
    client_dir: Path = CLIENT_DIR
    stun: tuple[str, ...] = ()  # STUN URLs for clients beyond this machine; none by default


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class ApiError(Exception):
    """An error a client caused: becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@web.middleware
async def _json_errors(request: web.Request, handler):  # noqa: ANN001, ANN202 - aiohttp middleware
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.message, exc.headers)
    except web.HTTPException as exc:  # aiohttp's own: 405, 413 from client_max_size, ...
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason.lower())
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _error(500, "internal server error")


def _fail(status: int, message: str, **headers: str) -> ApiError:
    return ApiError(status, message, headers or None)


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise _fail(413, f"request body too large ({request.content_length} bytes; the limit is {limit})")
    # StreamReader.read(n) returns what has arrived so far, not n bytes: a body sent in several
    # packets (a browser's upload) must be read until EOF.
    data = bytearray()
    while len(data) <= limit:
        chunk = await request.content.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise _fail(413, f"request body too large (over {limit} bytes)")
    return bytes(data)


class _State:
    """Everything the handlers share: engine, frame loop, avatars, sessions, metrics."""

    def __init__(self, config: ServerConfig, engine: Engine | None, clock: MediaClock) -> None:
        if config.scheduler not in ("batched", "naive"):
            raise ValueError(f"unknown scheduler {config.scheduler!r} (batched or naive)")
        self.config = config
        self.engine = engine
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.latencies: dict[str, deque[float]] = {}  # per session: recent audio-to-frame seconds
        # every session's audio-to-frame seconds, bounded: what benchmarks read for exact percentiles
        self.latency_samples: deque[float] = deque(maxlen=100_000)
        # the same, split into stages (FrameMeta.stages, plus jitter buffer and encode per packet/frame)
        self.stage_samples: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=100_000))
        self.avatars: dict[str, tuple[Avatar, object]] = {}
        self.pending = 0  # offers being negotiated: count against max_sessions
        self.metrics: ServerMetrics | None = None
        self.loop: FrameLoop | None = None
        self._avatar_lock = asyncio.Lock()

    async def startup(self) -> None:
        low_latency.install()
        aio = asyncio.get_running_loop()
        if self.engine is None:
            from engines.factory import create_engine

            self.engine = await aio.run_in_executor(None, create_engine, self.config.engine, self.config.model_dir)
        self.metrics = ServerMetrics(self.engine.name, self.engine.manifest.name,
                                     getattr(self.engine, "precision", "fp32"))
        low_latency.ENCODE_OBSERVERS.append(self._observe_encode)
        low_latency.JITTER_OBSERVERS.append(self._observe_jitter)
        if self.config.scheduler == "naive":
            from realtime.naive_loop import NaiveFrameLoop

            self.loop = NaiveFrameLoop(self.engine, self.clock, self.metrics, max_lag=self.config.max_lag_frames)
        else:
            self.loop = FrameLoop(self.engine, self.clock, self.metrics, max_lag=self.config.max_lag_frames)
        await self.avatar(self.config.avatar)
        await aio.run_in_executor(None, self.engine.warmup, self.engine.warmup_batches(self.config.max_sessions))
        self.loop.start()
        log.info("serving avatar %r with engine %s", self.config.avatar, self.engine.name)

    async def shutdown(self) -> None:
        await asyncio.gather(*(self.close_session(s) for s in list(self.sessions.values())),
                             return_exceptions=True)
        if self.loop is not None:
            await self.loop.stop()
        for observers, fn in ((low_latency.ENCODE_OBSERVERS, self._observe_encode),
                              (low_latency.JITTER_OBSERVERS, self._observe_jitter)):
            if fn in observers:
                observers.remove(fn)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_samples[stage].append(seconds)
        if self.metrics is not None:
            self.metrics.stage.labels(stage).observe(seconds)

    def _observe_encode(self, seconds: float) -> None:  # encoder thread: deque append and prometheus are thread-safe
        self.observe_stage("encode", seconds)
        if self.metrics is not None:
            self.metrics.encode.observe(seconds)

    def _observe_jitter(self, seconds: float) -> None:
        self.observe_stage("jitter_buffer", seconds)

    async def avatar(self, name: str) -> tuple[Avatar, object]:
        """Load (once) and register an avatar; AvatarError if there is none by that name."""
        if name in self.avatars:
            return self.avatars[name]
        if not _NAME.match(name):
            raise AvatarError(f"invalid avatar name {name!r}")
        async with self._avatar_lock:
            if name not in self.avatars:
                aio = asyncio.get_running_loop()
                directory = self.config.avatars_dir
                if name == "default":
                    avatar = await aio.run_in_executor(None, ensure_default_avatar, directory)
                else:
                    avatar = await aio.run_in_executor(None, load_avatar, name, directory)
                if avatar.features_version != self.engine.manifest.features_version:
                    raise AvatarError(f"avatar {name!r} was prepared for another model; prepare it again")
                rows = self.loop.add_avatar(avatar, idle=self.config.idle_motion)
                self.avatars[name] = (avatar, rows)
        return self.avatars[name]

    async def close_session(self, session: Session) -> None:
        registered = self.sessions.pop(session.id, None) is not None
        self.latencies.pop(session.id, None)
        if session.closed and not registered:
            return
        self.loop.remove(session)
        await session.close()
        if registered:
            self.metrics.sessions.set(len(self.sessions))
            log.info("session %s closed (%d live)", session.id, len(self.sessions))

    def session(self, request: web.Request) -> Session:
        sid = request.match_info["sid"]
        session = self.sessions.get(sid)
        if session is None:
            raise _fail(404, f"no session {sid!r} (it ended, or never existed)")
        return session


def _state(request: web.Request) -> _State:
    return request.app[K_STATE]


def _set_video_codec(pc: RTCPeerConnection, sender: RTCRtpSender, codec: str) -> None:
    """Prefer ``codec`` (+ its RTX) on the video transceiver; must precede setRemoteDescription."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    prefs = [c for c in caps if c.mimeType.lower() == f"video/{codec}"]
    prefs += [c for c in caps if c.mimeType.lower() == "video/rtx"]
    for t in pc.getTransceivers():
        if t.sender is sender:
            t.setCodecPreferences(prefs)


async def offer(request: web.Request) -> web.Response:
    st = _state(request)
    if request.content_type != "application/json":
        raise _fail(415, f"send the offer as application/json (got {request.content_type or 'no content type'})")
    body = await _read_body(request, st.config.max_offer_bytes)
    try:
        params = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(400, f"the body is not valid JSON ({exc})") from None
    if not isinstance(params, dict) or not isinstance(params.get("sdp"), str) or params.get("type") != "offer":
        raise _fail(400, 'expected {"sdp": "...", "type": "offer", "avatar": optional name}')
    avatar_name = params.get("avatar") or st.config.avatar
    if not isinstance(avatar_name, str):
        raise _fail(400, "avatar must be a name")
    if len(st.sessions) + st.pending >= st.config.max_sessions:
        raise _fail(503, f"the server is full ({st.config.max_sessions} sessions); retry later", **{"Retry-After": "5"})
    st.pending += 1
    pc: RTCPeerConnection | None = None
    try:
        try:
            avatar, rows = await st.avatar(avatar_name)
        except AvatarError as exc:
            raise _fail(404, str(exc)) from None
        sid = uuid.uuid4().hex
        pc = RTCPeerConnection(configuration=peer_configuration(st.config.stun))
        session = _new_session(st, sid, avatar, rows)
        session.pc = pc
        pc.addTrack(session.audio)
        _set_video_codec(pc, pc.addTrack(session.video), st.config.codec)

        @pc.on("track")
        def on_track(track) -> None:  # noqa: ANN001 - aiortc's callback
            if track.kind == "audio" and not session.has_mic:
                session.attach_mic(track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if session.pc is not None and session.pc.connectionState in ("failed", "closed"):
                await st.close_session(session)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=params["sdp"], type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises ValueError, OperationError, ... for bad SDP
            raise _fail(400, f"malformed or unsupported SDP offer ({exc.__class__.__name__}: {exc})") from None
        st.sessions[sid] = session
        st.loop.add(session)
        st.metrics.sessions.set(len(st.sessions))
        st.metrics.sessions_total.inc()
        session.on_closed = _cancel_timer(asyncio.get_running_loop().call_later(
            st.config.connect_timeout_s, _drop_if_unconnected, st, sid))
        pc = None  # owned by the session now
        log.info("session %s: %s mode, avatar %r", sid, "mic" if session.has_mic else "presenter", avatar_name)
        desc = session.pc.localDescription
        return web.json_response({"sdp": desc.sdp, "type": desc.type, "session_id": sid,
                                  "mouth_box": session.mouth_box})
    finally:
        st.pending -= 1
        if pc is not None:
            await pc.close()


def _new_session(st: _State, sid: str, avatar: Avatar, rows) -> Session:  # noqa: ANN001
    metrics = st.metrics
    clock = st.clock
    recent = st.latencies.setdefault(sid, deque(maxlen=_LATENCY_WINDOW))

    def on_sent(meta, repeated: bool) -> None:  # noqa: ANN001
        metrics.frames_sent.inc()
        if repeated:
            metrics.frames_dropped.inc()
        if meta is not None:
            now = clock.now()
            for stage, seconds in meta.stages(now).items():
                st.observe_stage(stage, seconds)
            latency = max(0.0, now - meta.heard_at)
            metrics.latency.observe(latency)
            recent.append(latency)
            st.latency_samples.append(latency)

    renderer = st.loop.renderers[avatar.name]
    video = AvatarVideoTrack(clock, st.loop.grid, renderer.placeholder(), on_sent=on_sent)
    audio = DelayedAudioTrack(clock, st.loop.grid)
    m = st.engine.manifest
    return Session(sid, avatar.name, rows, clock, video, audio, fps=m.fps, lookahead_s=m.lookahead_s,
                   max_queue_s=st.config.max_speech_s, mouth_box=_union_box(avatar.mouth_boxes))


def _union_box(boxes: np.ndarray) -> tuple[int, int, int, int]:
    """One box (x0, y0, x1, y1, video pixels) holding the mouth in every avatar frame: what a
    client (or the glass-to-glass benchmark) watches to see the lips move."""
    b = np.asarray(boxes).reshape(-1, 4)
    return (int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max()))


def _cancel_timer(handle: asyncio.TimerHandle):  # noqa: ANN202
    """A session's on_closed hook: cancel its connect timeout, which would keep it alive 30 s."""
    return lambda _session: handle.cancel()


def _drop_if_unconnected(st: _State, sid: str) -> None:
    session = st.sessions.get(sid)
    if session is not None and session.pc is not None and session.pc.connectionState != "connected":
        log.info("session %s never connected; closing it", session.id)
        asyncio.ensure_future(st.close_session(session))


async def speak(request: web.Request) -> web.Response:
    st = _state(request)
    session = st.session(request)
    ctype = request.content_type
    if not (ctype.startswith("audio/") or ctype in _AUDIO_TYPES):
        raise _fail(415, f"send speech as an audio file (audio/wav, ...), not {ctype or 'no content type'}")
    if session.has_mic:
        raise _fail(409, "this session is driven by its microphone; speak is for presenter sessions")
    body = await _read_body(request, st.config.max_speech_bytes)
    try:
        wav = await asyncio.get_running_loop().run_in_executor(None, load_audio, body)
    except AudioFormatError as exc:
        raise _fail(400, str(exc)) from None
    try:
        queued = session.speak(wav)
    except SpeechQueueFull as exc:
        raise _fail(413, str(exc)) from None
    return web.json_response({"session_id": session.id, "duration_s": wav.size / SAMPLE_RATE, "queued_s": queued})


async def interrupt(request: web.Request) -> web.Response:
    st = _state(request)
    session = st.session(request)
    session.drop_speech()
    st.loop.reset(session)
    return web.json_response({"session_id": session.id, "interrupted": True,
                              "frames_rendered": session.stats.frames_rendered})


async def delete_session(request: web.Request) -> web.Response:
    st = _state(request)
    session = st.session(request)
    await st.close_session(session)
    return web.json_response({"session_id": session.id, "closed": True})


async def describe_session(request: web.Request) -> web.Response:
    st = _state(request)
    session = st.session(request)
    recent = list(st.latencies.get(session.id, ()))
    # the browser's stats overlay shows this: audio reaching the front-end -> its frame encoded
    latency_ms = round(1000 * sorted(recent)[len(recent) // 2], 1) if recent else None
    return web.json_response({**session.summary(), "audio_to_frame_ms": latency_ms})


async def list_avatars(request: web.Request) -> web.Response:
    """Prepared avatars by name (directories with a manifest), for the browser client's list."""
    config = _state(request).config
    root = Path(config.avatars_dir or default_avatars_dir())
    names = {config.avatar, "default"}
    if root.is_dir():
        names.update(d.name for d in root.iterdir()  # dot-dirs are avatars being written
                     if _NAME.match(d.name) and not d.name.startswith(".") and (d / "manifest.json").is_file())
    return web.json_response({"default": config.avatar, "avatars": sorted(names)})


async def healthz(request: web.Request) -> web.Response:
    st = _state(request)
    return web.json_response({"status": "ok", "sessions": len(st.sessions), "engine": st.engine.name,
                              "ticks": st.loop.ticks})


async def metrics(request: web.Request) -> web.Response:
    body = _state(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def client(request: web.Request) -> web.StreamResponse:
    """Files of client_web/ (index.html at /), or a placeholder page when there is no client."""
    root = _state(request).config.client_dir.resolve()
    name = request.match_info.get("path") or "index.html"
    path = (root / name).resolve()
    if root in path.parents and path.is_file():
        return web.FileResponse(path)
    if name == "index.html":
        return web.Response(text=_PLACEHOLDER, content_type="text/html")
    raise _fail(404, f"no such page: /{name}")


def create_app(config: ServerConfig | None = None, *, engine: Engine | None = None,
               clock: MediaClock | None = None) -> web.Application:
    """The aiohttp app; engine, avatar and frame loop start with the app (``on_startup``)."""
    config = config or ServerConfig()
    if is_loopback_host(config.host):
        use_loopback_candidates(True)  # a loopback server's clients are on this machine
    app = web.Application(middlewares=[_json_errors], client_max_size=config.max_speech_bytes)
    state = _State(config, engine, clock or WallClock())
    app[K_STATE] = state

    async def on_startup(_: web.Application) -> None:
        await state.startup()

    async def on_shutdown(_: web.Application) -> None:
        await state.shutdown()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.router.add_post("/offer", offer)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/avatars", list_avatars)
    app.router.add_get("/api/sessions/{sid}", describe_session)
    app.router.add_delete("/api/sessions/{sid}", delete_session)
    app.router.add_post("/api/sessions/{sid}/speak", speak)
    app.router.add_post("/api/sessions/{sid}/interrupt", interrupt)
    app.router.add_get("/{path:.*}", client)
    return app


def run_server(config: ServerConfig) -> None:
    """Serve until Ctrl-C (uvloop when installed); sessions and the frame loop close cleanly."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None

    async def main() -> None:
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals off the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        runner = web.AppRunner(create_app(config))
        await runner.setup()
        try:
            await web.TCPSite(runner, config.host, config.port).start()
            print(f"lipstream serving on http://{config.host}:{config.port}/ (Ctrl-C to stop)", flush=True)
            await stop.wait()  # SIGTERM sets it; Ctrl-C cancels this task (asyncio.Runner)
        finally:
            await runner.cleanup()
            log.info("stopped")

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        try:
            runner.run(main())
        except KeyboardInterrupt:
            log.info("shutting down")
