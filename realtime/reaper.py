"""Closing sessions whose peer went silent without hanging up.

A browser tab that froze, a laptop that lost its network, a client that crashed: none of them
sends a BYE, and WebRTC has no end-of-call of its own, so the session would keep its slot
(``--max-sessions``), its tracks and its peer connection, and the frame loop would keep rendering
for it.  Two things end such a session:

- **no mic audio for ``timeout_s``** (``lipstream serve --session-timeout``, default 15 s): a
  session driven by a microphone (:attr:`Session.has_mic`) whose track has delivered no decoded
  audio for that long is closed here.  A live browser mic sends a packet every 20 ms even when
  muted (silence frames), so silence of the *speaker* never triggers it; only silence of the
  *network* does.  Presenter and bot sessions (no mic track) are never reaped for silence: their
  speech comes over HTTP, whenever it comes.
- **ICE consent failure** (RFC 7675, aioice: a check every ~5 s, closed after 6 unanswered, so
  about 30 s): ends any session, presenter ones too, through the peer connection's state change
  (``realtime/server.py``), not here.

Reaping goes through :meth:`SessionRegistry.close` (the one way every session ends: frame loop
told, tracks stopped, peer connection closed), is logged, and counted in
``lipstream_sessions_reaped_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from realtime.clock import MediaClock

if TYPE_CHECKING:
    from realtime.metrics import ServerMetrics
    from realtime.session import Session
    from realtime.sessions import SessionRegistry

log = logging.getLogger(__name__)

__all__ = ["SessionReaper", "silent_for"]


def silent_for(session: Session, now: float) -> float | None:
    """Seconds since the session's mic last delivered audio; None for a session with no mic track
    (never reaped for silence) or one already closed."""
    if session.closed or not session.has_mic or session.mic_heard_at is None:
        return None
    return now - session.mic_heard_at


class SessionReaper:
    """Sweeps the live sessions every ``interval_s`` and closes the silent ones (``timeout_s`` > 0)."""

    def __init__(self, sessions: SessionRegistry, clock: MediaClock, metrics: ServerMetrics | None,
                 timeout_s: float, interval_s: float | None = None) -> None:
        self.sessions = sessions
        self.clock = clock
        self.metrics = metrics
        self.timeout_s = float(timeout_s)
        # a sweep a quarter of the timeout apart (at most 1 s): reaped within 1.25 x the timeout
        self.interval_s = interval_s if interval_s is not None else min(1.0, max(0.05, self.timeout_s / 4))
        self.reaped = 0
        self._task: asyncio.Task | None = None

    @property
    def enabled(self) -> bool:
        return self.timeout_s > 0

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 - the reaper must outlive any one session's failure to close
                log.exception("session reaper: a sweep failed")

    def due(self, now: float) -> list[tuple[Session, float]]:
        """The sessions to reap at ``now``, with how long each has been silent."""
        out = []
        for session in self.sessions.values():
            quiet = silent_for(session, now)
            if quiet is not None and quiet > self.timeout_s:
                out.append((session, quiet))
        return out

    async def sweep(self) -> int:
        """Close every session silent past the timeout; returns how many were closed."""
        if not self.enabled:
            return 0
        due = self.due(self.clock.now())
        for session, quiet in due:
            log.warning("session %s: no audio from its microphone for %.1f s (--session-timeout %g s): "
                        "the peer is gone without hanging up; closing the session", session.id, quiet,
                        self.timeout_s)
            await self.sessions.close(session)
            self.reaped += 1
            if self.metrics is not None:
                self.metrics.sessions_reaped.labels("no_audio").inc()
        return len(due)
