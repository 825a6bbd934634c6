"""A single self-updating progress line on stderr for long work (prepare, render, bench)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    def __init__(self, label: str, unit: str = "frames", *, stream: TextIO | None = None,
                 min_interval_s: float = 0.1) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._t0 = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self._last < self.min_interval_s:
            return
        self._last = now
        width = 30
        filled = int(width * done / max(total, 1))
        rate = done / max(now - self._t0, 1e-9)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{done}/{total} {self.unit} ({rate:.0f}/s)")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()
