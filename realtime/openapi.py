"""The HTTP API described: an OpenAPI 3.0 document, written by hand, served at ``GET /openapi.json``.

Hand-written (not generated from the routes) so that it says what a caller needs: bodies, limits,
every status a route answers and why.  ``tests/test_api_fuzz.py`` keeps it true: every route the
app registers is described and every described operation exists, and schemathesis fuzzes the
running server from this document, checking status codes, content types and bodies against it.
The limits in it are the running server's (``ServerConfig``).  With a token configured every
operation but the open ones requires ``bearerAuth`` (``realtime/auth.py``).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

__all__ = ["describe", "handler", "OPEN_OPERATIONS"]

# Operations that never need the token (realtime/auth.py keeps them open)
OPEN_OPERATIONS = {("get", "/healthz"), ("get", "/openapi.json")}

_WHY = {
    400: "Bad request: malformed body, SDP or parameter (the message says which)",
    401: "No token, or the wrong one (only when the server runs with --token)",
    403: "A cross-origin request that would change state (its Origin is not this server's nor --cors-origin)",
    404: "No such session, avatar or resource",
    405: "Method not allowed here",
    409: "Conflicts with the resource's state (the message says how)",
    413: "Body over the limit",
    415: "Wrong Content-Type",
    503: "The server is full; retry after Retry-After seconds",
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK", **more: Any) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **more}


def _op(summary: str, ok: dict, errors: tuple[int, ...], *, status: int = 200, **more: Any) -> dict:
    responses = {str(status): ok}
    responses.update({str(code): {"$ref": f"#/components/responses/E{code}"} for code in errors})
    return {"summary": summary, "responses": responses, **more}


def _path_param(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _sdp_body(description: str) -> dict:
    return {"required": True, "description": description,
            "content": {"application/sdp": {"schema": {"type": "string"}}}}


def _sdp_answer(location: str) -> dict:
    return {"description": "Created: the SDP answer", "content": {"application/sdp": {"schema": {"type": "string"}}},
            "headers": {"Location": {"description": location, "schema": {"type": "string"}}}}


def _schemas() -> dict:
    obj = {"type": "object"}
    return {
        "Error": {**obj, "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Offer": {**obj, "required": ["sdp", "type"], "properties": {
            "sdp": {"type": "string"}, "type": {"type": "string", "enum": ["offer"]},
            "avatar": {"type": "string", "description": "a prepared avatar's name (default: the server's)"}}},
        "Answer": {**obj, "required": ["sdp", "type", "session_id"], "properties": {
            "sdp": {"type": "string"}, "type": {"type": "string", "enum": ["answer"]},
            "session_id": {"type": "string"},
            "mouth_box": {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4}}},
        "Health": {**obj, "required": ["status", "sessions", "engine", "ticks"], "properties": {
            "status": {"type": "string", "enum": ["ok"]}, "sessions": {"type": "integer"},
            "engine": {"type": "string"}, "ticks": {"type": "integer"}}},
        "Avatars": {**obj, "required": ["default", "avatars"], "properties": {
            "default": {"type": "string"}, "avatars": {"type": "array", "items": {"type": "string"}}}},
        "Session": {**obj, "required": ["session_id", "avatar", "mic", "frames_sent", "frames_rendered"],
                    "properties": {
                        "session_id": {"type": "string"}, "avatar": {"type": "string"}, "mic": {"type": "boolean"},
                        "frames_sent": {"type": "integer"}, "frames_repeated": {"type": "integer"},
                        "frames_rendered": {"type": "integer"}, "frames_skipped": {"type": "integer"},
                        "timeline_s": {"type": "number"}, "queued_s": {"type": "number"},
                        "openings": {"type": "array", "items": {"type": "number"}},
                        "audio_to_frame_ms": {"type": "number", "nullable": True}}},
        "Spoken": {**obj, "required": ["session_id", "duration_s", "queued_s"], "properties": {
            "session_id": {"type": "string"}, "duration_s": {"type": "number"}, "queued_s": {"type": "number"}}},
        "Interrupted": {**obj, "required": ["session_id", "interrupted"], "properties": {
            "session_id": {"type": "string"}, "interrupted": {"type": "boolean"},
            "frames_rendered": {"type": "integer"}}},
        "Upload": {**obj, "required": ["name", "status"], "properties": {
            "name": {"type": "string"},
            "status": {"type": "string", "enum": ["queued", "preparing", "ready", "failed"]},
            "kind": {"type": "string", "enum": ["image", "video"]}, "progress": {"type": "number"},
            "error": {"type": "string", "description": "why it failed, for the uploader"},
            "elapsed_s": {"type": "number"}, "status_url": {"type": "string"}}},
        "Deleted": {**obj, "required": ["name", "deleted"], "properties": {
            "name": {"type": "string"}, "deleted": {"type": "boolean"},
            "was": {"type": "string", "enum": ["queued", "preparing", "ready", "failed"]}}},
        "Closed": {**obj, "required": ["closed"], "properties": {
            "session_id": {"type": "string"}, "viewer_id": {"type": "string"}, "closed": {"type": "boolean"}}},
    }


def _responses() -> dict:
    out = {}
    for code, why in _WHY.items():
        response = _json(_ref("Error"), why)
        if code == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        if code == 503:
            response["headers"] = {"Retry-After": {"schema": {"type": "string"}}}
        out[f"E{code}"] = response
    return out


def _session_paths(config: Any) -> dict:
    sid = _path_param("sid", "the session id (from /offer or WHIP)")
    return {
        "/api/sessions/{sid}": {
            "parameters": [sid],
            "get": _op("Describe a session: frames, recent mouth openings, recent latency",
                       _json(_ref("Session")), (404,)),
            "delete": _op("End a session", _json(_ref("Closed")), (404,)),
        },
        "/api/sessions/{sid}/speak": {"parameters": [sid], "post": _op(
            "Queue speech (an audio file: WAV, MP3, ... any rate/channels) on a presenter session",
            _json(_ref("Spoken")), (400, 404, 409, 413, 415),
            requestBody={"required": True, "description": f"at most {config.max_speech_bytes} bytes, "
                                                          f"{config.max_speech_s:g} s queued",
                         "content": {m: {"schema": {"type": "string", "format": "binary"}}
                                     for m in ("audio/wav", "audio/mpeg", "application/octet-stream")}})},
        "/api/sessions/{sid}/interrupt": {"parameters": [sid], "post": _op(
            "Drop queued and in-flight speech; the mouth closes within 1-2 frames", _json(_ref("Interrupted")),
            (404,))},
        "/api/sessions/{sid}/stream": {"parameters": [sid], "get": _op(
            "WebSocket: stream PCM16 speech into a presenter session (docs/integrations.md); send "
            "Upgrade: websocket (a browser may pass ?token= instead of the Authorization header)",
            {"description": "Switching Protocols (WebSocket)"}, (400, 404, 409), status=101,
            parameters=[{"name": "rate", "in": "query", "required": False,
                         "schema": {"type": "integer", "enum": [16000, 24000, 48000], "default": 16000}},
                        {"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
                         "description": "the bearer token, for WebSocket upgrades only"}])},
    }


def _whip_paths() -> dict:
    rid = _path_param("rid", "the resource id from the Location header")
    patch = _op("Trickle ICE: not supported (gather candidates before the offer)", {"description": "never"},
                (405,), status=204)
    whep = _op("WHEP: watch a WHIP ingest's avatar (the newest one without an id)", _sdp_answer("/whep/{viewer}"),
               (400, 404, 413, 415), status=201, requestBody=_sdp_body("a receive-only SDP offer"))
    return {
        "/whip": {"post": _op(
            "WHIP ingest (RFC 9725): a microphone drives a new session", _sdp_answer("/whip/{session_id}"),
            (400, 404, 413, 415, 503), status=201, requestBody=_sdp_body("an SDP offer with an audio track"),
            parameters=[{"name": "avatar", "in": "query", "required": False, "schema": {"type": "string"}}])},
        "/whip/{rid}": {"parameters": [rid], "delete": _op("End the ingest", _json(_ref("Closed")), (404,)),
                        "patch": patch},
        "/whep": {"post": whep},
        "/whep/{rid}": {"parameters": [rid], "post": whep,
                        "delete": _op("End the viewer", _json(_ref("Closed")), (404,)), "patch": patch},
    }


def _upload_op(config: Any) -> dict:
    form = {"type": "object", "required": ["name", "file"], "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"},
        "file": {"type": "string", "format": "binary",
                 "description": "PNG, JPEG or WebP portrait, or an MP4/MOV, WebM/MKV or AVI video (sniffed)"}}}
    return _op(f"Upload an avatar (at most {config.max_upload_bytes} bytes, video at most "
               f"{config.max_upload_video_s:g} s); prepared in a worker process ({config.upload_timeout_s:g} s, "
               f"{config.upload_memory_mb} MB)",
               _json(_ref("Upload"), "Accepted: queued for preparation",
                     headers={"Location": {"description": "its status URL", "schema": {"type": "string"}}}),
               (400, 409, 413, 415, 503), status=202,
               requestBody={"required": True, "content": {"multipart/form-data": {"schema": form}}})


def _paths(config: Any) -> dict:
    return {
        "/offer": {"post": _op(
            "Open a WebRTC session: a mic track makes a video call, none a presenter session",
            _json(_ref("Answer")), (400, 404, 413, 415, 503),
            requestBody={"required": True, "description": f"at most {config.max_offer_bytes} bytes",
                         "content": {"application/json": {"schema": _ref("Offer")}}})},
        "/healthz": {"get": _op("Liveness: always open", _json(_ref("Health")), ())},
        "/metrics": {"get": _op("Prometheus metrics", {"description": "Prometheus text exposition",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}},
                                ())},
        "/openapi.json": {"get": _op("This description", _json({"type": "object"}), ())},
        "/api/avatars": {"get": _op("The prepared avatars a client may choose", _json(_ref("Avatars")), ()),
                         "post": _upload_op(config)},
        "/api/avatars/{name}/status": {"parameters": [_path_param("name", "the avatar's name")], "get": _op(
            "An upload's progress: queued, preparing (progress 0-1), ready, or failed with the reason",
            _json(_ref("Upload")), (400, 404))},
        "/api/avatars/{name}": {"parameters": [_path_param("name", "the avatar's name")], "delete": _op(
            "Cancel an upload's preparation, or delete an uploaded avatar (not one in use, not the default, "
            "not one prepared on the server)", _json(_ref("Deleted")), (400, 404, 409))},
        **_session_paths(config),
        **_whip_paths(),
    }


def _secure(paths: dict, token: bool) -> None:
    """401 on every operation that needs the token, 403 on every state-changing one."""
    for path, item in paths.items():
        for method, op in item.items():
            if method == "parameters":
                continue
            extra = []
            if token and (method, path) not in OPEN_OPERATIONS:
                extra.append(401)
            if method not in ("get", "head", "options"):
                extra.append(403)
            for code in extra:
                op["responses"].setdefault(str(code), {"$ref": f"#/components/responses/E{code}"})
            if (method, path) in OPEN_OPERATIONS:
                op["security"] = []


def describe(config: Any) -> dict:
    """The OpenAPI document for a server with this ``ServerConfig``."""
    paths = _paths(config)
    _secure(paths, bool(config.token))
    doc = {
        "openapi": "3.0.3",
        "info": {"title": "lipstream", "version": "0.1.0",
                 "description": "Real-time streaming avatar server: WebRTC sessions, speech in, lip-synced "
                                "video out. Every error is JSON {\"error\": message}. docs/server.md, "
                                "docs/security.md"},
        "paths": paths,
        "components": {"schemas": _schemas(), "responses": _responses(),
                       "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
    }
    if config.token:
        doc["security"] = [{"bearerAuth": []}]
    return doc


def handler(config: Any):  # noqa: ANN201 - an aiohttp handler
    """``GET /openapi.json`` for a server with this ``ServerConfig`` (the document built once)."""
    body = json.dumps(describe(config), indent=1)

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    return openapi_json
