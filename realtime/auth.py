"""Who may use the server: an optional bearer token, cross-origin requests refused unless allowed.

Two aiohttp middlewares (``server.create_app`` registers them around ``api_errors.json_errors``):

- :func:`cors_middleware` (outermost): no ``Access-Control-Allow-Origin`` unless ``--cors-origin``
  names an origin; that origin's preflights (``OPTIONS``) are answered here, before the token check
  (browsers send no credentials on a preflight), and its responses carry the CORS headers.
- :func:`access_middleware` (inside the JSON errors): with a token configured, every route but the
  open ones needs ``Authorization: Bearer TOKEN`` — or, for a WebSocket upgrade (browsers cannot set
  headers on one), a ``token`` query parameter.  Open: the handlers the server names (``/healthz``,
  ``/openapi.json``, the page's static files), never a path under :data:`PROTECTED_PREFIXES` and
  never a WebSocket.  A route added later is closed until it is named open.  The comparison is
  constant-time (both sides hashed, then ``hmac.compare_digest``).  Missing or wrong: 401 JSON with
  ``WWW-Authenticate: Bearer``.

  Whatever the token, a state-changing request (not GET/HEAD/OPTIONS) or a WebSocket whose
  ``Origin`` is neither this server's own host nor the allowed CORS origin is refused with 403:
  without it any web page the user visits could POST "simple" requests (a multipart upload, an
  interrupt) to a server on their machine, since CORS only hides the answer, not the action.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from aiohttp import web

from realtime.api_errors import fail
from realtime.ice import is_loopback_host

log = logging.getLogger(__name__)

__all__ = ["access_middleware", "cors_middleware", "warn_if_exposed", "PROTECTED_PREFIXES", "token_matches"]

PROTECTED_PREFIXES = ("/api", "/offer", "/metrics", "/whip", "/whep")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
_ALLOW_HEADERS = "Authorization, Content-Type"
_EXPOSE_HEADERS = "Location, Retry-After, Link, ETag"


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "replace")).digest()


def token_matches(presented: str | None, token: str) -> bool:
    """Constant-time: the hashes are compared, so not even the token's length leaks."""
    return presented is not None and hmac.compare_digest(_digest(presented), _digest(token))


def is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def presented_token(request: web.Request) -> str | None:
    """The bearer token of the Authorization header, else (WebSocket upgrades only) ``?token=``."""
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if is_websocket(request):
        return request.query.get("token") or None
    return None


def _same_site(request: web.Request, origin: str, allowed: str | None) -> bool:
    if allowed is not None and (allowed == "*" or origin == allowed):
        return True
    return urlsplit(origin).netloc.lower() == (request.host or "").lower()


def access_middleware(token: str | None, *, cors_origin: str | None = None,
                      open_handlers: Iterable[Callable] = ()) -> Callable:
    """The token check (when ``token`` is set) and the cross-origin refusal, as one middleware."""
    token = token or None  # an empty LIPSTREAM_TOKEN is no token
    open_ = frozenset(open_handlers)
    allowed = cors_origin.rstrip("/") if cors_origin else None

    @web.middleware
    async def access(request: web.Request, handler):  # noqa: ANN001, ANN202 - aiohttp middleware
        origin = request.headers.get("Origin")
        if origin is not None and (request.method not in _SAFE_METHODS or is_websocket(request)) \
                and not _same_site(request, origin, allowed):
            raise fail(403, f"cross-origin request from {origin} refused (serve with --cors-origin {origin} "
                            "to allow that page)")
        if token is None or _is_open(request, open_):
            return await handler(request)
        presented = presented_token(request)
        if presented is None:
            raise fail(401, "this server needs a token: send 'Authorization: Bearer TOKEN' (a WebSocket may "
                            "add ?token=TOKEN instead)", **{"WWW-Authenticate": 'Bearer realm="lipstream"'})
        if not token_matches(presented, token):
            raise fail(401, "wrong token", **{"WWW-Authenticate": 'Bearer realm="lipstream", error="invalid_token"'})
        return await handler(request)

    return access


def _is_open(request: web.Request, open_handlers: frozenset) -> bool:
    if is_websocket(request) or _under(request.path, PROTECTED_PREFIXES):
        return False
    route = getattr(request.match_info, "route", None)
    return getattr(route, "handler", None) in open_handlers


def cors_middleware(origin: str | None) -> Callable:
    """CORS for exactly one origin (or ``*``); with ``None`` no CORS header is ever sent."""
    allowed = origin.rstrip("/") if origin else None

    def headers_for(request: web.Request) -> dict[str, str]:
        req_origin = request.headers.get("Origin")
        if allowed is None or req_origin is None or (allowed != "*" and req_origin != allowed):
            return {}
        return {"Access-Control-Allow-Origin": req_origin, "Vary": "Origin",
                "Access-Control-Expose-Headers": _EXPOSE_HEADERS}

    @web.middleware
    async def cors(request: web.Request, handler):  # noqa: ANN001, ANN202 - aiohttp middleware
        extra = headers_for(request)
        if extra and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(status=204, headers={**extra, "Access-Control-Allow-Methods": _ALLOW_METHODS,
                                                     "Access-Control-Allow-Headers": _ALLOW_HEADERS,
                                                     "Access-Control-Max-Age": "600"})
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(extra)
            raise
        if extra and not response.prepared:  # a WebSocket is prepared (and done) by now
            response.headers.update(extra)
        return response

    return cors


def warn_if_exposed(host: str, token: str | None) -> None:
    """A warning for a server reachable from other machines that anyone there may use."""
    token = token or None
    if token is None and not is_loopback_host(host):
        log.warning("serving on %s without a token: anyone who can reach this address can open sessions, "
                    "upload avatars and read /metrics; set --token or LIPSTREAM_TOKEN", host or "all addresses")
    elif token is not None and len(token) < 16:
        log.warning("the token is short (%d characters); use a long random one (e.g. `openssl rand -hex 24`)",
                    len(token))
