"""An engine that raises or hangs does not stall the server: frames repeat, the fault is counted
and logged, a hung call is abandoned past its deadline (one abandoned thread at most), and the
server recovers when the engine works again.  On a manual clock, then on the real server."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np
import pytest
import requests

from live_server import LiveServer
from server_harness import connect

from realtime.clock import ManualClock
from realtime.frame_loop import FrameLoop
from realtime.metrics import ServerMetrics
from realtime.session import Session
from realtime.tracks import AvatarVideoTrack, DelayedAudioTrack


class FaultyEngine:
    """A real engine whose calls can be made to raise, or to block until released."""

    def __init__(self, engine) -> None:  # noqa: ANN001 - engines.base.Engine
        self.engine = engine
        self.mode = "ok"  # "ok" | "raise" | "block"
        self.calls = 0
        self.inside = 0  # calls blocked right now
        self.blocked = threading.Event()  # set when a call starts blocking
        self._release = threading.Event()
        self._lock = threading.Lock()

    def __getattr__(self, name: str):  # noqa: ANN204 - manifest, convention, warmup, ...
        return getattr(self.engine, name)

    def release(self) -> None:
        self.mode = "ok"
        self._release.set()

    def run_skipping_silence(self, mel, rows, gate):  # noqa: ANN001, ANN201 - every call can fail
        return self.run(mel, rows, gate)

    def run(self, mel, rows, gate):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.mode == "raise":
            raise RuntimeError("simulated engine failure")
        if self.mode == "block":
            with self._lock:
                self.inside += 1
            self.blocked.set()
            try:
                if not self._release.wait(timeout=30):
                    raise TimeoutError("the test never released the engine")
            finally:
                with self._lock:
                    self.inside -= 1
        return self.engine.run(mel, rows, gate)


def _render_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lipstream-render")]


def _errors(metrics: ServerMetrics, kind: str) -> float:
    return metrics.engine_errors.labels(kind)._value.get()


def _loop_with_session(engine, avatar, clock: ManualClock, metrics: ServerMetrics, **kw):  # noqa: ANN001, ANN202
    loop = FrameLoop(engine, clock, metrics, **kw)
    rows = loop.add_avatar(avatar)
    video = AvatarVideoTrack(clock, loop.grid, loop.placeholder(avatar.name))
    s = Session("s", avatar.name, rows, clock, video, DelayedAudioTrack(clock, loop.grid), engine.convention)
    s.speak(np.full(16000 * 20, 0.3, np.float32))
    loop.add(s)
    return loop, s


def test_a_raising_engine_repeats_frames_counts_logs_once_and_recovers(engine, avatar, caplog) -> None:
    async def go() -> None:
        clock, metrics = ManualClock(0.0), ServerMetrics("faulty", "m")
        faulty = FaultyEngine(engine)
        loop, s = _loop_with_session(faulty, avatar, clock, metrics)
        faulty.mode = "raise"
        for k in range(5, 30):
            clock.set(k * 0.04)
            loop.tick(k * 0.04)
            await loop.drain()
        assert s.stats.frames_rendered == 0 and _errors(metrics, "raised") == 25
        assert faulty.calls == 25  # every tick tried again; none was stuck
        faulty.mode = "ok"
        for k in range(30, 35):
            clock.set(k * 0.04)
            loop.tick(k * 0.04)
            await loop.drain()
        assert s.stats.frames_rendered >= 4
        await loop.stop()

    with caplog.at_level(logging.WARNING, logger="realtime.engine_faults"):
        asyncio.run(go())
    lines = [r for r in caplog.records if r.name == "realtime.engine_faults"]
    failed = [r for r in lines if "engine call failed" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None  # one line (with its traceback), not 25
    assert any("works again after 25" in r.getMessage() for r in lines)


def test_a_hung_call_is_abandoned_once_and_the_loop_carries_on(engine, avatar, caplog) -> None:
    async def go() -> None:
        clock, metrics = ManualClock(0.0), ServerMetrics("faulty", "m")
        faulty = FaultyEngine(engine)
        loop, s = _loop_with_session(faulty, avatar, clock, metrics, engine_deadline_s=1.0)
        threads_before = len(_render_threads())
        faulty.mode = "block"
        clock.set(0.2)
        loop.tick(0.2)
        await asyncio.get_running_loop().run_in_executor(None, faulty.blocked.wait, 10)
        for t in (0.6, 1.0, 1.2):  # within the deadline: busy ticks
            clock.set(t)
            loop.tick(t)
        assert _errors(metrics, "hung") == 0 and metrics.ticks_busy._value.get() == 3
        clock.set(1.24)
        loop.tick(1.24)  # past it: abandoned, a new worker takes this tick's frame (and blocks too)
        assert _errors(metrics, "hung") == 1 and metrics.engine_abandoned._value.get() == 1
        deadline = time.monotonic() + 10
        while faulty.inside < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert faulty.inside == 2 and len(_render_threads()) == threads_before + 1
        for t in (2.5, 3.0, 4.0):  # the second call hangs too: never a second abandoned thread
            clock.set(t)
            loop.tick(t)
        assert _errors(metrics, "hung") == 1 and len(_render_threads()) == threads_before + 1
        assert faulty.calls == 2 and s.stats.frames_rendered == 0
        faulty.release()
        await loop.drain()
        deadline = time.monotonic() + 10
        while loop.step.faults.returned == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert loop.step.faults.returned == 1 and metrics.engine_abandoned._value.get() == 0
        rendered = s.stats.frames_rendered
        assert rendered == 1  # the second call's frame; the abandoned one's was dropped
        for k in range(101, 106):
            clock.set(k * 0.04)
            loop.tick(k * 0.04)
            await loop.drain()
        assert s.stats.frames_rendered == rendered + 5
        deadline = time.monotonic() + 10
        while len(_render_threads()) > threads_before and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(_render_threads()) == threads_before  # the abandoned thread exited
        await loop.stop()

    with caplog.at_level(logging.WARNING, logger="realtime.engine_faults"):
        asyncio.run(go())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "has not returned after 1.0 s" in text and "abandoned engine call returned" in text


def test_stop_does_not_wait_for_a_hung_call(engine, avatar) -> None:
    async def go() -> float:
        clock, metrics = ManualClock(0.0), ServerMetrics("faulty", "m")
        faulty = FaultyEngine(engine)
        loop, _ = _loop_with_session(faulty, avatar, clock, metrics)
        faulty.mode = "block"
        clock.set(0.2)
        loop.tick(0.2)
        await asyncio.get_running_loop().run_in_executor(None, faulty.blocked.wait, 10)
        t0 = time.monotonic()
        await loop.stop()
        took = time.monotonic() - t0
        faulty.release()
        return took

    assert asyncio.run(go()) < 1.0


# -- the real server -------------------------------------------------------------------------


def _metric(base: str, name: str, kind: str) -> float:
    text = requests.get(base + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'{name}{{kind="{kind}"}}'):
            return float(line.split()[-1])
    raise AssertionError(f"{name}{{kind={kind}}} not in /metrics")


def _watch(srv: LiveServer, client, sid: str, seconds: float) -> dict:  # noqa: ANN001 - Client
    """Over ``seconds``: video frames the client received, frames the server rendered, the slowest
    /healthz answer, and the most render threads seen."""
    api = f"{srv.base}/api/sessions/{sid}"
    v0, r0 = len(client.video), requests.get(api, timeout=10).json()["frames_rendered"]
    t0, slowest, threads = time.monotonic(), 0.0, 0
    while time.monotonic() - t0 < seconds:
        t = time.monotonic()
        assert requests.get(srv.base + "/healthz", timeout=5).status_code == 200
        slowest = max(slowest, time.monotonic() - t)
        threads = max(threads, len(_render_threads()))
        time.sleep(0.1)
    dt = time.monotonic() - t0
    rendered = requests.get(api, timeout=10).json()["frames_rendered"] - r0
    return {"fps": (len(client.video) - v0) / dt, "rendered": rendered, "healthz_s": slowest, "threads": threads}


@pytest.fixture(scope="module")
def faulty_server(engine):
    faulty = FaultyEngine(engine)
    with LiveServer(faulty, engine_deadline_s=0.5) as srv:
        srv.faulty = faulty

        async def open_session():
            http = srv.http()
            return http, await connect(srv.base, http, keep_frames=False)

        http, client = srv.run(open_session())
        srv.client = client
        yield srv

        async def close() -> None:
            await client.close()
            await http.close()

        faulty.release()
        srv.run(close())


def test_server_streams_through_engine_faults_and_recovers(faulty_server) -> None:
    srv, faulty, client = faulty_server, faulty_server.faulty, faulty_server.client
    sid = client.session_id
    healthy = _watch(srv, client, sid, 1.0)
    assert healthy["rendered"] > 15 and healthy["fps"] > 15, healthy

    faulty.mode = "raise"
    time.sleep(0.2)  # a call already in flight may still deliver
    raising = _watch(srv, client, sid, 1.0)
    assert raising["rendered"] == 0 and raising["fps"] > 15, raising  # repeated frames keep coming
    assert raising["healthz_s"] < 0.5 and _metric(srv.base, "lipstream_engine_errors_total", "raised") > 10
    faulty.mode = "ok"
    assert _watch(srv, client, sid, 1.0)["rendered"] > 8

    faulty.mode = "block"
    time.sleep(0.2)
    hung = _watch(srv, client, sid, 1.5)
    assert hung["rendered"] == 0 and hung["fps"] > 15 and hung["healthz_s"] < 0.5, hung
    assert _metric(srv.base, "lipstream_engine_errors_total", "hung") == 1  # the second hung call waits
    base_threads = healthy["threads"]  # the server's own worker; an abandoned one comes on top
    assert hung["threads"] <= base_threads + 1, hung
    faulty.release()
    recovered = _watch(srv, client, sid, 1.0)
    assert recovered["rendered"] > 8 and recovered["fps"] > 15, recovered
    assert client.pc.connectionState == "connected"
