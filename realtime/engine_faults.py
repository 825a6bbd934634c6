"""An engine that raises or hangs must not stall the server: the worker it runs on, and the record
of its faults.

:class:`RenderWorker` is the frame loop's one worker thread, an executor of its own rather than a
``ThreadPoolExecutor``: its thread is a daemon, so a call that never returns cannot hold up the
process's exit, and ``alive`` tells whether an abandoned worker's thread has come back yet.

:class:`EngineFaults` counts failed batches (``lipstream_engine_errors_total{kind="raised"}``)
and abandoned ones (``{kind="hung"}``, the ``lipstream_engine_abandoned_workers`` gauge while
the abandoned thread is still inside the engine) and logs them without flooding the log: the first
failure with its traceback, then at most one line per ``log_every_s`` while it keeps failing, and
one line when the engine works again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Executor, Future
from typing import Any, Callable

from realtime.metrics import ServerMetrics

log = logging.getLogger(__name__)

__all__ = ["RenderWorker", "EngineFaults"]


class RenderWorker(Executor):
    """One daemon thread running the submitted calls in order."""

    _count = 0

    def __init__(self, name: str = "lipstream-render") -> None:
        RenderWorker._count += 1
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"{name}-{RenderWorker._count}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        if self._closed:
            raise RuntimeError("the render worker is shut down")
        future: Future = Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args, kwargs = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; the thread exits once the call it is in (if any) returns."""
        if not self._closed:
            self._closed = True
            self._calls.put(None)
        if wait:
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class EngineFaults:
    def __init__(self, metrics: ServerMetrics | None = None, *, log_every_s: float = 10.0) -> None:
        self.metrics = metrics
        self.log_every_s = log_every_s
        self.raised = 0  # failed batches, all time
        self.hung = 0  # abandoned calls, all time
        self.returned = 0  # abandoned calls that came back
        self._failing = 0  # failures since the engine last worked
        self._since = 0.0
        self._last_log = 0.0
        self._unlogged = 0

    def failed(self, exc: BaseException) -> None:
        """A batch raised (the engine, or compositing its output): its frames are not delivered."""
        self.raised += 1
        if self.metrics:
            self.metrics.engine_errors.labels("raised").inc()
        self._fault(f"an engine call failed: {exc!r}; sessions repeat their last frame", exc)

    def abandoned(self, after_s: float) -> None:
        """A call ran past the deadline: its worker thread is left to finish, a fresh one takes over."""
        self.hung += 1
        if self.metrics:
            self.metrics.engine_errors.labels("hung").inc()
            self.metrics.engine_abandoned.set(1)
        self._fault(f"an engine call has not returned after {after_s:.1f} s; abandoned its worker thread, "
                    "a new one carries on; sessions repeat their last frame", None)

    def came_back(self, after_s: float) -> None:
        """An abandoned call returned (its frames are dropped); its thread exits."""
        self.returned += 1
        if self.metrics:
            self.metrics.engine_abandoned.set(0)
        log.warning("an abandoned engine call returned after %.1f s (its frames were dropped)", after_s)

    def ok(self) -> None:
        """A batch rendered: if the engine had been failing, say it recovered."""
        if self._failing:
            log.warning("the engine works again after %d failed or abandoned call(s) in %.1f s", self._failing,
                        time.monotonic() - self._since)
            self._failing = self._unlogged = 0

    def _fault(self, message: str, exc: BaseException | None) -> None:
        now = time.monotonic()
        if self._failing == 0:
            self._since = now
        self._failing += 1
        if self._failing == 1 or now - self._last_log >= self.log_every_s:
            more = f" ({self._unlogged} more fault(s) since the last line)" if self._unlogged else ""
            log.error("%s%s", message, more, exc_info=exc if self._failing == 1 else None)
            self._last_log, self._unlogged = now, 0
        else:
            self._unlogged += 1
