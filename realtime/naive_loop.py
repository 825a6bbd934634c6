"""The naive frame path: one timer and one engine call per session per frame (benchmark baseline).

``lipstream serve --scheduler naive`` runs this instead of :class:`~realtime.frame_loop.FrameLoop`.
It exists so ``benchmarks/bench_concurrency.py`` can measure, in the same run and on the same
server, what the batched design buys; it is not meant for serving.

What a straightforward server would do, and what this does:

- every session gets its **own 25 fps timer**, started when the session starts (so the sessions'
  ticks fall at unrelated phases, not on one shared tick);
- on its tick a session brings its timeline up to now (``Session.feed``), skips ahead if it is
  more than ``max_lag`` frames behind, and plans its one next frame with a
  :class:`~realtime.scheduler.FrameScheduler` of its own (batch size 1);
- that frame goes to a **thread pool** (``workers`` threads, default one per core): one
  ``engine.run`` with a batch of 1, then composite + idle motion + I420 on the session's own
  :class:`~realtime.frame_loop.AvatarRenderer` (a renderer's scratch buffers are not shared
  between threads);
- when it is done the frame is handed to the session (video track + its speech), exactly as the
  batched loop does.

Kept identical to the batched loop, so that the comparison measures the scheduling alone: the
session timeline, the audio front-end and its windows, the engine, the compositor, the tracks
(which send on the loop's shared :class:`~realtime.clock.TickGrid`), the ``max_lag`` skip, the
metrics (latency stages included: ``tick_wait`` is then the wait for the session's own timer),
and the interrupt semantics (a new epoch; results in flight for the old timeline are
dropped on arrival).  A session has at most one frame in flight, so frames reach its track in
order; a tick that finds it still in flight plans nothing (``lipstream_ticks_busy``) and the
track repeats its last frame.

Bias to keep in mind: a session's timer phase is unrelated to the grid its tracks send on, so a
frame can wait up to one slot in the track (the batched loop renders right on the grid).  That
is part of what "no shared tick" costs, but it shows in latency, not in CPU or fps.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from engines.base import Engine
from export.avatar import Avatar
from realtime.clock import MediaClock
from realtime.frame_loop import AvatarRenderer, FrameLoop
from realtime.metrics import ServerMetrics
from realtime.scheduler import Batch, FrameScheduler
from realtime.session import FrameTiming, Session

log = logging.getLogger(__name__)

__all__ = ["NaiveFrameLoop"]


@dataclass
class _Lane:
    """One session's private pipeline: its timer, scheduler, renderer and in-flight flag."""

    session: Session
    renderer: AvatarRenderer
    scheduler: FrameScheduler
    epoch: int = 0
    busy: bool = False
    task: asyncio.Task | None = None
    ticks: int = 0


class NaiveFrameLoop(FrameLoop):
    """Per-session timers and batch-1 engine calls on a thread pool; the server's FrameLoop surface.

    Inherits ``add_avatar``, ``renderers`` (one per avatar, used for placeholders), ``grid``,
    ``fps``, ``max_lag``, ``metrics`` and ``ticks`` (here: the sum of every session's own ticks).
    The inherited global ``scheduler`` stays empty; each session has its own.
    """

    def __init__(self, engine: Engine, clock: MediaClock, metrics: ServerMetrics | None = None, *,
                 max_lag: int = 2, workers: int | None = None) -> None:
        super().__init__(engine, clock, metrics, max_batch=1, max_lag=max_lag)
        self._worker.shutdown(wait=False)  # the batched loop's single worker (no thread started yet)
        # one thread per core: more would only add contention, fewer would serialise sessions
        self.workers = workers or os.cpu_count() or 1
        self._worker = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="lipstream-naive")
        self._avatars: dict[str, tuple[Avatar, bool]] = {}
        self._lanes: dict[str, _Lane] = {}
        self._running = False

    # -- sessions ---------------------------------------------------------------------------
    def add_avatar(self, avatar: Avatar, idle: bool = True) -> np.ndarray:
        rows = super().add_avatar(avatar, idle)
        self._avatars.setdefault(avatar.name, (avatar, idle))
        return rows

    def add(self, session: Session) -> None:
        if session.id in self._lanes:
            raise KeyError(f"session {session.id} already added")
        avatar, idle = self._avatars[session.avatar_name]
        lane = _Lane(session, AvatarRenderer(avatar, idle), self._new_scheduler(session))
        self._lanes[session.id] = lane
        if self._running:
            self._start_lane(lane)

    def remove(self, session: Session) -> None:
        lane = self._lanes.pop(session.id, None)
        if lane is not None and lane.task is not None:
            lane.task.cancel()  # a result still in flight is dropped on arrival (lane gone)

    def reset(self, session: Session) -> None:
        """Interrupt: restart the timeline; the frame in flight (if any) belongs to the old epoch."""
        lane = self._lanes.get(session.id)
        if lane is None:
            return
        session.restart()
        lane.epoch += 1
        lane.scheduler = self._new_scheduler(session)

    def _new_scheduler(self, session: Session) -> FrameScheduler:
        scheduler = FrameScheduler(max_batch=1, window=self.engine.manifest.window)
        scheduler.add(session.id, session.front, session.rows, first_frame=0)
        return scheduler

    def __len__(self) -> int:
        return len(self._lanes)

    # -- the per-session timers -------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        for lane in self._lanes.values():
            if lane.task is None:
                self._start_lane(lane)

    def _start_lane(self, lane: _Lane) -> None:
        lane.task = asyncio.ensure_future(self._run_lane(lane))

    async def stop(self) -> None:
        self._running = False
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self._lanes.values():
            lane.task = None
        await asyncio.get_running_loop().run_in_executor(None, self._worker.shutdown, True)

    async def _run_lane(self, lane: _Lane) -> None:
        origin = self.clock.now()  # this session's own phase
        n = 1
        while True:
            await self.clock.sleep_until(origin + n / self.fps)
            now = self.clock.now()
            try:
                self.tick_session(lane.session.id, now)
            except Exception:  # one bad tick must not end the session's stream
                log.exception("naive frame loop tick failed for session %s", lane.session.id)
            n = max(n + 1, math.floor((now - origin) * self.fps + 1e-9) + 1)  # a stalled loop skips ticks

    def tick(self, now: float) -> None:
        """Tick every session at ``now`` (tests stepping time by hand; in service each session's
        own timer calls :meth:`tick_session`)."""
        for sid in list(self._lanes):
            self.tick_session(sid, now)

    def tick_session(self, session_id: str, now: float) -> None:
        lane = self._lanes.get(session_id)
        if lane is None:
            return
        self.ticks += 1
        lane.ticks += 1
        session = lane.session
        session.feed(now)
        if lane.busy:
            if self.metrics:
                self.metrics.ticks_busy.inc()
            return
        self._skip_stale(lane)
        batch = lane.scheduler.plan(max_per_session=1)
        if batch is None:
            return
        lane.busy = True
        fut = asyncio.get_running_loop().run_in_executor(
            self._worker, self._render_one, lane.renderer, lane.scheduler, batch, now - self.grid.origin)
        fut.add_done_callback(functools.partial(self._on_rendered_one, lane, lane.epoch, now))

    def _skip_stale(self, lane: _Lane) -> None:
        session = lane.session
        ready = session.front.frames_ready()
        nxt = lane.scheduler.next_frame(session.id)
        if ready - nxt > self.max_lag:
            skipped = lane.scheduler.skip_to(session.id, ready - 1)
            session.stats.frames_skipped += skipped
            if self.metrics:
                self.metrics.frames_skipped.inc(skipped)

    # -- the pool ---------------------------------------------------------------------------
    def _render_one(self, renderer: AvatarRenderer, scheduler: FrameScheduler, batch: Batch,
                    t: float) -> list[tuple[int, np.ndarray, np.ndarray, float, float]]:
        """Pool thread: one engine call (batch of 1) + composite + I420 for one session's frame."""
        t0 = time.perf_counter()
        output = self.engine.run(batch.mel, batch.rows, batch.gate)
        infer = time.perf_counter() - t0
        out = []
        for r in scheduler.complete(batch, output):
            t1 = time.perf_counter()
            planes = renderer.frame(r.avatar_frame, r.crop, t)
            out.append((r.frame, planes, np.array(r.params), infer, time.perf_counter() - t1))
        if self.metrics:
            self.metrics.inference.observe(infer)
            self.metrics.batch_size.observe(len(batch))
            for item in out:
                self.metrics.composite.observe(item[4])
        return out

    def _on_rendered_one(self, lane: _Lane, epoch: int, planned_at: float, fut: asyncio.Future) -> None:
        """Event loop: deliver the frame unless the session left or was interrupted meanwhile."""
        lane.busy = False
        rendered_at = self.clock.now()
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.error("rendering a frame for session %s failed: %r", lane.session.id, exc)
            return
        session = lane.session
        if self._lanes.get(session.id) is not lane or lane.epoch != epoch or session.closed:
            return
        for frame, planes, params, infer_s, composite_s in fut.result():
            session.on_frame(frame, planes, params, FrameTiming(planned_at, infer_s, composite_s, rendered_at))
