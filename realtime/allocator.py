"""The server's malloc settings (glibc): few arenas, so a long call's RSS stays where it started.

glibc gives threads their own malloc arenas, up to eight per core.  The server's threads (the
event loop, the render worker and the worker that replaces one abandoned in a hung engine call,
aiortc's encoder threads, ONNX Runtime's pool) each allocate and free frame-sized buffers
(I420 planes, encoder and decoder frames, engine outputs) in their own arena; memory freed in
an arena stays with it, so every arena keeps its own high-water mark and fragmentation.  Capping
the arenas (``mallopt(M_ARENA_MAX)``) before the engine and the threads start is what the soak
measured to matter (docs/benchmarks.md section 7).

Every 30 s a daemon thread also calls ``malloc_trim(0)``, which hands the free pages inside the
heap back to the system (by itself glibc only gives back the heap's top), so the RSS follows
what is in use.  ``LIPSTREAM_MALLOC_ARENAS=N`` picks the cap (0: glibc's default) and
``LIPSTREAM_MALLOC_TRIM_S=S`` the trim period (0: none), for experiments; an explicit
``MALLOC_ARENA_MAX`` or ``GLIBC_TUNABLES`` in the environment is left alone.  Elsewhere than glibc
this does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

log = logging.getLogger(__name__)

__all__ = ["limit_malloc_arenas", "start_trimming", "configure", "DEFAULT_ARENAS", "DEFAULT_TRIM_S"]

DEFAULT_ARENAS = 2
DEFAULT_TRIM_S = 30.0  # seconds between malloc_trim calls; 0: none
_M_ARENA_MAX = -8  # glibc's malloc.h


def limit_malloc_arenas(n: int | None = None) -> int | None:
    """Cap glibc's malloc arenas at ``n`` (default ``$LIPSTREAM_MALLOC_ARENAS``, else 2); the cap
    set, or None when left alone (not glibc, 0 asked for, or the environment already sets it).
    Call it early: arenas already made stay."""
    if n is None:
        if "MALLOC_ARENA_MAX" in os.environ or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
            return None
        raw = os.environ.get("LIPSTREAM_MALLOC_ARENAS", str(DEFAULT_ARENAS))
        try:
            n = int(raw)
        except ValueError:
            log.warning("LIPSTREAM_MALLOC_ARENAS=%r is not a number; using %d", raw, DEFAULT_ARENAS)
            n = DEFAULT_ARENAS
    if n <= 0:
        return None
    mallopt = _libc_fn("mallopt")  # the process's own symbols: libc's
    if mallopt is None or not mallopt(_M_ARENA_MAX, n):
        return None
    return n


def _libc_fn(name: str):  # noqa: ANN202 - a ctypes function or None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def start_trimming(every_s: float) -> threading.Thread | None:
    """A daemon thread handing free heap pages back to the system (``malloc_trim``) every
    ``every_s`` seconds; None where there is no ``malloc_trim`` or ``every_s`` is not positive."""
    trim = _libc_fn("malloc_trim")
    if trim is None or every_s <= 0:
        return None
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every_s):
            trim(0)

    thread = threading.Thread(target=run, name="lipstream-malloc-trim", daemon=True)
    thread.start()
    return thread


def configure() -> dict:
    """What ``lipstream serve`` applies before its engine and threads start: the arena cap and the
    periodic trim.  Returns what was applied (logged)."""
    arenas = limit_malloc_arenas()
    try:
        every = float(os.environ.get("LIPSTREAM_MALLOC_TRIM_S", DEFAULT_TRIM_S))
    except ValueError:
        every = DEFAULT_TRIM_S
    trimming = start_trimming(every) is not None
    applied = {"malloc_arenas": arenas, "malloc_trim_s": every if trimming else None}
    log.info("allocator: %s", applied)
    return applied
