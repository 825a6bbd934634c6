"""The real server on 127.0.0.1 in a thread of its own, for tests that talk to it synchronously
(``requests``, schemathesis) while aiortc clients run on the server's event loop.  Not a test file.

    with LiveServer(engine, token="...") as srv:
        requests.get(srv.base + "/healthz")
        client = srv.run(connect(srv.base, http))   # coroutines run on the server's loop
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any, Coroutine

import aiohttp

from server_harness import serving


class LiveServer:
    def __init__(self, engine, **config: Any) -> None:  # noqa: ANN001 - engines.base.Engine
        self.engine = engine
        self.config = config
        self.base = ""
        self.app = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready: Future = Future()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="live-server", daemon=True)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with serving(self.engine, **self.config) as (base, app):
                self.base, self.app = base, app
                self._ready.set_result(base)
                await self._stop.wait()
        except BaseException as exc:  # a failed start must not leave the test waiting
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def __enter__(self) -> "LiveServer":
        self._thread.start()
        self._ready.result(timeout=120)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def run(self, coro: Coroutine, timeout: float = 60) -> Any:
        """Run ``coro`` on the server's event loop; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def state(self):  # noqa: ANN201 - realtime.server.ServerState
        from realtime.server import K_STATE

        return self.app[K_STATE]

    def http(self, token: str | None = None) -> aiohttp.ClientSession:
        """An aiohttp session (to use on the server's loop) that sends ``token`` as a bearer token."""
        return aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"} if token else None)
