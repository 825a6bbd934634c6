"""The server's live sessions: created with their tracks, counted against the limit, ended once.

Ending a session is one path whatever ends it (``DELETE``, the peer leaving, a connect timeout,
shutdown): the frame loop gets an :class:`~realtime.frame_step.EndSession` event, the session
closes its tracks and peer connection, and its latency window is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import numpy as np

from engines.audio_convention import AudioConvention
from engines.avatar import Avatar
from realtime.clock import MediaClock
from realtime.frame_step import EndSession, Interrupt
from realtime.latency import LatencyStore
from realtime.metrics import ServerMetrics
from realtime.session import Session
from realtime.tracks import AvatarVideoTrack, DelayedAudioTrack

log = logging.getLogger(__name__)

__all__ = ["SessionRegistry", "union_box"]


def union_box(boxes: np.ndarray) -> tuple[int, int, int, int]:
    """One box (x0, y0, x1, y1, video pixels) holding the mouth in every avatar frame: what a
    client (or the glass-to-glass benchmark) watches to see the lips move."""
    b = np.asarray(boxes).reshape(-1, 4)
    return (int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max()))


class SessionRegistry:
    def __init__(self, loop, clock: MediaClock, convention: AudioConvention, metrics: ServerMetrics,  # noqa: ANN001
                 latency: LatencyStore, *, max_sessions: int, max_speech_s: float, connect_timeout_s: float) -> None:
        self.loop = loop  # FrameLoop or the benchmarks' NaiveFrameLoop
        self.clock = clock
        self.convention = convention
        self.metrics = metrics
        self.latency = latency
        self.max_sessions = max_sessions
        self.max_speech_s = max_speech_s
        self.connect_timeout_s = connect_timeout_s
        self.pending = 0  # offers being negotiated: count against max_sessions
        self._sessions: dict[str, Session] = {}

    # -- a mapping of the live sessions -----------------------------------------------------
    def __getitem__(self, sid: str) -> Session:
        return self._sessions[sid]

    def __contains__(self, sid: object) -> bool:
        return sid in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sessions)

    def get(self, sid: str) -> Session | None:
        return self._sessions.get(sid)

    def values(self) -> list[Session]:
        return list(self._sessions.values())

    @property
    def full(self) -> bool:
        return len(self._sessions) + self.pending >= self.max_sessions

    # -- life cycle -------------------------------------------------------------------------
    def new(self, sid: str, avatar: Avatar, rows: np.ndarray) -> Session:
        """A session with its tracks, not yet registered (its offer is still being answered)."""
        clock, latency = self.clock, self.latency
        video = AvatarVideoTrack(clock, self.loop.grid, self.loop.placeholder(avatar.name),
                                 on_sent=lambda meta, repeated: latency.frame_sent(sid, meta, repeated, clock.now()))
        audio = DelayedAudioTrack(clock, self.loop.grid)
        return Session(sid, avatar.name, rows, clock, video, audio, self.convention,
                       max_queue_s=self.max_speech_s, mouth_box=union_box(avatar.mouth_boxes))

    def register(self, session: Session) -> None:
        """The offer was answered: the session joins the frame loop; unconnected sessions time out."""
        self._sessions[session.id] = session
        self.loop.add(session)
        self.metrics.sessions.set(len(self._sessions))
        self.metrics.sessions_total.inc()
        timer = asyncio.get_running_loop().call_later(self.connect_timeout_s, self._drop_if_unconnected, session.id)
        session.on_closed = lambda _s: timer.cancel()

    def interrupt(self, session: Session) -> None:
        self.loop.post(Interrupt(session.id))

    async def close(self, session: Session) -> None:
        registered = self._sessions.pop(session.id, None) is not None
        self.latency.forget(session.id)
        if session.closed and not registered:
            return
        self.loop.post(EndSession(session.id))
        await session.close()
        if registered:
            self.metrics.sessions.set(len(self._sessions))
            log.info("session %s closed (%d live)", session.id, len(self._sessions))

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(s) for s in self.values()), return_exceptions=True)

    def _drop_if_unconnected(self, sid: str) -> None:
        session = self._sessions.get(sid)
        if session is not None and session.pc is not None and session.pc.connectionState != "connected":
            log.info("session %s never connected; closing it", session.id)
            asyncio.ensure_future(self.close(session))
