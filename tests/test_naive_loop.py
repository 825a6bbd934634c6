"""The benchmarks' naive frame path (``python -m benchmarks.serve --scheduler naive``): per-session timers, batch-1 engine calls.

It is the baseline of the concurrency benchmark, so it must be a correct server path, not a toy:
on a manual clock, every session ticks on its own timer, each engine call holds one frame, frames
arrive in order, a busy session's tick is counted, and an interrupt drops the frame in flight;
over real WebRTC, a mic session gets ~25 fps with the mouth following its speech, and a
presenter session is interrupted and closes its mouth.
"""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from realtime.clock import ManualClock
from realtime.server import K_STATE
from realtime.session import Session
from realtime.tracks import AvatarVideoTrack, DelayedAudioTrack
from benchmarks.serve import naive_frame_loop
from server_harness import connect, flite_speech, serving, speak_then_interrupt

SPEECH = "Hello there. Why would a wide blue map be here? Oh, I am amazed, what a day."
PRESENTER = "Good morning everyone. Today we will look at a wide open map of the whole bay area."
LEAD_S, TAIL_S = 1.0, 2.5


def _session(loop, clock, avatar, sid: str, engine) -> Session:  # noqa: ANN001
    rows = loop.add_avatar(avatar)
    video = AvatarVideoTrack(clock, loop.grid, loop.placeholder(avatar.name))
    return Session(sid, avatar.name, rows, clock, video, DelayedAudioTrack(clock, loop.grid), engine.convention)


def _frames_by_session(sessions: list[Session]) -> dict[str, list[int]]:
    """The frame numbers each session's video track was given, in delivery order."""
    out: dict[str, list[int]] = {}
    for s in sessions:
        got = out.setdefault(s.id, [])
        deliver = s.video.deliver

        def record(planes, meta=None, _got=got, _deliver=deliver) -> None:  # noqa: ANN001
            _got.append(meta.frame)
            _deliver(planes, meta)

        s.video.deliver = record
    return out


def test_sessions_tick_on_their_own_timers_with_batch_1_calls(engine, avatar) -> None:
    from benchmarks.naive_loop import NaiveFrameLoop
    from gated_engine import GatedEngine
    from realtime.frame_step import EndSession
    from realtime.metrics import ServerMetrics

    async def go() -> tuple[dict, list[int], dict[str, int]]:
        clock = ManualClock(0.0)
        rec = GatedEngine(engine)
        loop = NaiveFrameLoop(rec, clock, ServerMetrics("recording", "m"))
        loop.start()
        a = _session(loop, clock, avatar, "a", engine)
        loop.add(a)
        await clock.advance(0.013)  # b starts 13 ms later: its own phase
        b = _session(loop, clock, avatar, "b", engine)
        delivered = _frames_by_session([a, b])
        loop.add(b)
        for _ in range(100):  # 1 s in 10 ms steps, letting the pool finish each step
            await clock.advance(0.01)
            await loop.drain()
        assert len(loop) == 2
        ticks = loop.lane_ticks()
        loop.post(EndSession("a"))
        assert len(loop) == 1
        await loop.stop()
        return delivered, rec.batches, ticks

    delivered, batches, ticks = asyncio.run(go())
    assert batches and set(batches) == {1}, "the naive path must call the engine once per frame"
    assert 24 <= ticks["a"] <= 26 and 23 <= ticks["b"] <= 25, ticks
    for sid in ("a", "b"):
        frames = delivered[sid]
        assert len(frames) >= 15, (sid, frames)
        assert frames == sorted(set(frames)), f"frames of {sid} out of order or repeated: {frames}"


def test_busy_tick_is_counted_and_interrupt_drops_the_frame_in_flight(engine, avatar) -> None:
    from benchmarks.naive_loop import NaiveFrameLoop
    from gated_engine import GatedEngine
    from realtime.frame_step import Interrupt
    from realtime.metrics import ServerMetrics

    async def go() -> None:
        clock = ManualClock(0.0)
        metrics = ServerMetrics("gated", "m")
        gated = GatedEngine(engine, open_=False)
        loop = NaiveFrameLoop(gated, clock, metrics)
        s = _session(loop, clock, avatar, "s", engine)
        delivered = _frames_by_session([s])["s"]
        loop.add(s)
        clock.set(0.2)
        loop.tick(0.2)  # a frame goes to the pool, which blocks inside the engine
        await asyncio.get_running_loop().run_in_executor(None, gated.entered.wait, 10)
        assert loop.busy("s")
        clock.set(0.24)
        loop.tick(0.24)  # still in flight: plans nothing
        assert metrics.ticks_busy._value.get() == 1
        loop.post(Interrupt("s"))  # interrupt while the frame is in flight
        clock.set(0.26)
        loop.tick(0.26)  # the event applies at the lane's next step
        assert s.timeline.origin == 0.26
        gated.release()
        await loop.drain()
        assert not loop.busy("s")
        assert delivered == [] and s.stats.frames_rendered == 0, "a frame of the old timeline was delivered"
        clock.set(0.5)
        # a frame of the new timeline (0.24 s + the presenter lead of 0.09 s: <= frame 8), not of the
        # old one (0.59 s: frame 13)
        loop.tick(0.5)
        await loop.drain()
        assert len(delivered) == 1 and delivered[0] <= 8, delivered
        await loop.stop()

    asyncio.run(go())


@pytest.fixture(scope="module")
def call(engine, avatar, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("naive")
    speech = flite_speech(SPEECH, tmp / "speech.wav")
    flite_speech(PRESENTER, tmp / "presenter.wav")
    mic = np.concatenate([np.zeros(int(LEAD_S * 16000), np.float32), speech,
                          np.zeros(int(TAIL_S * 16000), np.float32)])
    box = tuple(int(v) for v in avatar.mouth_boxes[0])

    async def run() -> dict:
        async with serving(engine, frame_loop=naive_frame_loop) as (base, app):
            assert type(app[K_STATE].loop).__name__ == "NaiveFrameLoop"
            async with aiohttp.ClientSession() as http:
                # a mic call alone (as in test_server_stream: two calls in this one process would
                # measure the test's own CPU contention on a 2-core machine, not the server) ...
                client = await connect(base, http, mic=mic, mouth_box=box)
                await asyncio.sleep(mic.size / 16000 + 0.6)
                async with http.get(f"{base}/api/sessions/{client.session_id}") as r:
                    summary = await r.json()
                async with http.get(f"{base}/metrics") as r:
                    metrics = await r.text()
                async with http.get(f"{base}/healthz") as r:
                    health = await r.json()
                await client.close()
                # ... then a presenter call, interrupted while it speaks
                presenter = await connect(base, http, keep_frames=False)
                api = f"{base}/api/sessions/{presenter.session_id}"
                steps = await speak_then_interrupt(http, api, (tmp / "presenter.wav").read_bytes())
                await presenter.close()
        return {"client": client, "summary": summary, "metrics": metrics, "health": health,
                **{k: steps[k] for k in ("before", "interrupted", "at_200ms", "after")},
                "speech_s": speech.size / 16000}

    return asyncio.run(run())


def test_naive_video_arrives_at_25_fps(call: dict) -> None:
    ts = np.array([t for t, _ in call["client"].video])
    assert len(ts) > 100
    steady = ts[ts > ts[0] + 1.0]
    fps = (len(steady) - 1) / (steady[-1] - steady[0])
    assert fps >= 24.0, fps
    assert call["health"]["ticks"] > 100


def test_naive_mouth_follows_speech(call: dict) -> None:
    openings = np.array(call["summary"]["openings"])
    n_tail = int((TAIL_S - 1.2) * 25)
    assert openings.max() > 0.3, "the mouth never opened during speech"
    assert np.all(openings[-n_tail:] < 0.05), openings[-n_tail:]
    video = call["client"].video
    t0 = call["client"].mic.t0
    s0, s1 = t0 + LEAD_S, t0 + LEAD_S + call["speech_s"]
    motion = [(t, np.abs(f.astype(np.float32) - g.astype(np.float32)).mean())
              for (_, g), (t, f) in zip(video, video[1:])]
    speaking = np.array([m for t, m in motion if s0 + 0.2 < t < s1])
    quiet = np.array([m for t, m in motion if t > s1 + 0.6])
    assert len(speaking) > 25 and len(quiet) > 10
    assert np.percentile(speaking, 75) > 3 * max(np.percentile(quiet, 75), 0.5)


def test_naive_interrupt_closes_the_mouth(call: dict) -> None:
    assert max(call["before"]["openings"][-40:]) > 0.3, "pushed speech did not move the mouth"
    made_since = call["at_200ms"]["frames_rendered"] - call["interrupted"]["frames_rendered"]
    assert made_since >= 2, "no frames rendered after the interrupt"
    new = call["at_200ms"]["openings"][-made_since:]
    assert new[-1] < 0.05 and new[-2] < 0.05, new
    assert max(call["after"]["openings"][-20:]) < 0.05  # and it stays closed: the speech is gone


def test_naive_calls_the_engine_once_per_frame(call: dict) -> None:
    values = {line.split()[0]: float(line.split()[1]) for line in call["metrics"].splitlines()
              if line and not line.startswith("#")}
    count = values["lipstream_batch_size_count"]
    assert count > 150
    assert values['lipstream_batch_size_bucket{le="1.0"}'] == count
    assert values["lipstream_frames_sent_total"] > 150
    assert values.get('lipstream_latency_stage_seconds_count{stage="tick_wait"}', 0) > 100  # stages measured too
