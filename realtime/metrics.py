"""The server's Prometheus metrics, in a registry of its own (one per app, so tests can run many).

Exposed at ``GET /metrics``.  Latencies are histograms in seconds; the engine's name is an info
metric so a dashboard can split by backend.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["ServerMetrics", "CONTENT_TYPE_LATEST"]

_MS_BUCKETS = (0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25)
_LATENCY_BUCKETS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.3, 0.5, 1.0)


class ServerMetrics:
    def __init__(self, engine_name: str, model_name: str, precision: str = "fp32") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Info("lipstream_engine", "Inference backend serving this process", registry=r).info(
            {"engine": engine_name, "model": model_name, "precision": precision})
        self.sessions = Gauge("lipstream_sessions", "Live sessions", registry=r)
        self.sessions_total = Counter("lipstream_sessions_created", "Sessions created", registry=r)
        self.sessions_reaped = Counter(
            "lipstream_sessions_reaped", "Sessions closed because their peer went silent without hanging up: "
            "reason=no_audio (no mic audio for --session-timeout; realtime/reaper.py)", ["reason"], registry=r)
        self.sessions_reaped.labels("no_audio")
        self.frames_sent = Counter("lipstream_frames_sent", "Video frames handed to the encoder", registry=r)
        self.frames_dropped = Counter(
            "lipstream_frames_dropped", "Frame slots that repeated the previous frame because no fresh "
            "frame was ready", registry=r)
        self.frames_skipped = Counter(
            "lipstream_frames_skipped", "Rendered frames not rendered because a newer one was ready", registry=r)
        self.ticks_busy = Counter(
            "lipstream_ticks_busy", "Ticks that found the inference worker still busy", registry=r)
        self.latency = Histogram(
            "lipstream_audio_to_frame_seconds", "Speech reaching the front-end -> its frame handed to the "
            "encoder", buckets=_LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("lipstream_inference_seconds", "One batched engine call",
                                   buckets=_MS_BUCKETS, registry=r)
        self.composite = Histogram("lipstream_composite_seconds", "Composite + idle motion + I420, per frame",
                                   buckets=_MS_BUCKETS, registry=r)
        self.encode = Histogram("lipstream_encode_seconds", "Video encode, per frame (aiortc encoder)",
                                buckets=_MS_BUCKETS, registry=r)
        self.stage = Histogram(
            "lipstream_latency_stage_seconds", "Audio-in -> frame-out by stage: jitter_buffer (per audio "
            "frame), lookahead, tick_wait, inference, composite, worker_other, send_wait, encode",
            ["stage"], buckets=sorted({*_MS_BUCKETS, 0.04, 0.06, 0.08}), registry=r)
        self.engine_errors = Counter(
            "lipstream_engine_errors", "Engine calls that failed: kind=raised (an exception, its frames "
            "repeated) or hung (past the deadline: its worker thread abandoned)", ["kind"], registry=r)
        for kind in ("raised", "hung"):
            self.engine_errors.labels(kind)
        self.engine_abandoned = Gauge(
            "lipstream_engine_abandoned_workers", "Worker threads abandoned in a hung engine call that have "
            "not returned yet (at most 1)", registry=r)
        self.batch_size = Histogram("lipstream_batch_size", "Frames per engine call",
                                    buckets=(1, 2, 4, 8, 16, 32), registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
