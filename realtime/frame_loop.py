"""The one 25 fps tick of the whole process: every session's next frame in one batched call.

On each tick of the shared :class:`~realtime.clock.TickGrid` the loop runs the
:class:`~realtime.frame_step.FrameStep`: ``begin`` and ``plan`` on the event loop, ``render`` on
ONE worker thread (never on the event loop), ``deliver`` back on the event loop.  If the worker is
still busy at a tick, that tick plans nothing (counted): the tracks repeat their last frame, and
the next free tick takes the newest frames.  A late inference never delays a tick.

``render_when="window"`` also renders *between* ticks: when mic audio completes a session's next
window, a step runs after ``coalesce_s`` (so sessions whose windows complete together share the
call), and again as soon as the worker frees up while frames are ready.  The tick stays, for
presenter sessions and the silence fill.  It removes the wait for the next tick (about half a
frame on average) from mic-to-mouth, at the price of smaller batches.

Engine faults (``realtime/engine_faults.py``): a batch that raises delivers nothing (counted,
logged): the tracks repeat their last frame and the next tick tries again.  A call still running
``engine_deadline_s`` after it started is abandoned: its job is marked so that whatever it returns
is dropped, its worker thread is left to finish on its own, and a fresh worker takes the next
ticks.  At most one abandoned thread exists at a time: while it has not come back, a second hung
call is waited for (ticks stay busy) rather than abandoned too.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from engines.avatar import Avatar
from engines.base import Engine
from realtime.clock import MediaClock, TickGrid
from realtime.engine_faults import RenderWorker
from realtime.frame_step import FrameStep, Job, SessionEvent
from realtime.metrics import ServerMetrics
from realtime.session import Session

log = logging.getLogger(__name__)

__all__ = ["FrameLoop"]


class FrameLoop:
    def __init__(self, engine: Engine, clock: MediaClock, metrics: ServerMetrics | None = None, *,
                 max_batch: int = 32, max_lag: int = 2, idle_motion: bool = True, render_when: str = "tick",
                 coalesce_s: float = 0.004, engine_deadline_s: float = 1.0) -> None:
        if render_when not in ("tick", "window"):
            raise ValueError(f"render_when must be 'tick' or 'window', not {render_when!r}")
        self.render_when = render_when
        self.coalesce_s = coalesce_s
        self.kicks = 0  # steps run between ticks (render_when="window")
        self._kick_handle: asyncio.Handle | None = None
        self.clock = clock
        self.metrics = metrics
        self.step = FrameStep(engine, metrics, max_batch=max_batch, max_lag=max_lag, idle_motion=idle_motion)
        self.grid = TickGrid(clock.now(), engine.convention.fps)
        self.ticks = 0
        self.engine_deadline_s = engine_deadline_s  # a call running longer is abandoned
        self._worker = RenderWorker()
        self._abandoned: RenderWorker | None = None  # the worker left inside a hung call, until it returns
        self._inflight: asyncio.Future | None = None
        self._inflight_job: Job | None = None
        self._inflight_since = 0.0
        self._task: asyncio.Task | None = None

    # -- what the server asks of a frame loop ------------------------------------------------
    def add_avatar(self, avatar: Avatar) -> np.ndarray:
        return self.step.add_avatar(avatar)

    def drop_avatar(self, name: str) -> None:
        self.step.drop_avatar(name)

    def placeholder(self, avatar_name: str) -> np.ndarray:
        return self.step.renderers[avatar_name].placeholder()

    def add(self, session: Session) -> None:
        self.step.add(session)
        if self.render_when == "window":
            session.on_heard = self._heard

    def _heard(self) -> None:
        """Mic audio arrived for some session: render soon if it completed a window."""
        if self._kick_handle is None and self._inflight is None and self.step.has_ready():
            aio = asyncio.get_running_loop()
            self._kick_handle = aio.call_later(self.coalesce_s, self._kick) if self.coalesce_s > 0 \
                else aio.call_soon(self._kick)

    def _kick(self) -> None:
        self._kick_handle = None
        if self._inflight is None:
            self.kicks += 1
            self._step(self.clock.now())

    def post(self, event: SessionEvent) -> None:
        """Queue an interrupt or an end; with no batch in flight it applies at once (between steps),
        else right after that batch is delivered — never later than the next tick."""
        self.step.post(event)
        if self._inflight is None:
            self.step.apply_events()

    def __len__(self) -> int:
        return len(self.step)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._inflight is not None:  # possibly hung: its daemon thread is not waited for
            self._worker.shutdown(wait=False)
        else:
            await asyncio.get_running_loop().run_in_executor(None, self._worker.shutdown, True)

    async def _run(self) -> None:
        n = self.grid.index_at(self.clock.now()) + 1
        while True:
            await self.clock.sleep_until(self.grid.time_of(n))
            now = self.clock.now()
            try:
                self.tick(now)
            except Exception:  # one bad tick must not end the stream for everyone
                log.exception("frame loop tick failed")
            n = max(n + 1, self.grid.index_at(now) + 1)  # ticks missed by a stalled loop are skipped

    def tick(self, now: float) -> None:
        self.ticks += 1
        if self._inflight is not None and now - self._inflight_since > self.engine_deadline_s:
            self._abandon(now)
        if self._inflight is not None:
            self.step.begin(now)
            if self.metrics and len(self.step):
                self.metrics.ticks_busy.inc()
            return
        self._step(now)

    def _step(self, now: float) -> None:
        self.step.begin(now)
        job = self.step.plan(now)
        if job is None:
            return
        self._inflight_job, self._inflight_since = job, now
        fut = self._inflight = asyncio.get_running_loop().run_in_executor(self._worker, self.step.render, job)
        fut.add_done_callback(lambda f: self._on_rendered(job, f))

    async def drain(self) -> None:
        """Wait until the batch in flight (if any) is delivered: tests on a manual clock use it
        instead of sleeping while the worker thread runs."""
        while self._inflight is not None:
            await asyncio.wait([self._inflight])
            await asyncio.sleep(0)  # the done callback (delivery) runs first

    def _abandon(self, now: float) -> None:
        """The call in flight is past its deadline: leave its thread to finish, carry on with a new one
        — unless an earlier abandoned thread is still out (never more than one)."""
        if self._abandoned is not None and self._abandoned.alive:
            return
        self._inflight_job.abandoned = True
        self._worker.shutdown(wait=False)
        self._abandoned, self._worker = self._worker, RenderWorker()
        self._inflight = self._inflight_job = None
        self.step.faults.abandoned(now - self._inflight_since)

    def _on_rendered(self, job: Job, fut: asyncio.Future) -> None:
        if job.abandoned:
            self.step.faults.came_back(self.clock.now() - job.planned_at)
            return
        self._inflight = self._inflight_job = None
        self.step.deliver_result(job, fut, self.clock.now())
        self.step.apply_events()  # posted while the batch was in flight
        if self.render_when == "window" and self.step.has_ready():  # frames became ready meanwhile
            self._heard()
