"""The one 25 fps tick of the whole process: every session's next frame in one batched call.

Each tick, on the event loop:

1. every session's timeline is brought up to now (``Session.feed``: presenter speech, or silence
   in place of late mic audio), so no session can stall the clock;
2. a session more than ``max_lag`` frames behind skips to its newest ready frame (latency over
   smoothness; the skipped frames' speech is still sent);
3. ``FrameScheduler.plan`` gathers one ready frame per session into a batch;
4. the batch goes to ONE worker thread: ``engine.run`` + compositing (+ idle motion for a still
   avatar) + ``to_i420`` — never on the event loop;
5. when the worker is done, each frame is delivered to its session (video track + its speech).

If the worker is still busy at a tick, that tick plans nothing (counted): the tracks repeat their
last frame, and the next free tick takes the newest frames.  A late inference never delays a tick.

Sessions are scheduled under a key ``"{id}#{epoch}"``; an interrupt bumps the epoch, so results
of a batch that was in flight for the old timeline are dropped on arrival.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from engines.base import Engine
from export.avatar import Avatar
from realtime.clock import MediaClock, TickGrid
from realtime.compositor import Compositor, to_i420
from realtime.idle_motion import IdleMotion
from realtime.metrics import ServerMetrics
from realtime.scheduler import Batch, FrameScheduler
from realtime.session import FrameTiming, Session

log = logging.getLogger(__name__)

__all__ = ["FrameLoop", "AvatarRenderer"]


class AvatarRenderer:
    """Everything per avatar the worker needs to turn a crop into a frame (worker thread only)."""

    def __init__(self, avatar: Avatar, idle: bool = True) -> None:
        self.compositor = Compositor(avatar)
        h, w = avatar.frames.shape[1:3]
        self.idle = IdleMotion(h, w) if idle and avatar.n_frames == 1 else None

    def frame(self, avatar_frame: int, crop: np.ndarray, t: float) -> np.ndarray:
        rgb = self.compositor.compose(avatar_frame, crop)
        if self.idle is not None:
            rgb = self.idle.apply(rgb, t)
        return to_i420(rgb)

    def placeholder(self) -> np.ndarray:
        """The avatar as it is, in I420: what a track shows before its first rendered frame."""
        return to_i420(np.ascontiguousarray(self.compositor.frames[0]))


@dataclass
class _Rendered:
    key: str
    frame: int
    planes: np.ndarray
    params: np.ndarray
    infer_s: float
    composite_s: float


class FrameLoop:
    def __init__(self, engine: Engine, clock: MediaClock, metrics: ServerMetrics | None = None, *,
                 max_batch: int = 32, max_lag: int = 2) -> None:
        self.engine = engine
        self.clock = clock
        self.metrics = metrics
        self.fps = float(engine.manifest.fps)
        self.grid = TickGrid(clock.now(), self.fps)
        self.scheduler = FrameScheduler(max_batch=max_batch, window=engine.manifest.window)
        self.max_lag = max_lag  # ready frames a session may run behind before it skips ahead
        self.renderers: dict[str, AvatarRenderer] = {}
        self._by_key: dict[str, Session] = {}
        self._key_of: dict[str, str] = {}  # session id -> its current scheduler key
        self._epoch: dict[str, int] = {}
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lipstream-render")
        self._busy = False
        self._task: asyncio.Task | None = None
        self.ticks = 0

    # -- sessions ---------------------------------------------------------------------------
    def add_avatar(self, avatar: Avatar, idle: bool = True) -> np.ndarray:
        """Upload an avatar's features (once) and build its renderer; returns its engine rows."""
        rows = self.engine.add_avatar(avatar.name, avatar.features)
        if avatar.name not in self.renderers:
            self.renderers[avatar.name] = AvatarRenderer(avatar, idle)
        return rows

    def add(self, session: Session) -> None:
        self._epoch[session.id] = 0
        self._schedule(session, 0)

    def remove(self, session: Session) -> None:
        key = self._key_of.pop(session.id, None)
        if key is not None:
            self.scheduler.remove(key)
            self._by_key.pop(key, None)
        self._epoch.pop(session.id, None)

    def reset(self, session: Session) -> None:
        """Interrupt: restart the session's timeline; frames in flight for the old one are dropped."""
        if session.id not in self._key_of:
            return
        self.remove(session)
        session.restart()
        self._epoch[session.id] = epoch = self._epoch.get(session.id, 0) + 1
        self._schedule(session, 0, epoch)

    def _schedule(self, session: Session, first_frame: int, epoch: int | None = None) -> None:
        epoch = self._epoch[session.id] if epoch is None else epoch
        key = f"{session.id}#{epoch}"
        self.scheduler.add(key, session.front, session.rows, first_frame=first_frame)
        self._by_key[key] = session
        self._key_of[session.id] = key
        self._epoch[session.id] = epoch

    def __len__(self) -> int:
        return len(self._by_key)

    # -- the tick ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
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
        for session in self._by_key.values():
            session.feed(now)
        if self._busy:
            if self.metrics and self._by_key:
                self.metrics.ticks_busy.inc()
            return
        self._skip_stale()
        batch = self.scheduler.plan(max_per_session=1)
        if batch is None:
            return
        jobs = {k: self.renderers[self._by_key[k].avatar_name] for k in batch.session_ids}
        self._busy = True
        fut = asyncio.get_running_loop().run_in_executor(self._worker, self._render, batch, jobs, now - self.grid.origin)
        fut.add_done_callback(lambda f: self._on_rendered(f, now))

    def _skip_stale(self) -> None:
        for key, session in list(self._by_key.items()):
            ready = session.front.frames_ready()
            nxt = self.scheduler.next_frame(key)
            if ready - nxt > self.max_lag:
                skipped = self.scheduler.skip_to(key, ready - 1)
                session.stats.frames_skipped += skipped
                if self.metrics:
                    self.metrics.frames_skipped.inc(skipped)

    # -- the worker -------------------------------------------------------------------------
    def _render(self, batch: Batch, renderers: dict[str, AvatarRenderer], t: float) -> list[_Rendered]:
        """Worker thread: engine + composite + I420 for every frame of the batch."""
        t0 = time.perf_counter()
        output = self.engine.run(batch.mel, batch.rows, batch.gate)
        infer = time.perf_counter() - t0
        out = []
        for r in self.scheduler.complete(batch, output):  # sessions gone meanwhile are skipped
            t1 = time.perf_counter()
            planes = renderers[r.session_id].frame(r.avatar_frame, r.crop, t)
            out.append(_Rendered(r.session_id, r.frame, planes, np.array(r.params), infer, time.perf_counter() - t1))
        if self.metrics:
            self.metrics.inference.observe(infer)
            self.metrics.batch_size.observe(len(batch))
            for r in out:
                self.metrics.composite.observe(r.composite_s)
        return out

    def _on_rendered(self, fut: asyncio.Future, planned_at: float) -> None:
        """Event loop: hand each frame to its session (unless it left or was interrupted meanwhile)."""
        self._busy = False
        rendered_at = self.clock.now()
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.error("rendering a batch failed: %r", exc)
            return
        for r in fut.result():
            session = self._by_key.get(r.key)
            if session is not None and not session.closed:
                session.on_frame(r.frame, r.planes, r.params,
                                 FrameTiming(planned_at, r.infer_s, r.composite_s, rendered_at))
