"""A debug-only memory recorder for the server, off by default: where does its RSS go?

Set ``LIPSTREAM_MEMDEBUG=/path/file.jsonl`` and the server appends one JSON line every
``LIPSTREAM_MEMDEBUG_EVERY`` seconds (default 30) from a daemon thread of its own, so that a soak
can tell Python-object growth from native (allocator) growth:

* ``rss_mb`` (``/proc/self/statm``), ``py_blocks`` (``sys.getallocatedblocks()``: live pymalloc and
  Python objects), threads;
* glibc's ``mallinfo2()`` in MiB: ``in_use`` (bytes malloc handed out, numpy buffers, ONNX
  Runtime, libvpx ...), ``free_held`` (freed, still held by malloc: fragmentation), ``mmapped``;
* the sizes of the server's own bounded stores (latency samples per stage, per-session windows);
* with ``LIPSTREAM_TRACEMALLOC=N`` (frames per trace, e.g. 1): ``tracemalloc``'s traced total and
  the 15 source lines whose allocations grew most since the first sample (numpy buffers included);
* with ``LIPSTREAM_MEMDEBUG_TRIM=1``: ``malloc_trim(0)`` after each sample and the RSS after it
  (how much of the RSS was free memory the allocator could give back).

Costs nothing unless enabled; ``tracemalloc`` slows allocation-heavy code noticeably, so keep it
for experiments.  The soak passes these through ``--server-env`` (``benchmarks/bench_soak.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
import threading
import time
import tracemalloc
from typing import Any

__all__ = ["MemRecorder", "start_from_env", "mallinfo_mb", "malloc_trim"]

_MB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()


def mallinfo_mb() -> dict[str, float] | None:
    """glibc's heap totals over all arenas (MiB); None where there is no ``mallinfo2`` (musl, macOS)."""
    fn = getattr(_LIBC, "mallinfo2", None) if _LIBC is not None else None
    if fn is None:
        return None
    fn.restype = _MallInfo2
    m = fn()
    return {"in_use": round((m.uordblks + m.hblkhd) / _MB, 2), "free_held": round(m.fordblks / _MB, 2),
            "mmapped": round(m.hblkhd / _MB, 2), "heap": round(m.arena / _MB, 2)}


def malloc_trim() -> bool:
    """Give free heap memory back to the system (glibc); False where there is no ``malloc_trim``."""
    fn = getattr(_LIBC, "malloc_trim", None) if _LIBC is not None else None
    return bool(fn(0)) if fn is not None else False


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / _MB


class MemRecorder:
    """Samples the process every ``every_s`` seconds into ``path`` (JSON lines) until stopped."""

    def __init__(self, path: str, every_s: float = 30.0, *, trace_frames: int = 0, trim: bool = False,
                 stores: Any = None) -> None:
        self.path, self.every_s, self.trim = path, every_s, trim
        self.trace_frames = trace_frames
        self.stores = stores  # the ServerState whose stores to count, or None
        self._stop = threading.Event()
        self._first: tracemalloc.Snapshot | None = None
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="lipstream-memdebug", daemon=True)

    def start(self) -> MemRecorder:
        if self.trace_frames and not tracemalloc.is_tracing():
            tracemalloc.start(self.trace_frames)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while True:
            try:
                line = self.sample()
            except Exception as exc:  # noqa: BLE001 - a debug aid never takes the server down
                line = {"t": round(time.monotonic() - self._t0, 1), "error": repr(exc)}
            with open(self.path, "a") as f:
                f.write(json.dumps(line) + "\n")
            if self._stop.wait(self.every_s):
                return

    def sample(self) -> dict:
        out: dict[str, Any] = {"t": round(time.monotonic() - self._t0, 1), "rss_mb": round(rss_mb(), 1),
                               "py_blocks": sys.getallocatedblocks(), "threads": threading.active_count(),
                               "malloc": mallinfo_mb()}
        if self.stores is not None:
            out["stores"] = _census(self.stores)
        if tracemalloc.is_tracing():
            out["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / _MB, 2)
            snap = tracemalloc.take_snapshot()
            if self._first is None:
                self._first = snap
            else:
                out["grew"] = [[str(s.traceback[0]), round(s.size_diff / _MB, 3), s.count_diff]
                               for s in snap.compare_to(self._first, "lineno")[:15]]
        if self.trim:
            malloc_trim()
            out["rss_after_trim_mb"] = round(rss_mb(), 1)
        return out


def _census(state: Any) -> dict:
    """Sizes of the server's own long-lived stores (``realtime.server.ServerState``)."""
    latency, sessions, loop = getattr(state, "latency", None), getattr(state, "sessions", None), getattr(state, "loop", None)
    out: dict[str, Any] = {"sessions": len(sessions) if sessions is not None else None}
    if latency is not None:
        out["latency_samples"] = len(latency.samples)
        out["latency_stage_samples"] = sum(len(v) for v in list(latency.stages.values()))
        out["latency_recent_sessions"] = len(latency._recent)
        if hasattr(latency, "nbytes"):
            out["latency_mb"] = round(latency.nbytes() / _MB, 2)
    step = getattr(loop, "step", None)
    if step is not None:
        out["loop_sessions"] = len(step.sessions)
        out["engine_hung"] = step.faults.hung
    return out


def start_from_env(stores: Any = None) -> MemRecorder | None:
    """The recorder ``LIPSTREAM_MEMDEBUG`` asks for, started; None (nothing runs) when it is unset."""
    path = os.environ.get("LIPSTREAM_MEMDEBUG")
    if not path:
        return None
    return MemRecorder(path, float(os.environ.get("LIPSTREAM_MEMDEBUG_EVERY", "30")),
                       trace_frames=int(os.environ.get("LIPSTREAM_TRACEMALLOC", "0")),
                       trim=os.environ.get("LIPSTREAM_MEMDEBUG_TRIM") == "1", stores=stores).start()
