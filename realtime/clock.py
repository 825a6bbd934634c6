"""The one media clock a server process runs on, injected into the frame loop and the tracks.

Everything that paces media (the global 25 fps tick, the video and audio tracks, the silence fill
for late audio) asks this object for the time and sleeps through it, never through ``time`` or
``asyncio.sleep`` directly.  The wall clock serves; the manual clock lets a test step time by
hand, so pacing logic is checked exactly and instantly.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from typing import Protocol

__all__ = ["MediaClock", "ManualClock", "TickGrid", "WallClock", "wait_event_until"]


class MediaClock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic scale (origin arbitrary)."""

    async def sleep_until(self, t: float) -> None:
        """Return once ``now() >= t`` (at once if it already is)."""


class WallClock:
    """``time.monotonic`` with asyncio sleeps: what the server runs on."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, t: float) -> None:
        delay = t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class ManualClock:
    """A clock that moves only when :meth:`advance` is called; sleepers wake in time order."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._t

    async def sleep_until(self, t: float) -> None:
        if t <= self._t:
            await asyncio.sleep(0)  # still a suspension point, like a real sleep of 0
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (t, next(self._seq), fut))
        await fut

    def set(self, t: float) -> None:
        """Move time forward to ``t`` at once, for drivers without an event loop (offline render,
        unit tests of synchronous objects).  Refused while a sleeper would have to wake: use
        :meth:`advance` there."""
        if t < self._t:
            raise ValueError(f"a clock does not go back ({t} < {self._t})")
        if self._sleepers and self._sleepers[0][0] <= t:
            raise RuntimeError("tasks sleep until before that time: use `await clock.advance(dt)`")
        self._t = float(t)

    async def advance(self, dt: float) -> None:
        """Move time forward by ``dt``, waking each sleeper at its own time and letting it run.

        Pending tasks get to run first (and register their sleeps), so a task started just
        before ``advance`` sees time pass, as it would on a real clock.
        """
        end = self._t + dt
        await self._settle()
        while self._sleepers and self._sleepers[0][0] <= end:
            t, _, fut = heapq.heappop(self._sleepers)
            self._t = max(self._t, t)
            if not fut.done():
                fut.set_result(None)
            await self._settle()
        self._t = end

    @staticmethod
    async def _settle(rounds: int = 8) -> None:
        for _ in range(rounds):  # let woken tasks (and the tasks they start in turn) run
            await asyncio.sleep(0)


class TickGrid:
    """The process-wide 25 fps time grid: tick ``n`` falls at ``origin + n / fps``.

    The frame loop ticks on it and the tracks send on it, so a frame made on a tick and the
    audio delivered with it leave together, whatever the session's start time.
    """

    def __init__(self, origin: float, fps: float = 25.0) -> None:
        self.origin = float(origin)
        self.fps = float(fps)

    def time_of(self, n: int) -> float:
        return self.origin + n / self.fps

    def index_at(self, t: float) -> int:
        """The last tick at or before ``t``."""
        return math.floor((t - self.origin) * self.fps + 1e-9)

    def next_tick(self, t: float) -> float:
        """The first tick time at or after ``t``."""
        n = self.index_at(t)
        return self.time_of(n) if self.time_of(n) >= t - 1e-9 else self.time_of(n + 1)


async def wait_event_until(clock: MediaClock, event: asyncio.Event, deadline: float) -> bool:
    """Wait for ``event`` or the clock reaching ``deadline``; True when the event came first."""
    if event.is_set():
        return True
    if clock.now() >= deadline:
        return False
    got = asyncio.ensure_future(event.wait())
    timer = asyncio.ensure_future(clock.sleep_until(deadline))
    try:
        await asyncio.wait((got, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (got, timer):
            if not task.done():
                task.cancel()
    return event.is_set()
