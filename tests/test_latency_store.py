"""The latency store stays flat in memory and forgets sessions that ended (the soak's RSS growth,
docs/benchmarks.md section 7)."""

from __future__ import annotations

import asyncio
import threading
import tracemalloc

import numpy as np
import pytest

from realtime.frame_meta import FrameMeta, FrameTiming
from realtime.latency import LatencyStore, SampleRing
from realtime.metrics import ServerMetrics
from realtime.sessions import SessionRegistry

STAGES = ("jitter_buffer", "lookahead", "tick_wait", "inference", "composite", "worker_other", "send_wait", "encode")


def _meta(sid: str, k: int) -> FrameMeta:
    return FrameMeta(sid, k, heard_at=0.0, ready_at=0.01, timing=FrameTiming(0.02, 0.003, 0.002, 0.03))


def test_ring_keeps_the_newest_samples_oldest_first() -> None:
    ring = SampleRing(5)
    assert len(ring) == 0 and list(ring) == [] and not ring
    for x in range(3):
        ring.append(float(x))
    assert list(ring) == [0.0, 1.0, 2.0]
    for x in range(3, 12):
        ring.append(float(x))
    assert len(ring) == 5 and list(ring) == [7.0, 8.0, 9.0, 10.0, 11.0]
    assert np.array_equal(ring.values(), np.arange(7.0, 12.0))
    with pytest.raises(ValueError):
        SampleRing(0)


def test_ring_appends_from_threads_lose_nothing() -> None:
    ring = SampleRing(100_000)

    def fill(v: float) -> None:
        for _ in range(5000):
            ring.append(v)

    threads = [threading.Thread(target=fill, args=(float(i),)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    vals = ring.values()
    assert len(ring) == 20_000 and not np.isnan(vals).any()
    assert sorted(np.unique(vals, return_counts=True)[1].tolist()) == [5000] * 4


def test_filling_the_store_does_not_grow_its_memory() -> None:
    """Once every stage has its first sample, filling all of them to capacity allocates nothing
    more (a deque of Python floats grew by 32 bytes a sample: ~5 MB here)."""
    cap = 20_000
    store = LatencyStore(ServerMetrics("test", "test"), max_samples=cap)
    for k in range(2):  # every ring allocated (and the prometheus children created)
        store.frame_sent("s", _meta("s", k), False, now=0.05)
        store.observe_jitter(0.01)
        store.observe_encode(0.004)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for k in range(cap + 500):
            store.frame_sent("s", _meta("s", k), k % 7 == 0, now=0.05 + 1e-6 * k)
            store.observe_jitter(0.01)
            store.observe_encode(0.004)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert set(store.stages) == set(STAGES)
    assert all(len(store.stages[s]) == cap for s in STAGES) and len(store.samples) == cap
    assert grown < 256 * 1024, f"the full store grew by {grown / 2**20:.1f} MiB"
    assert store.nbytes() == (len(STAGES) + 1) * cap * 8


def test_an_ended_session_is_forgotten_even_if_a_frame_goes_out_while_it_closes() -> None:
    store = LatencyStore()
    for i in range(200):  # sessions come and go
        sid = f"s{i}"
        store.frame_sent(sid, _meta(sid, 0), False, now=0.08)
        assert store.recent_p50_ms(sid) == 80.0
        store.forget(sid)
        store.frame_sent(sid, _meta(sid, 1), False, now=0.09)  # in flight when it ended
        assert store.recent_p50_ms(sid) is None
    assert store._recent == {}
    assert len(store._ended) <= 64
    store.frame_sent("live", _meta("live", 0), False, now=0.07)
    assert list(store._recent) == ["live"]


class _FakeLoop:
    def __init__(self) -> None:
        self.events: list = []

    def add(self, session) -> None:  # noqa: ANN001
        pass

    def post(self, event) -> None:  # noqa: ANN001
        self.events.append(event)


class _ClosingSession:
    """Closing yields to the event loop, and its video track sends one more frame meanwhile."""

    def __init__(self, sid: str, store: LatencyStore) -> None:
        self.id, self.store, self.closed, self.pc, self.on_closed = sid, store, False, None, None

    async def close(self) -> None:
        await asyncio.sleep(0)
        self.store.frame_sent(self.id, _meta(self.id, 9), False, now=0.1)
        self.closed = True


def test_registry_close_leaves_no_per_session_latency_state() -> None:
    async def go() -> LatencyStore:
        store = LatencyStore()
        reg = SessionRegistry(_FakeLoop(), None, None, ServerMetrics("test", "test"), store,
                              max_sessions=4, max_speech_s=10.0, connect_timeout_s=30.0)
        for i in range(20):
            s = _ClosingSession(f"c{i}", store)
            reg.register(s)
            store.frame_sent(s.id, _meta(s.id, 0), False, now=0.08)
            await reg.close(s)
            assert s.id not in reg
        return store

    store = asyncio.run(go())
    assert store._recent == {}
