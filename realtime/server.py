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

One :class:`~realtime.frame_loop.FrameLoop` (one tick, one worker thread) serves all sessions;
:class:`ServerState` holds it with the avatar registry (``realtime.avatars``), the session
registry (``realtime.sessions``) and the metrics and latency store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from engines.avatar import AvatarError
from engines.base import Engine
from engines.manifest import DEFAULT_MODEL_DIR
from engines.mel import SAMPLE_RATE
from realtime import allocator, low_latency, memdebug, openapi
from realtime.api_errors import fail, json_errors, read_body
from realtime.audio_io import AudioFormatError, load_audio
from realtime.auth import access_middleware, cors_middleware, warn_if_exposed
from realtime.avatars import AvatarRegistry
from realtime.clock import MediaClock, WallClock
from realtime.codecs import prefer_video_codec, with_mic_ptime
from realtime.frame_loop import FrameLoop
from realtime.ice import is_loopback_host, peer_configuration, take_dtls_server_role, use_loopback_candidates
from realtime.latency import LatencyStore
from realtime.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from realtime.reaper import SessionReaper
from realtime.session import Session, SpeechQueueFull
from realtime.sessions import SessionRegistry

log = logging.getLogger(__name__)

__all__ = ["ServerConfig", "create_app", "run_server", "CLIENT_DIR"]

CLIENT_DIR = Path(__file__).resolve().parent.parent / "client_web"
_AUDIO_TYPES = ("application/octet-stream",)
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
    session_timeout_s: float = 15.0  # a mic session with no mic audio this long is closed (realtime/reaper.py); 0: never
    idle_motion: bool = True
    max_lag_frames: int = 2  # 2: ~no repeated frames under mic jitter; 1: ~10 ms less latency, 7-16 % repeats
    render_when: str = "tick"  # "window": also render as soon as mic audio completes a window (FrameLoop)
    mic_ptime_ms: int = 20  # the Opus packet time the answer asks the peer's mic for (realtime/codecs.py)
    client_dir: Path = CLIENT_DIR
    stun: tuple[str, ...] = ()  # STUN URLs for clients beyond this machine; none by default
    token: str | None = None  # bearer token every API route needs (realtime/auth.py); None: open
    cors_origin: str | None = None  # the one web origin (or "*") allowed cross-origin; None: no CORS
    engine_deadline_s: float = 1.0  # an engine call running longer is abandoned (realtime/engine_faults.py)
    # avatar upload (realtime/avatar_upload.py): file size, video length, the worker's wall time and memory
    max_upload_bytes: int = 32 * 1024 * 1024
    max_upload_video_s: float = 10.0
    upload_timeout_s: float = 120.0
    upload_memory_mb: int = 3072
    max_upload_queue: int = 4
    # Builds the frame loop: (engine, clock, metrics, config) -> loop. Default: the batched FrameLoop;
    # the concurrency benchmark passes its naive baseline (benchmarks/naive_loop.py).
    frame_loop: Callable[..., Any] | None = None


def batched_frame_loop(engine: Engine, clock: MediaClock, metrics: ServerMetrics, config: ServerConfig) -> FrameLoop:
    return FrameLoop(engine, clock, metrics, max_lag=config.max_lag_frames, idle_motion=config.idle_motion,
                     render_when=config.render_when, engine_deadline_s=config.engine_deadline_s)


class ServerState:
    """What the handlers share: the engine, the frame loop, the avatar and session registries, metrics."""

    def __init__(self, config: ServerConfig, engine: Engine | None, clock: MediaClock) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self.metrics: ServerMetrics | None = None
        self.latency = LatencyStore()
        self.loop = None  # FrameLoop (or the naive baseline), built at startup
        self.avatars: AvatarRegistry | None = None
        self.sessions: SessionRegistry | None = None
        self.reaper: SessionReaper | None = None
        self.memdebug: memdebug.MemRecorder | None = None

    async def startup(self) -> None:
        low_latency.install()
        aio = asyncio.get_running_loop()
        if self.engine is None:
            from engines.factory import create_engine

            self.engine = await aio.run_in_executor(None, create_engine, self.config.engine, self.config.model_dir)
        engine, config = self.engine, self.config
        self.metrics = ServerMetrics(engine.name, engine.manifest.name, engine.precision)
        self.latency.metrics = self.metrics
        low_latency.ENCODE_OBSERVERS.append(self.latency.observe_encode)
        low_latency.JITTER_OBSERVERS.append(self.latency.observe_jitter)
        self.loop = (config.frame_loop or batched_frame_loop)(engine, self.clock, self.metrics, config)
        self.avatars = AvatarRegistry(self.loop, engine.manifest.features_version, config.avatars_dir,
                                      keep=config.avatar, model_dir=engine.model_dir)
        self.sessions = SessionRegistry(self.loop, self.clock, engine.convention, self.metrics, self.latency,
                                        max_sessions=config.max_sessions, max_speech_s=config.max_speech_s,
                                        connect_timeout_s=config.connect_timeout_s)
        await self.avatars.get(config.avatar)
        await aio.run_in_executor(None, engine.warmup, engine.warmup_batches(config.max_sessions))
        self.loop.start()
        self.reaper = SessionReaper(self.sessions, self.clock, self.metrics, config.session_timeout_s)
        self.reaper.start()
        self.memdebug = memdebug.start_from_env(self)  # LIPSTREAM_MEMDEBUG=file: debug only (realtime/memdebug.py)
        log.info("serving avatar %r with engine %s", config.avatar, engine.name)

    async def shutdown(self) -> None:
        if self.memdebug is not None:
            self.memdebug.stop()
        if self.reaper is not None:
            await self.reaper.stop()
        if self.sessions is not None:
            await self.sessions.close_all()
        if self.loop is not None:
            await self.loop.stop()
        for observers, fn in ((low_latency.ENCODE_OBSERVERS, self.latency.observe_encode),
                              (low_latency.JITTER_OBSERVERS, self.latency.observe_jitter)):
            if fn in observers:
                observers.remove(fn)
        low_latency.uninstall()

    def session(self, request: web.Request) -> Session:
        sid = request.match_info["sid"]
        session = self.sessions.get(sid)
        if session is None:
            raise fail(404, f"no session {sid!r} (it ended, or never existed)")
        return session


def _state(request: web.Request) -> ServerState:
    return request.app[K_STATE]


async def offer(request: web.Request) -> web.Response:
    st = _state(request)
    if request.content_type != "application/json":
        raise fail(415, f"send the offer as application/json (got {request.content_type or 'no content type'})")
    params = _json_body(await read_body(request, st.config.max_offer_bytes))
    if not isinstance(params, dict) or not isinstance(params.get("sdp"), str) or params.get("type") != "offer":
        raise fail(400, 'expected {"sdp": "...", "type": "offer", "avatar": optional name}')
    avatar_name = params.get("avatar") or st.config.avatar
    if not isinstance(avatar_name, str):
        raise fail(400, "avatar must be a name")
    sessions = st.sessions
    if sessions.full:
        raise fail(503, f"the server is full ({st.config.max_sessions} sessions); retry later", **{"Retry-After": "5"})
    sessions.pending += 1
    pc: RTCPeerConnection | None = None
    try:
        try:
            avatar, rows = await st.avatars.get(avatar_name)
        except AvatarError as exc:
            raise fail(404, str(exc)) from None
        pc = RTCPeerConnection(configuration=peer_configuration(st.config.stun))
        session = sessions.new(uuid.uuid4().hex, avatar, rows)
        session.pc = pc
        _wire_peer(st, pc, session)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=params["sdp"], type="offer"))
            take_dtls_server_role(pc, params["sdp"])
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # aiortc raises ValueError, OperationError, ... for bad SDP
            raise fail(400, f"malformed or unsupported SDP offer ({exc.__class__.__name__}: {exc})") from None
        sessions.register(session)
        pc = None  # owned by the session now
        log.info("session %s: %s mode, avatar %r", session.id, "mic" if session.has_mic else "presenter", avatar_name)
        desc = session.pc.localDescription
        return web.json_response({"sdp": with_mic_ptime(desc.sdp, st.config.mic_ptime_ms), "type": desc.type,
                                  "session_id": session.id,
                                  "mouth_box": session.mouth_box})
    finally:
        sessions.pending -= 1
        if pc is not None:
            await pc.close()


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise fail(400, f"the body is not valid JSON ({exc})") from None


def _wire_peer(st: ServerState, pc: RTCPeerConnection, session: Session) -> None:
    """Our tracks on the peer connection; its mic (if any) into the session; its end ends the session."""
    pc.addTrack(session.audio)
    prefer_video_codec(pc, pc.addTrack(session.video), st.config.codec)

    @pc.on("track")
    def on_track(track) -> None:  # noqa: ANN001 - aiortc's callback
        if track.kind == "audio" and not session.has_mic:
            session.attach_mic(track)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if session.pc is not None and session.pc.connectionState in ("failed", "closed"):
            await st.sessions.close(session)


async def speak(request: web.Request) -> web.Response:
    st = _state(request)
    session = st.session(request)
    ctype = request.content_type
    if not (ctype.startswith("audio/") or ctype in _AUDIO_TYPES):
        raise fail(415, f"send speech as an audio file (audio/wav, ...), not {ctype or 'no content type'}")
    if session.has_mic:
        raise fail(409, "this session is driven by its microphone; speak is for presenter sessions")
    body = await read_body(request, st.config.max_speech_bytes)
    try:
        wav = await asyncio.get_running_loop().run_in_executor(None, load_audio, body)
    except AudioFormatError as exc:
        raise fail(400, str(exc)) from None
    try:
        queued = session.speak(wav)
    except SpeechQueueFull as exc:
        raise fail(413, str(exc)) from None
    return web.json_response({"session_id": session.id, "duration_s": wav.size / SAMPLE_RATE, "queued_s": queued})


async def interrupt(request: web.Request) -> web.Response:
    st = _state(request)
    session = st.session(request)
    st.sessions.interrupt(session)
    return web.json_response({"session_id": session.id, "interrupted": True,
                              "frames_rendered": session.stats.frames_rendered})


async def delete_session(request: web.Request) -> web.Response:
    st = _state(request)
    session = st.session(request)
    await st.sessions.close(session)
    return web.json_response({"session_id": session.id, "closed": True})


async def describe_session(request: web.Request) -> web.Response:
    st = _state(request)
    session = st.session(request)
    # the browser's stats overlay shows this: audio reaching the front-end -> its frame encoded
    return web.json_response({**session.summary(), "audio_to_frame_ms": st.latency.recent_p50_ms(session.id)})


async def list_avatars(request: web.Request) -> web.Response:
    st = _state(request)
    return web.json_response({"default": st.config.avatar, "avatars": st.avatars.names_on_disk(st.config.avatar)})


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
    try:
        path = (root / name).resolve()
        found = root in path.parents and path.is_file()
    except (ValueError, OSError):  # a NUL byte, a name too long (found by tests/test_api_fuzz.py)
        found = False
    if found:
        return web.FileResponse(path)
    if name == "index.html":
        return web.Response(text=_PLACEHOLDER, content_type="text/html")
    raise fail(404, f"no such page: /{name}")


def create_app(config: ServerConfig | None = None, *, engine: Engine | None = None,
               clock: MediaClock | None = None) -> web.Application:
    """The aiohttp app; engine, avatar and frame loop start with the app (``on_startup``)."""
    config = config or ServerConfig()
    if is_loopback_host(config.host):
        use_loopback_candidates(True)  # a loopback server's clients are on this machine
    warn_if_exposed(config.host, config.token)
    describe_api = openapi.handler(config)
    access = access_middleware(config.token, cors_origin=config.cors_origin,
                               open_handlers=(healthz, client, describe_api))
    app = web.Application(middlewares=[cors_middleware(config.cors_origin), json_errors, access],
                          client_max_size=config.max_speech_bytes)
    state = ServerState(config, engine, clock or WallClock())
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
    app.router.add_get("/openapi.json", describe_api)
    app.router.add_get("/api/avatars", list_avatars)
    app.router.add_get("/api/sessions/{sid}", describe_session)
    app.router.add_delete("/api/sessions/{sid}", delete_session)
    app.router.add_post("/api/sessions/{sid}/speak", speak)
    app.router.add_post("/api/sessions/{sid}/interrupt", interrupt)
    from realtime import avatar_upload, stream_api, whip  # noqa: E402 - routes kept in their own modules
    avatar_upload.add_routes(app, state)
    stream_api.add_routes(app, state)
    whip.add_routes(app, state)
    app.router.add_get("/{path:.*}", client)
    return app


def run_server(config: ServerConfig) -> None:
    """Serve until Ctrl-C (uvloop when installed); sessions and the frame loop close cleanly."""
    allocator.configure()  # few malloc arenas, before the engine's and aiortc's threads (realtime/allocator.py)
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
