"""Where the server keeps its measured latencies: per session (what a session reports), all of them
(what benchmarks read for exact percentiles), and per stage (``FrameMeta.stages`` plus the jitter
buffer and encoder times that ``realtime.low_latency`` observes).

Bounded throughout, and flat in memory: each store is a preallocated float64 ring
(:class:`SampleRing`, 0.8 MB for ``MAX_SAMPLES``), not a deque of Python floats (32 bytes a
sample, ~29 MB for the nine stores once full, and filling for the better part of an hour at four
sessions: it showed as server RSS growth in the soak, docs/benchmarks.md section 7).  A session's
window is forgotten when it ends, also if a frame goes out while it is closing."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

import numpy as np

from realtime.frame_meta import FrameMeta
from realtime.metrics import ServerMetrics

__all__ = ["LatencyStore", "SampleRing", "MAX_SAMPLES"]

RECENT_FRAMES = 50  # 2 s of frames behind a session's reported latency
MAX_SAMPLES = 100_000


class SampleRing:
    """The last ``capacity`` samples (seconds), oldest first when read; thread-safe appends.

    The buffer is allocated and written once, when the first sample comes, so its pages count in
    the RSS from then on instead of being touched one by one as the ring fills."""

    def __init__(self, capacity: int = MAX_SAMPLES) -> None:
        if capacity < 1:
            raise ValueError("a sample ring needs a capacity of at least 1")
        self.capacity = capacity
        self._buf: np.ndarray | None = None
        self._n = 0  # samples ever appended
        self._lock = threading.Lock()

    def append(self, seconds: float) -> None:
        with self._lock:
            if self._buf is None:
                self._buf = np.full(self.capacity, np.nan)
            self._buf[self._n % self.capacity] = seconds
            self._n += 1

    def values(self) -> np.ndarray:
        """A copy of the kept samples, oldest first."""
        with self._lock:
            if self._buf is None:
                return np.zeros(0)
            if self._n <= self.capacity:
                return self._buf[:self._n].copy()
            i = self._n % self.capacity
            return np.concatenate([self._buf[i:], self._buf[:i]])

    def __len__(self) -> int:
        return min(self._n, self.capacity)

    def __iter__(self) -> Iterator[float]:
        return iter(self.values().tolist())

    @property
    def nbytes(self) -> int:
        return 0 if self._buf is None else self._buf.nbytes


class LatencyStore:
    def __init__(self, metrics: ServerMetrics | None = None, *, max_samples: int = MAX_SAMPLES) -> None:
        self.metrics = metrics
        self.max_samples = max_samples
        self.samples = SampleRing(max_samples)  # audio-in -> frame-out, seconds
        self.stages: dict[str, SampleRing] = {}
        self._stages_lock = threading.Lock()
        self._recent: dict[str, deque[float]] = {}
        self._ended: deque[str] = deque(maxlen=64)  # sessions forgotten lately: late frames add nothing

    def _stage(self, stage: str) -> SampleRing:
        ring = self.stages.get(stage)
        if ring is None:
            with self._stages_lock:
                ring = self.stages.setdefault(stage, SampleRing(self.max_samples))
        return ring

    def observe_stage(self, stage: str, seconds: float) -> None:
        """Thread-safe (ring append, prometheus): the encoder thread calls it too."""
        self._stage(stage).append(seconds)
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
        self.samples.append(latency)
        recent = self._recent.get(session_id)
        if recent is None:
            if session_id in self._ended:  # a frame sent while its session was closing
                return
            recent = self._recent[session_id] = deque(maxlen=RECENT_FRAMES)
        recent.append(latency)

    def recent_p50_ms(self, session_id: str) -> float | None:
        recent = sorted(self._recent.get(session_id, ()))
        return round(1000 * recent[len(recent) // 2], 1) if recent else None

    def forget(self, session_id: str) -> None:
        """The session ended: drop its window, and keep frames still going out from re-creating it."""
        self._recent.pop(session_id, None)
        if session_id not in self._ended:
            self._ended.append(session_id)

    def nbytes(self) -> int:
        """Bytes held by the sample rings (for the memory census of ``realtime.memdebug``)."""
        return self.samples.nbytes + sum(r.nbytes for r in list(self.stages.values()))
