"""Which frames to render next, for every session, as one batch: a pure, synchronous object.

No I/O, no clock, no threads: the caller decides *when* (the server on its global 25 fps tick,
``render`` as fast as it can) and runs the engine on the batch; this object only says *what*.
``plan`` gathers every ready frame's mel window and voice gate into preallocated buffers;
``complete`` hands each output back to its session.  Sessions join and leave between steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.base import EngineOutput
from realtime.audio_frontend import AudioFrontEnd
from realtime.compositor import avatar_frame_for


@dataclass
class Batch:
    session_ids: list[str]  # owner of each item
    frames: np.ndarray  # (B,) frame number within its session
    avatar_frames: np.ndarray  # (B,) avatar frame shown under each item (compositor input)
    rows: np.ndarray  # (B,) engine feature-table rows
    mel: np.ndarray  # (B, 1, 80, 16) windows (a view of the scheduler's buffer: use before next plan)
    gate: np.ndarray  # (B,) voice activity 0/1

    def __len__(self) -> int:
        return len(self.session_ids)


@dataclass
class FrameResult:
    session_id: str
    frame: int
    avatar_frame: int
    crop: np.ndarray  # (3, S, S) float32
    params: np.ndarray  # (P,) mouth parameters


@dataclass
class _Session:
    front: AudioFrontEnd
    rows: np.ndarray  # engine rows of this session's avatar, one per avatar frame
    next_frame: int = 0


class FrameScheduler:
    def __init__(self, max_batch: int = 32, window: tuple[int, int] = (80, 16)) -> None:
        self.max_batch = max_batch
        self._sessions: dict[str, _Session] = {}
        self._mel = np.empty((max_batch, 1, *window), np.float32)
        self._gate = np.empty(max_batch, np.float32)
        self._turn = 0  # round-robin start position in the session order

    def add(self, session_id: str, front: AudioFrontEnd, avatar_rows: np.ndarray, first_frame: int = 0) -> None:
        if session_id in self._sessions:
            raise KeyError(f"session {session_id} already scheduled")
        self._sessions[session_id] = _Session(front, np.asarray(avatar_rows, np.int64), first_frame)

    def remove(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def next_frame(self, session_id: str) -> int:
        return self._sessions[session_id].next_frame

    def skip_to(self, session_id: str, frame: int) -> int:
        """Make ``frame`` the session's next planned frame; returns how many frames were skipped."""
        s = self._sessions[session_id]
        skipped = max(0, frame - s.next_frame)
        s.next_frame = max(s.next_frame, frame)
        return skipped

    def plan(self, max_per_session: int = 1) -> Batch | None:
        """Take up to ``max_per_session`` ready frames from each session, at most ``max_batch`` in all."""
        ids: list[str] = []
        frames: list[int] = []
        rows: list[int] = []
        avatar_frames: list[int] = []
        order = list(self._sessions.items())
        start_turn = self._turn % len(order) if order else 0
        order = order[start_turn:] + order[:start_turn]
        visited = 0
        for sid, s in order:
            visited += 1
            ready = s.front.frames_ready()
            take = min(max_per_session, ready - s.next_frame, self.max_batch - len(ids))
            if take <= 0:
                continue
            ks = np.arange(s.next_frame, s.next_frame + take)
            start = len(ids)
            s.front.fill(ks, self._mel[start:start + take], self._gate[start:start + take])
            for k in ks:
                af = avatar_frame_for(int(k), len(s.rows))
                ids.append(sid)
                frames.append(int(k))
                avatar_frames.append(af)
                rows.append(int(s.rows[af]))
            s.next_frame += take
            if len(ids) >= self.max_batch:
                break
        # the next plan starts after the last session visited: a full batch never starves anyone
        self._turn = start_turn + visited
        if not ids:
            return None
        n = len(ids)
        return Batch(ids, np.array(frames), np.array(avatar_frames), np.array(rows, np.int64),
                     self._mel[:n], self._gate[:n])

    def complete(self, batch: Batch, output: EngineOutput) -> list[FrameResult]:
        """Split an engine output back into per-session results (sessions gone meanwhile are skipped)."""
        return [FrameResult(sid, int(batch.frames[i]), int(batch.avatar_frames[i]), output.crops[i], output.params[i])
                for i, sid in enumerate(batch.session_ids) if sid in self._sessions]
