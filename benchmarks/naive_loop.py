"""The naive frame path, the concurrency benchmark's baseline: a timer and a batch-1 call per session.

What a straightforward server would do: every session gets its **own 25 fps timer**, started when
the session starts (so the sessions' ticks fall at unrelated phases), and its own
:class:`~realtime.frame_step.FrameStep` holding only that session (batch size 1, its own
renderer: scratch buffers are not shared between threads).  On its tick a session runs the same
step as the batched loop — events, feed, skip-stale, plan — and renders on a **thread pool**
(one thread per core).  A session has at most one frame in flight, so frames reach its track in
order; a tick that finds it still in flight plans nothing (``lipstream_ticks_busy``).

Everything but the scheduling is the batched loop's own code, so the comparison measures the
scheduling alone.  Bias to keep in mind: a session's timer phase is unrelated to the grid its
tracks send on, so a frame can wait up to one slot in the track; that shows in latency, not in
CPU or fps.  ``python -m benchmarks.serve --scheduler naive`` serves with it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from engines.avatar import Avatar
from engines.base import Engine
from realtime.clock import MediaClock, TickGrid
from realtime.frame_step import EndSession, FrameStep, Job, SessionEvent
from realtime.metrics import ServerMetrics
from realtime.session import Session

log = logging.getLogger(__name__)

__all__ = ["NaiveFrameLoop"]


@dataclass
class _Lane:
    step: FrameStep
    task: asyncio.Task | None = None
    inflight: asyncio.Future | None = None
    ticks: int = 0


class NaiveFrameLoop:
    """The server's frame-loop surface (see ``realtime.frame_loop.FrameLoop``), one lane per session."""

    def __init__(self, engine: Engine, clock: MediaClock, metrics: ServerMetrics | None = None, *,
                 max_lag: int = 2, idle_motion: bool = True, workers: int | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.metrics = metrics
        self.max_lag = max_lag
        self.idle_motion = idle_motion
        self.fps = engine.convention.fps
        self.grid = TickGrid(clock.now(), self.fps)  # the tracks send on it, as with the batched loop
        self.ticks = 0
        # one thread per core: more would only add contention, fewer would serialise sessions
        self._pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="lipstream-naive")
        self._avatars: dict[str, Avatar] = {}
        self._placeholders = FrameStep(engine, idle_motion=idle_motion)  # renderers for placeholders only
        self._lanes: dict[str, _Lane] = {}
        self._running = False

    def add_avatar(self, avatar: Avatar) -> np.ndarray:
        self._avatars.setdefault(avatar.name, avatar)
        return self._placeholders.add_avatar(avatar)

    def drop_avatar(self, name: str) -> None:
        if any(s.avatar_name == name for lane in self._lanes.values() for s in lane.step.sessions.values()):
            raise RuntimeError(f"avatar {name!r} is still in use")
        self._avatars.pop(name, None)
        self._placeholders.drop_avatar(name)

    def placeholder(self, avatar_name: str) -> np.ndarray:
        return self._placeholders.renderers[avatar_name].placeholder()

    def add(self, session: Session) -> None:
        if session.id in self._lanes:
            raise KeyError(f"session {session.id} already added")
        step = FrameStep(self.engine, self.metrics, max_batch=1, max_lag=self.max_lag, idle_motion=self.idle_motion)
        step.add_avatar(self._avatars[session.avatar_name])
        step.add(session)
        lane = self._lanes[session.id] = _Lane(step)
        if self._running:
            lane.task = asyncio.ensure_future(self._run_lane(session.id, lane))

    def post(self, event: SessionEvent) -> None:
        lane = self._lanes.get(event.session_id)
        if lane is None:
            return
        lane.step.post(event)
        if lane.inflight is None:  # between this lane's steps: apply at once
            lane.step.apply_events()
        if isinstance(event, EndSession):  # nothing else will tick it: apply now, stop its timer
            lane.step.apply_events()
            del self._lanes[event.session_id]
            if lane.task is not None:
                lane.task.cancel()

    def __len__(self) -> int:
        return len(self._lanes)

    def start(self) -> None:
        self._running = True
        for sid, lane in self._lanes.items():
            if lane.task is None:
                lane.task = asyncio.ensure_future(self._run_lane(sid, lane))

    async def stop(self) -> None:
        self._running = False
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self._lanes.values():
            lane.task = None
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown, True)

    async def _run_lane(self, sid: str, lane: _Lane) -> None:
        origin = self.clock.now()  # this session's own phase
        n = 1
        while True:
            await self.clock.sleep_until(origin + n / self.fps)
            now = self.clock.now()
            try:
                self.tick_lane(lane, now)
            except Exception:  # one bad tick must not end the session's stream
                log.exception("naive frame loop tick failed for session %s", sid)
            n = max(n + 1, math.floor((now - origin) * self.fps + 1e-9) + 1)  # a stalled loop skips ticks

    def tick(self, now: float) -> None:
        """Tick every lane at ``now`` (tests stepping time by hand; in service each lane's timer does)."""
        for lane in list(self._lanes.values()):
            self.tick_lane(lane, now)

    def tick_lane(self, lane: _Lane, now: float) -> None:
        self.ticks += 1
        lane.ticks += 1
        lane.step.begin(now)
        if lane.inflight is not None:
            if self.metrics:
                self.metrics.ticks_busy.inc()
            return
        job = lane.step.plan(now)
        if job is None:
            return
        fut = lane.inflight = asyncio.get_running_loop().run_in_executor(self._pool, lane.step.render, job)
        fut.add_done_callback(functools.partial(self._on_rendered, lane, job))

    async def drain(self) -> None:
        """Wait until no lane has a frame in flight (tests on a manual clock)."""
        while pending := [lane.inflight for lane in self._lanes.values() if lane.inflight is not None]:
            await asyncio.wait(pending)
            await asyncio.sleep(0)

    def lane_ticks(self) -> dict[str, int]:
        """Ticks each live session's own timer has run (tests)."""
        return {sid: lane.ticks for sid, lane in self._lanes.items()}

    def busy(self, session_id: str) -> bool:
        lane = self._lanes.get(session_id)
        return lane is not None and lane.inflight is not None

    def _on_rendered(self, lane: _Lane, job: Job, fut: asyncio.Future) -> None:
        lane.inflight = None
        lane.step.deliver_result(job, fut, self.clock.now())
        lane.step.apply_events()
