"""Client errors as JSON: every failure an API caller meets is ``{"error": message}`` with a 4xx
(or 503) status, never a stack trace; an unexpected exception is logged and answered 500."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

log = logging.getLogger(__name__)

__all__ = ["ApiError", "fail", "json_errors", "read_body"]


class ApiError(Exception):
    """An error a client caused: becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def fail(status: int, message: str, **headers: str) -> ApiError:
    return ApiError(status, message, headers or None)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler):  # noqa: ANN001, ANN201 - aiohttp middleware
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


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or 413 past ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise fail(413, f"request body too large ({request.content_length} bytes; the limit is {limit})")
    # StreamReader.read(n) returns what has arrived so far, not n bytes: a body sent in several
    # packets (a browser's upload) must be read until EOF.
    data = bytearray()
    while len(data) <= limit:
        chunk = await request.content.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise fail(413, f"request body too large (over {limit} bytes)")
    return bytes(data)
