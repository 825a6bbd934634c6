"""The server's malloc settings (realtime/allocator.py): the arena cap takes effect and is skipped
when the environment already decides; the trimmer runs.  The soak's RSS growth was malloc arenas
holding freed memory (docs/benchmarks.md section 7)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from realtime import allocator

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt/malloc_info are glibc's")

# A fresh process: maybe cap the arenas, then 8 threads each allocate at once (and hold) while the
# others do; malloc_info's XML has one <heap nr=...> per arena.
_ARENAS = textwrap.dedent("""
    import ctypes, os, sys, tempfile, threading
    from realtime import allocator
    cap = int(sys.argv[1])
    if cap:
        assert allocator.limit_malloc_arenas(cap) == cap
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.fopen.restype = ctypes.c_void_p
    barrier, held = threading.Barrier(8), []
    def work():
        barrier.wait()
        held.extend(libc.malloc(4096) for _ in range(2000))
        barrier.wait()
    threads = [threading.Thread(target=work) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    path = tempfile.mktemp()
    fp = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(fp))
    libc.fclose(ctypes.c_void_p(fp))
    print(open(path).read().count("<heap nr="))
    os.unlink(path)
""")


def _arenas(cap: int) -> int:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "."}
    out = subprocess.run([sys.executable, "-c", _ARENAS, str(cap)], capture_output=True, text=True, env=env,
                         timeout=60, check=True)
    return int(out.stdout.strip())


@glibc
def test_the_cap_limits_the_arenas_threads_get() -> None:
    assert _arenas(0) > 2, "without a cap, concurrent threads should get arenas of their own"
    assert _arenas(2) <= 2


def test_the_environment_decides_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert allocator.limit_malloc_arenas() is None
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")
    assert allocator.limit_malloc_arenas() is None
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("LIPSTREAM_MALLOC_ARENAS", "0")
    assert allocator.limit_malloc_arenas() is None
    assert allocator.limit_malloc_arenas(0) is None


@glibc
def test_trimming_runs_and_gives_memory_back() -> None:
    code = textwrap.dedent("""
        import time
        from realtime import allocator, memdebug
        assert allocator.start_trimming(0) is None
        n = int("2000")  # not a folded constant
        pairs = [(b"x" * 100_000, b"k" * n) for _ in range(400)]  # ~40 MB in the heap (under the mmap threshold)
        keep = [small for _, small in pairs]  # the small ones between the big ones stay: free() alone cannot
        del pairs                             # shrink the heap, only malloc_trim gives those pages back
        before = memdebug.rss_mb()
        t = allocator.start_trimming(0.05)
        assert t is not None and t.daemon and t.name == "lipstream-malloc-trim"
        time.sleep(0.5)
        print(before - memdebug.rss_mb())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "."})
    assert float(out.stdout.strip()) > 20, "the trimmer gave back less than 20 MB of 40 MB freed"
