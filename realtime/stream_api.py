"""Streaming speech in: PCM over a WebSocket into a presenter session, and what became of it.

``GET /api/sessions/{id}/stream?rate=16000|24000|48000`` upgrades to a WebSocket:

- **in, binary**: PCM16 little-endian mono at the declared rate (any chunk size, even byte count);
- **in, text**: JSON control messages ``{"type": "flush"}`` (end of a segment: its last sample is
  queued; ``speech_ended`` follows once it has played) and ``{"type": "clear"}`` (interrupt: drop
  what is queued and unplayed; through :meth:`SessionRegistry.interrupt`, i.e. the frame loop's
  typed ``Interrupt`` event, applied at the next tick);
- **out, text**: JSON events ``session`` (on open), ``speech_started``, ``speech_ended``,
  ``interrupted``, ``backpressure`` / ``resume``, ``error``, ``closed``.

Segment timing comes from frame delivery: the session's audio sink is wrapped in a tap that sees
every block of speech handed to the tracks together with its video frame (``Session.on_frame``),
and the presenter source reports where each segment's first and last sample landed on the
timeline (``PresenterSource.mark_start`` / ``mark_end``).  ``speech_started`` is sent when the
frame holding a segment's first sample is handed to the tracks, ``speech_ended`` when the one
holding its last sample is.

Back-pressure: at most ``max_buffer_s`` (default 3 s) of speech waits unplayed.  When a chunk fills
it the server sends ``{"type": "backpressure", "queued_s", "max_buffer_s"}``; a sender should pause
until ``{"type": "resume", "queued_s"}`` (sent once the queue is below half).  The server never
stops reading the socket (a ``clear`` must not wait behind buffered audio): audio that arrives while
the buffer is full is dropped and reported in an ``error`` event (``"dropped_s"``).

:class:`~realtime.speech_stream.SpeechStream` is the transport-free part (the WebSocket handler and
the in-process integrations in ``realtime/integrations`` share it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from realtime.api_errors import fail
from realtime.speech_stream import DEFAULT_MAX_BUFFER_S, RATES, SpeechStream, StreamError

if TYPE_CHECKING:
    from realtime.session import Session

log = logging.getLogger(__name__)

__all__ = ["SpeechStream", "StreamError", "add_routes", "RATES", "DEFAULT_MAX_BUFFER_S", "MAX_MESSAGE_BYTES"]

MAX_MESSAGE_BYTES = 1 << 20  # one binary message: ~10 s at 48 kHz; larger ones close the socket (1009)
K_STREAMS = web.AppKey("lipstream_streams", dict)


def _parse_rate(request: web.Request) -> int:
    raw = request.query.get("rate", "16000")
    try:
        rate = int(raw)
    except ValueError:
        rate = -1
    if rate not in RATES:
        raise fail(400, f"rate must be one of {', '.join(map(str, RATES))} (Hz, PCM16 mono), got {raw!r}")
    return rate


def add_routes(app: web.Application, state: Any, *, max_buffer_s: float = DEFAULT_MAX_BUFFER_S) -> None:
    """``GET /api/sessions/{sid}/stream`` on ``app``; ``state`` is the server's ServerState."""
    streams: dict[str, SpeechStream] = {}
    app[K_STREAMS] = streams

    async def stream(request: web.Request) -> web.StreamResponse:
        session = state.session(request)  # 404
        if session.has_mic:
            raise fail(409, "this session is driven by its microphone; streamed speech is for presenter sessions")
        rate = _parse_rate(request)
        if session.id in streams:
            raise fail(409, "this session already has a speech stream open; close it first")
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES)
        if not ws.can_prepare(request).ok:
            raise fail(400, "this route is a WebSocket: send an Upgrade request (ws://.../stream?rate=16000)")
        events: asyncio.Queue[dict | None] = asyncio.Queue()
        speech = SpeechStream(session, interrupt=lambda: state.sessions.interrupt(session),
                              on_event=events.put_nowait, rate=rate, max_buffer_s=max_buffer_s)
        streams[session.id] = speech
        try:
            await ws.prepare(request)
            events.put_nowait({"type": "session", "session_id": session.id, "rate": rate,
                               "max_buffer_s": max_buffer_s, "fps": session.timeline.fps})
            writer = asyncio.ensure_future(_write_events(ws, events))
            watcher = asyncio.ensure_future(_watch_session(session, ws, events))
            try:
                await _read(ws, speech, events)
            finally:
                watcher.cancel()
                events.put_nowait(None)
                await asyncio.gather(writer, watcher, return_exceptions=True)
                if not ws.closed:
                    await ws.close()
        finally:
            speech.close()
            if streams.get(session.id) is speech:
                del streams[session.id]
        return ws

    app.router.add_get("/api/sessions/{sid}/stream", stream)


async def _read(ws: web.WebSocketResponse, speech: SpeechStream, events: asyncio.Queue) -> None:
    async for msg in ws:
        if speech.session.closed:
            return
        try:
            if msg.type == WSMsgType.BINARY:
                speech.push_pcm16(msg.data)
            elif msg.type == WSMsgType.TEXT:
                _control(speech, msg.data)
            elif msg.type == WSMsgType.ERROR:
                log.info("stream of session %s: %s", speech.session.id, ws.exception())
                return
        except StreamError as exc:
            events.put_nowait({"type": "error", "error": str(exc)})
        except Exception:  # one bad message must not end the stream, the session or the server
            log.exception("stream of session %s: message failed", speech.session.id)
            events.put_nowait({"type": "error", "error": "internal error handling that message"})


def _control(speech: SpeechStream, text: str) -> None:
    try:
        msg = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StreamError(f"text messages are JSON control messages ({exc.msg} at {exc.pos}); "
                          "send audio as binary messages") from None
    kind = msg.get("type") if isinstance(msg, dict) else None
    if kind == "flush":
        speech.flush()
    elif kind == "clear":
        speech.clear()
    else:
        raise StreamError(f'unknown control message {text[:80]!r}: expected {{"type": "flush"}} or {{"type": "clear"}}')


async def _write_events(ws: web.WebSocketResponse, events: asyncio.Queue) -> None:
    while True:
        event = await events.get()
        if event is None or ws.closed:
            return
        try:
            await ws.send_json(event)
        except (ConnectionError, RuntimeError):
            return


async def _watch_session(session: Session, ws: web.WebSocketResponse, events: asyncio.Queue) -> None:
    """Close the socket when the session ends (DELETE, the peer leaving, shutdown)."""
    while not session.closed:
        await asyncio.sleep(0.2)
    events.put_nowait({"type": "closed", "reason": "the session ended"})
    await asyncio.sleep(0.05)  # let the writer send it
    await ws.close(code=1001, message=b"session ended")
