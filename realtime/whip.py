"""WHIP ingest (RFC 9725) of a microphone, and WHEP-style egress of the avatar it drives.

Standard WebRTC tools talk to lipstream without its JSON ``/offer``:

- ``POST /whip`` (``Content-Type: application/sdp``, an SDP offer with an audio track; optional
  ``?avatar=name``) -> ``201 Created``, ``Location: /whip/{id}``, the SDP answer.  The audio is
  the session's microphone (a video-call session without a return path on this connection: WHIP
  is ingest only; any video the offer carries is answered ``inactive``).  ``DELETE /whip/{id}``
  ends the session; ``PATCH`` (trickle ICE) is answered 405: candidates are gathered before the
  answer (aiortc does so in ``setLocalDescription``), and the offer must carry the client's.
  An ``actpass`` offer is answered ``a=setup:passive``: we are the DTLS server (so clients with
  RSA certificates, such as GStreamer's webrtcbin, can connect).
- ``POST /whep/{id}`` (or ``POST /whep``: the newest live ingest) with a receive-only offer ->
  ``201``, ``Location: /whep/{viewer}``, an answer sending the avatar's video and its speech
  (delayed to the lips) of ingest ``{id}``'s session.  ``DELETE /whep/{viewer}`` ends the viewer.
  Several viewers may watch one ingest (aiortc's ``MediaRelay``).  WHEP is an IETF draft; this is
  its offer/answer core.

Errors are JSON ``{"error": ...}``: 400 bad SDP / no audio to ingest / nothing to receive, 404
unknown resource, 405 PATCH, 413 offer > 64 KiB, 415 not ``application/sdp``, 503 full.
The ``{id}`` is the session id: ``GET /api/sessions/{id}`` and ``DELETE /api/sessions/{id}`` work
on it too.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from engines.avatar import AvatarError
from realtime.api_errors import fail, read_body
from realtime.codecs import prefer_video_codec, with_mic_ptime
from realtime.ice import peer_configuration, take_dtls_server_role

log = logging.getLogger(__name__)

__all__ = ["add_routes", "SDP"]

SDP = "application/sdp"
K_WHIP = web.AppKey("lipstream_whip", object)
K_WATCH = web.AppKey("lipstream_whip_watch", asyncio.Task)


@dataclass
class _Ingest:
    session: Any  # realtime.session.Session
    relay: MediaRelay = field(default_factory=MediaRelay)
    viewers: dict[str, RTCPeerConnection] = field(default_factory=dict)


class _Resources:
    def __init__(self) -> None:
        self.ingests: dict[str, _Ingest] = {}  # by session id, newest last
        self.viewers: dict[str, tuple[str, RTCPeerConnection]] = {}  # viewer id -> (session id, pc)

    def live(self, sid: str) -> _Ingest | None:
        ingest = self.ingests.get(sid)
        if ingest is not None and ingest.session.closed:
            self.ingests.pop(sid, None)
            return None
        return ingest

    def newest(self) -> _Ingest | None:
        for sid in reversed(list(self.ingests)):
            ingest = self.live(sid)
            if ingest is not None:
                return ingest
        return None


def _sdp_answer(desc: RTCSessionDescription, location: str, mic_ptime_ms: int = 20) -> web.Response:
    return web.Response(status=201, body=with_mic_ptime(desc.sdp, mic_ptime_ms).encode(), headers={
        "Content-Type": SDP, "Location": location, "Access-Control-Expose-Headers": "Location"})


async def _read_offer(request: web.Request, limit: int) -> str:
    if request.content_type != SDP:
        raise fail(415, f"send the SDP offer as {SDP} (got {request.content_type or 'no content type'})")
    body = await read_body(request, limit)
    try:
        sdp = body.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(400, "the SDP offer is not UTF-8 text") from None
    if not sdp.startswith("v=0"):
        raise fail(400, "malformed SDP offer (it must start with v=0)")
    return sdp


def _media_kinds(sdp: str) -> list[str]:
    return [line[2:].split(" ", 1)[0] for line in sdp.splitlines() if line.startswith("m=")]


class _Routes:
    """The WHIP/WHEP handlers over one server's state and this module's resources."""

    def __init__(self, app: web.Application, state: Any) -> None:
        self.app, self.state, self.res = app, state, _Resources()
        app[K_WHIP] = self.res

    async def whip(self, request: web.Request) -> web.Response:
        cfg = self.state.config
        sdp = await _read_offer(request, cfg.max_offer_bytes)
        if "audio" not in _media_kinds(sdp):
            raise fail(400, "a WHIP ingest offers the microphone: the offer has no audio m-line")
        avatar_name = request.query.get("avatar") or cfg.avatar
        sessions = self.state.sessions
        if sessions.full:
            raise fail(503, f"the server is full ({cfg.max_sessions} sessions); retry later", **{"Retry-After": "5"})
        sessions.pending += 1
        pc: RTCPeerConnection | None = None
        try:
            try:
                avatar, rows = await self.state.avatars.get(avatar_name)
            except AvatarError as exc:
                raise fail(404, str(exc)) from None
            pc = RTCPeerConnection(configuration=peer_configuration(cfg.stun))
            session = sessions.new(uuid.uuid4().hex, avatar, rows)
            session.pc = pc

            @pc.on("track")
            def on_track(track) -> None:  # noqa: ANN001 - aiortc's callback
                if track.kind == "audio" and not session.has_mic:
                    session.attach_mic(track)

            @pc.on("connectionstatechange")
            async def on_state() -> None:  # session.pc, not pc: the local is None once the session owns it
                if session.pc is not None and session.pc.connectionState in ("failed", "closed"):
                    await _end_ingest(self.res, self.state, session)

            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                take_dtls_server_role(pc, sdp)
                for t in pc.getTransceivers():  # ingest only: receive the mic, nothing else
                    t.direction = "recvonly" if t.kind == "audio" else "inactive"
                await pc.setLocalDescription(await pc.createAnswer())  # gathers every candidate first
            except Exception as exc:  # aiortc raises ValueError, OperationError, ... for bad SDP
                raise fail(400, f"malformed or unsupported SDP offer ({exc.__class__.__name__}: {exc})") from None
            if not session.has_mic:
                raise fail(400, "the offer's audio is not sendable to us (it must be sendonly or sendrecv)")
            sessions.register(session)
            self.res.ingests[session.id] = _Ingest(session)
            pc = None  # owned by the session now
            log.info("WHIP ingest %s: avatar %r", session.id, avatar_name)
            return _sdp_answer(session.pc.localDescription, f"/whip/{session.id}", cfg.mic_ptime_ms)
        finally:
            sessions.pending -= 1
            if pc is not None:
                await pc.close()

    async def whip_delete(self, request: web.Request) -> web.Response:
        sid = request.match_info["rid"]
        ingest = self.res.live(sid)
        if ingest is None:
            raise fail(404, f"no WHIP session {sid!r} (it ended, or never existed)")
        await _end_ingest(self.res, self.state, ingest.session)
        return web.json_response({"session_id": sid, "closed": True})

    async def no_trickle(self, request: web.Request) -> web.Response:
        raise fail(405, "no trickle ICE: gather candidates before the offer (the answer carries all of ours)",
                   Allow="DELETE")

    async def whep(self, request: web.Request) -> web.Response:
        cfg = self.state.config
        sid = request.match_info.get("rid")
        sdp = await _read_offer(request, cfg.max_offer_bytes)
        ingest = self.res.live(sid) if sid else self.res.newest()
        if ingest is None:
            raise fail(404, f"no live WHIP ingest {sid!r}" if sid else "no live WHIP ingest to watch")
        kinds = _media_kinds(sdp)
        if "video" not in kinds and "audio" not in kinds:
            raise fail(400, "the offer receives nothing: it needs an audio and/or video m-line")
        session = ingest.session
        pc = RTCPeerConnection(configuration=peer_configuration(cfg.stun))
        try:
            if "audio" in kinds:
                pc.addTrack(ingest.relay.subscribe(session.audio, buffered=False))
            if "video" in kinds:
                sender = pc.addTrack(ingest.relay.subscribe(session.video, buffered=False))
                prefer_video_codec(pc, sender, cfg.codec)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            take_dtls_server_role(pc, sdp)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await pc.close()
            raise fail(400, f"malformed or unsupported SDP offer ({exc.__class__.__name__}: {exc})") from None
        vid = uuid.uuid4().hex
        ingest.viewers[vid] = pc
        self.res.viewers[vid] = (session.id, pc)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await _end_viewer(self.res, vid)

        log.info("WHEP viewer %s of %s", vid, session.id)
        return _sdp_answer(pc.localDescription, f"/whep/{vid}")

    async def whep_delete(self, request: web.Request) -> web.Response:
        vid = request.match_info["rid"]
        if vid not in self.res.viewers:
            raise fail(404, f"no WHEP session {vid!r} (it ended, or never existed)")
        await _end_viewer(self.res, vid)
        return web.json_response({"viewer_id": vid, "closed": True})

    async def watch(self) -> None:
        """Viewers of an ingest whose session ended (any way: DELETE, the peer, a timeout) end too."""
        while True:
            await asyncio.sleep(0.5)
            for sid, ingest in list(self.res.ingests.items()):
                if ingest.session.closed:
                    await _end_ingest(self.res, self.state, ingest.session)

    async def on_startup(self, _: web.Application) -> None:
        self.app[K_WATCH] = asyncio.ensure_future(self.watch())

    async def on_shutdown(self, _: web.Application) -> None:
        task = self.app.get(K_WATCH)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*(pc.close() for _, pc in list(self.res.viewers.values())), return_exceptions=True)
        self.res.viewers.clear()


def add_routes(app: web.Application, state: Any) -> None:
    """WHIP/WHEP routes on ``app``; ``state`` is the server's ServerState."""
    routes = _Routes(app, state)
    app.on_startup.append(routes.on_startup)
    app.on_shutdown.insert(0, routes.on_shutdown)
    app.router.add_post("/whip", routes.whip)
    app.router.add_delete("/whip/{rid}", routes.whip_delete)
    app.router.add_patch("/whip/{rid}", routes.no_trickle)
    app.router.add_post("/whep", routes.whep)
    app.router.add_post("/whep/{rid}", routes.whep)
    app.router.add_delete("/whep/{rid}", routes.whep_delete)
    app.router.add_patch("/whep/{rid}", routes.no_trickle)


async def _end_viewer(res: _Resources, vid: str) -> None:
    entry = res.viewers.pop(vid, None)
    if entry is None:
        return
    sid, pc = entry
    ingest = res.ingests.get(sid)
    if ingest is not None:
        ingest.viewers.pop(vid, None)
    await pc.close()


async def _end_ingest(res: _Resources, state: Any, session: Any) -> None:
    ingest = res.ingests.pop(session.id, None)
    if ingest is not None:
        for vid in list(ingest.viewers):
            await _end_viewer(res, vid)
    await state.sessions.close(session)
