"""The kiosk's HTTP API: speech pushed to the presenter (the server's JSON errors and limits)."""

from __future__ import annotations

import asyncio
import logging

from realtime.kiosk.config import KioskError

log = logging.getLogger(__name__)

__all__ = ["start_http"]


async def start_http(kiosk):  # noqa: ANN001, ANN201 - a Kiosk in, an aiohttp AppRunner out
    """The kiosk's own small HTTP API (POST /speak, POST /interrupt, GET /status) on ``--http``."""
    from aiohttp import web

    from realtime.api_errors import fail, json_errors, read_body
    from realtime.audio_io import AudioFormatError, load_audio
    from realtime.session import SpeechQueueFull

    max_bytes = 16 * 1024 * 1024

    async def speak(request: web.Request) -> web.Response:
        ctype = request.content_type
        if not (ctype.startswith("audio/") or ctype == "application/octet-stream"):
            raise fail(415, f"send speech as an audio file (audio/wav, ...), not {ctype or 'no content type'}")
        body = await read_body(request, max_bytes)
        try:
            wav = await asyncio.get_running_loop().run_in_executor(None, load_audio, body)
        except AudioFormatError as exc:
            raise fail(400, str(exc)) from None
        try:
            queued = kiosk.speak(wav)
        except SpeechQueueFull as exc:
            raise fail(413, str(exc)) from None
        return web.json_response({"duration_s": wav.size / kiosk.engine.convention.sample_rate,
                                  "queued_s": queued})

    async def interrupt(request: web.Request) -> web.Response:
        kiosk.interrupt()
        return web.json_response({"interrupted": True})

    async def status(request: web.Request) -> web.Response:
        return web.json_response(kiosk.status())

    app = web.Application(middlewares=[json_errors], client_max_size=max_bytes)
    app.router.add_post("/speak", speak)
    app.router.add_post("/interrupt", interrupt)
    app.router.add_get("/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, kiosk.config.http_host, kiosk.config.http_port).start()
    except OSError as exc:
        raise KioskError(f"--http {kiosk.config.http_port}: cannot listen on "
                         f"{kiosk.config.http_host}:{kiosk.config.http_port} ({exc.strerror or exc})") from None
    log.info("kiosk HTTP API on http://%s:%d/ (POST /speak, POST /interrupt, GET /status)",
             kiosk.config.http_host, kiosk.config.http_port)
    return runner
