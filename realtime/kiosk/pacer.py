"""When each frame goes on screen: at the moment its sound comes out of the speaker.

The frame step delivers frame ``k`` and its speech together (``Session.on_frame``), on the event
loop.  :class:`ScreenSink` is the session's video sink: it pairs the frame with where its first
sample sits in the speaker's FIFO (:attr:`Speaker.frame_mark`) and hands both to the
:class:`FramePacer`.  The display thread asks the pacer for the frame that is due: the newest one
whose sample is playing by now (:meth:`Speaker.play_time`); older ones not yet shown are dropped
(counted).  Without a speaker (``--output none``) a frame is due as soon as it arrives.  A frame
is never held longer than ``max_hold_s`` past its arrival, so a stalled speaker cannot freeze
the picture.

The pacer keeps the figures the status file and the benchmark read: frames shown and dropped,
the A/V skew of each shown frame (shown minus its sound's DAC time; positive = picture late) and
the mic-to-screen latency (shown minus when the speech at the frame's instant was heard).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["FramePacer", "ScreenSink", "Pending"]


@dataclass
class Pending:
    planes: np.ndarray
    meta: object
    mark: int | None  # the speaker FIFO index of the frame's first sample (None: show at once)
    arrived: float
    frame: int = -1


class FramePacer:
    def __init__(self, speaker, *, max_hold_s: float = 0.5, history: int = 500) -> None:  # noqa: ANN001
        self.speaker = speaker
        self.max_hold_s = max_hold_s
        self._lock = threading.Lock()
        self._pending: deque[Pending] = deque()
        self.frames_in = 0
        self.frames_shown = 0
        self.frames_dropped = 0  # replaced by a newer due frame before they were shown
        self.last_frame = -1
        self.last_shown_at = 0.0
        self.skew_s: deque[float] = deque(maxlen=history)
        self.latency_s: deque[float] = deque(maxlen=history)
        self.shown_at: deque[float] = deque(maxlen=history)

    def put(self, item: Pending) -> None:
        with self._lock:
            self._pending.append(item)
            self.frames_in += 1
            while len(self._pending) > 64:  # nobody is showing frames: keep memory bounded
                self._pending.popleft()
                self.frames_dropped += 1

    def target(self, item: Pending, now: float) -> float:
        """When ``item`` should be on screen."""
        t = None if item.mark is None else self.speaker.play_time(item.mark, now)
        if t is None:
            return item.arrived
        return min(t, item.arrived + self.max_hold_s)

    def due(self, now: float | None = None) -> tuple[Pending | None, float, float]:
        """(the frame to show now or None, its target time, seconds until the next frame is due)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            pick, pick_t = None, 0.0
            while self._pending:
                t = self.target(self._pending[0], now)
                if t > now:
                    return pick, pick_t, min(t - now, 0.05)
                if pick is not None:
                    self.frames_dropped += 1
                pick, pick_t = self._pending.popleft(), t
            return pick, pick_t, 0.01

    def shown(self, item: Pending, target: float, at: float) -> None:
        """Record that ``item`` went on screen at ``at`` (due at ``target``)."""
        self.frames_shown += 1
        self.last_frame = item.frame
        self.last_shown_at = at
        self.shown_at.append(at)
        if item.mark is not None and target != item.arrived:
            self.skew_s.append(at - target)
        heard = getattr(item.meta, "heard_at", None)
        if heard:
            self.latency_s.append(at - heard)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def fps(self, now: float | None = None, window_s: float = 2.0) -> float:
        now = time.monotonic() if now is None else now
        recent = [t for t in self.shown_at if now - t <= window_s]
        return len(recent) / window_s

    def summary(self) -> dict:
        def stats(values) -> dict | None:  # noqa: ANN001
            if not values:
                return None
            a = np.asarray(values) * 1000.0
            return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p95_ms": round(float(np.percentile(a, 95)), 2),
                    "mean_ms": round(float(a.mean()), 2), "max_abs_ms": round(float(np.abs(a).max()), 2),
                    "n": int(a.size)}

        return {"frames_in": self.frames_in, "frames_shown": self.frames_shown, "frames_dropped": self.frames_dropped,
                "last_frame": self.last_frame, "fps": round(self.fps(), 2), "av_skew": stats(list(self.skew_s)),
                "heard_to_screen": stats(list(self.latency_s))}


class ScreenSink:
    """The session's video sink: frames (with their place in the speaker's FIFO) to the pacer."""

    def __init__(self, pacer: FramePacer, speaker) -> None:  # noqa: ANN001
        self.pacer = pacer
        self.speaker = speaker
        self.frames_sent = 0
        self.frames_repeated = 0
        self._deliveries = -1

    def deliver(self, planes: np.ndarray, meta: object = None) -> None:
        deliveries = self.speaker.deliveries
        # Session.on_frame hands over the frame's speech just before the frame; none came if the
        # count did not move (then there is nothing to wait for)
        mark = self.speaker.frame_mark if deliveries != self._deliveries and self.speaker.stream is not None else None
        self._deliveries = deliveries
        self.pacer.put(Pending(planes, meta, mark, time.monotonic(), int(getattr(meta, "frame", -1))))
        self.frames_sent += 1

    def stop(self) -> None:
        self.pacer.clear()
