"""The one frame step every path runs: the batched server loop, the naive baseline, offline render.

A step is three calls, so that whoever drives it decides *when* and *on which thread*:

1. :meth:`FrameStep.begin` (event loop): apply queued session events (interrupt, end) in one
   place, then bring every session's timeline up to ``now``, so no session can stall the clock;
2. :meth:`FrameStep.plan` (event loop): a session more than ``max_lag`` frames behind skips to
   its newest ready frame (latency over smoothness), then one batch of ready frames;
3. :meth:`FrameStep.render` (worker thread): one ``engine.run`` for the batch, then per frame
   composite + idle motion + I420;
4. :meth:`FrameStep.deliver` (event loop): each frame to its session (its speech and the frame),
   unless the session ended or was interrupted while the batch was in flight.

Interrupts bump a session's *epoch*; frames rendered for an older epoch are dropped on arrival.
``render`` drives the same four calls on a manual clock as fast as the engine allows.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from engines.avatar import Avatar
from engines.base import Engine
from realtime.compositor import Compositor, to_i420
from realtime.engine_faults import EngineFaults
from realtime.frame_meta import FrameTiming
from realtime.idle_motion import IdleMotion
from realtime.metrics import ServerMetrics
from realtime.scheduler import Batch, FrameScheduler
from realtime.session import Session

log = logging.getLogger(__name__)

__all__ = ["FrameStep", "AvatarRenderer", "Interrupt", "EndSession", "SessionEvent", "Job", "Rendered"]


@dataclass(frozen=True)
class Interrupt:
    """Drop the session's queued and unsent speech; its next frame renders from silence."""

    session_id: str


@dataclass(frozen=True)
class EndSession:
    """Stop scheduling the session; frames in flight for it are dropped."""

    session_id: str


SessionEvent = Interrupt | EndSession


class AvatarRenderer:
    """Everything per avatar the worker needs to turn a crop into a frame (one thread at a time)."""

    def __init__(self, avatar: Avatar, idle: bool = True) -> None:
        self.compositor = Compositor(avatar)
        h, w = avatar.frames.shape[1:3]
        # a still portrait breathes, sways, blinks and moves its head a little (eyes from the face
        # mesh kept at preparation); a video avatar already moves
        self.idle = IdleMotion.for_avatar(avatar) if idle and avatar.n_frames == 1 else None

    def frame(self, avatar_frame: int, crop: np.ndarray, t: float) -> np.ndarray:
        rgb = self.compositor.compose(avatar_frame, crop)
        if self.idle is not None:
            rgb = self.idle.apply(rgb, t)
        return to_i420(rgb)

    def placeholder(self) -> np.ndarray:
        """The avatar as it is, in I420: what a track shows before its first rendered frame."""
        return to_i420(np.ascontiguousarray(self.compositor.frames[0]))


@dataclass
class Job:
    """One planned batch, with what the worker needs and what delivery checks."""

    batch: Batch
    renderers: list[AvatarRenderer]  # per batch item
    times: np.ndarray  # per item: the frame's instant on the clock (idle motion)
    epochs: list[int]  # per item: the session's epoch when planned
    planned_at: float
    abandoned: bool = False  # set by the frame loop when the call hung past its deadline


@dataclass
class Rendered:
    session_id: str
    frame: int
    epoch: int
    planes: np.ndarray
    params: np.ndarray
    infer_s: float
    composite_s: float


class FrameStep:
    def __init__(self, engine: Engine, metrics: ServerMetrics | None = None, *, max_batch: int = 32,
                 max_lag: int = 2, idle_motion: bool = True) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_lag = max_lag  # ready frames a session may run behind before it skips ahead
        self.idle_motion = idle_motion
        self.scheduler = FrameScheduler(max_batch=max_batch, window=engine.manifest.window)
        self.renderers: dict[str, AvatarRenderer] = {}
        self.sessions: dict[str, Session] = {}
        self._epoch: dict[str, int] = {}
        self._events: list[SessionEvent] = []
        self.faults = EngineFaults(metrics)
        self._composing = threading.Lock()  # an abandoned call that comes back never composites alongside

    # -- avatars and sessions ---------------------------------------------------------------
    def add_avatar(self, avatar: Avatar) -> np.ndarray:
        """Upload an avatar's features (once) and build its renderer; returns its engine rows."""
        rows = self.engine.add_avatar(avatar.name, avatar.features)
        if avatar.name not in self.renderers:
            self.renderers[avatar.name] = AvatarRenderer(avatar, self.idle_motion)
        return rows

    def drop_avatar(self, name: str) -> None:
        """Forget an avatar no session uses any more (the engine frees its feature rows)."""
        if any(s.avatar_name == name for s in self.sessions.values()):
            raise RuntimeError(f"avatar {name!r} is still in use")
        if self.renderers.pop(name, None) is not None:
            self.engine.remove_avatar(name)

    def add(self, session: Session) -> None:
        if session.id in self.sessions:
            raise KeyError(f"session {session.id} already added")
        self.sessions[session.id] = session
        self._epoch[session.id] = 0
        self.scheduler.add(session.id, session.front, session.rows)

    def post(self, event: SessionEvent) -> None:
        """Queue an event; the next :meth:`begin` applies it, between steps."""
        self._events.append(event)

    def __len__(self) -> int:
        return len(self.sessions)

    def _apply(self, event: SessionEvent) -> None:
        session = self.sessions.get(event.session_id)
        if session is None:
            return
        self.scheduler.remove(session.id)
        if isinstance(event, EndSession):
            del self.sessions[session.id], self._epoch[session.id]
            return
        session.restart()
        self._epoch[session.id] += 1
        self.scheduler.add(session.id, session.front, session.rows)

    # -- the step ---------------------------------------------------------------------------
    def apply_events(self) -> None:
        """Apply the queued events.  Only between steps: the driver calls it when no batch is in
        flight (at once when an event is posted to an idle loop, after a delivery, or in ``begin``)."""
        events, self._events = self._events, []
        for event in events:
            self._apply(event)

    def begin(self, now: float) -> None:
        """Apply queued events, then bring every timeline up to ``now``."""
        self.apply_events()
        for session in self.sessions.values():
            session.feed(now)

    def plan(self, now: float, max_per_session: int = 1) -> Job | None:
        self._skip_stale()
        batch = self.scheduler.plan(max_per_session=max_per_session)
        if batch is None:
            return None
        owners = [self.sessions[sid] for sid in batch.session_ids]
        return Job(batch, [self.renderers[s.avatar_name] for s in owners],
                   np.array([s.timeline.frame_time(int(k)) for s, k in zip(owners, batch.frames)]),
                   [self._epoch[s.id] for s in owners], now)

    def has_ready(self) -> bool:
        """Whether some session has a frame whose window is complete and not yet planned."""
        return any(s.front.frames_ready() > self.scheduler.next_frame(sid) for sid, s in self.sessions.items())

    def _skip_stale(self) -> None:
        for sid, session in self.sessions.items():
            behind = session.front.frames_ready() - self.scheduler.next_frame(sid)
            if behind > self.max_lag:
                skipped = self.scheduler.skip_to(sid, session.front.frames_ready() - 1)
                session.stats.frames_skipped += skipped
                if self.metrics:
                    self.metrics.frames_skipped.inc(skipped)

    def render(self, job: Job) -> list[Rendered]:
        """Worker thread: one engine call for the batch, then composite + I420 per frame."""
        b = job.batch
        t0 = time.perf_counter()
        output = self.engine.run_skipping_silence(b.mel, b.rows, b.gate)
        infer = time.perf_counter() - t0
        out = []
        with self._composing:
            if job.abandoned:  # it hung past its deadline and the loop moved on: drop it
                return out
            for i, sid in enumerate(b.session_ids):
                t1 = time.perf_counter()
                planes = job.renderers[i].frame(int(b.avatar_frames[i]), output.crops[i], float(job.times[i]))
                out.append(Rendered(sid, int(b.frames[i]), job.epochs[i], planes, np.array(output.params[i]),
                                    infer, time.perf_counter() - t1))
        if self.metrics:
            self.metrics.inference.observe(infer)
            self.metrics.batch_size.observe(len(b))
            for r in out:
                self.metrics.composite.observe(r.composite_s)
        return out

    def deliver_result(self, job: Job, fut: "Future[list[Rendered]]", rendered_at: float) -> None:
        """A worker's finished future: deliver its frames, or log why there are none."""
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            self.faults.failed(exc)  # counted, logged (rate-limited); the tracks repeat their last frame
            return
        self.faults.ok()
        self.deliver(job, fut.result(), rendered_at)

    def deliver(self, job: Job, rendered: list[Rendered], rendered_at: float) -> None:
        """Event loop: hand each frame to its session, unless it ended or was interrupted meanwhile."""
        for r in rendered:
            session = self.sessions.get(r.session_id)
            if session is None or session.closed or self._epoch[r.session_id] != r.epoch:
                continue
            session.on_frame(r.frame, r.planes, r.params,
                             FrameTiming(job.planned_at, r.infer_s, r.composite_s, rendered_at))
