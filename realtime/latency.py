"""Where the server keeps its measured latencies: per session (what a session reports), all of them
(what benchmarks read for exact percentiles), and per stage (``FrameMeta.stages`` plus the jitter
buffer and encoder times that ``realtime.low_latency`` observes).  Bounded throughout."""

from __future__ import annotations

from collections import defaultdict, deque

from realtime.frame_meta import FrameMeta
from realtime.metrics import ServerMetrics

__all__ = ["LatencyStore"]

RECENT_FRAMES = 50  # 2 s of frames behind a session's reported latency
MAX_SAMPLES = 100_000


class LatencyStore:
    def __init__(self, metrics: ServerMetrics | None = None) -> None:
        self.metrics = metrics
        self.samples: deque[float] = deque(maxlen=MAX_SAMPLES)  # audio-in -> frame-out, seconds
        self.stages: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=MAX_SAMPLES))
        self._recent: dict[str, deque[float]] = {}

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Thread-safe (deque append, prometheus): the encoder thread calls it too."""
        self.stages[stage].append(seconds)
        if self.metrics is not None:
            self.metrics.stage.labels(stage).observe(seconds)

    def observe_encode(self, seconds: float) -> None:
        self.observe_stage("encode", seconds)
        if self.metrics is not None:
            self.metrics.encode.observe(seconds)

    def observe_jitter(self, seconds: float) -> None:
        self.observe_stage("jitter_buffer", seconds)

    def frame_sent(self, session_id: str, meta: FrameMeta | None, repeated: bool, now: float) -> None:
        """A video track sent a frame (``meta`` None for a placeholder or a repeat without one)."""
        if self.metrics is not None:
            self.metrics.frames_sent.inc()
            if repeated:
                self.metrics.frames_dropped.inc()
        if meta is None:
            return
        for stage, seconds in meta.stages(now).items():
            self.observe_stage(stage, seconds)
        latency = max(0.0, now - meta.heard_at)
        if self.metrics is not None:
            self.metrics.latency.observe(latency)
        self._recent.setdefault(session_id, deque(maxlen=RECENT_FRAMES)).append(latency)
        self.samples.append(latency)

    def recent_p50_ms(self, session_id: str) -> float | None:
        recent = sorted(self._recent.get(session_id, ()))
        return round(1000 * recent[len(recent) // 2], 1) if recent else None

    def forget(self, session_id: str) -> None:
        self._recent.pop(session_id, None)
