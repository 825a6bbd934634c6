"""What travels with a rendered frame to its video track: the server's latency stages come from it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FrameMeta", "FrameTiming"]


@dataclass(frozen=True)
class FrameTiming:
    """What the frame step measured for one frame (clock times and durations, seconds)."""

    planned_at: float  # the tick that put the frame in a batch
    infer_s: float  # the batch's engine call
    composite_s: float  # this frame's composite + idle motion + I420
    rendered_at: float  # back on the event loop, ready to send


@dataclass(frozen=True)
class FrameMeta:
    session_id: str
    frame: int
    heard_at: float  # clock time the speech at this frame's instant reached the front-end
    ready_at: float = 0.0  # ... and the last sample of its mel window (the lookahead) did
    timing: FrameTiming | None = None

    def stages(self, sent_at: float) -> dict[str, float]:
        """Audio-in -> frame-out split into consecutive stages (seconds; they sum to the total)."""
        if self.timing is None:
            return {}
        t = self.timing
        ready = min(max(self.ready_at, self.heard_at), t.planned_at)
        worker = t.rendered_at - t.planned_at
        return {"lookahead": ready - self.heard_at, "tick_wait": t.planned_at - ready,
                "inference": t.infer_s, "composite": t.composite_s,
                "worker_other": max(0.0, worker - t.infer_s - t.composite_s),
                "send_wait": sent_at - t.rendered_at}
