"""The server's pure parts, fast and without a network: clock, grid, tracks on a manual clock,
a session's timeline (silence fill, debt, presenter queue), bitrate damping, idle motion."""

from __future__ import annotations

import asyncio
import fractions

import numpy as np
import pytest

from realtime.clock import ManualClock, TickGrid, wait_event_until
from realtime.idle_motion import IdleMotion
from realtime.low_latency import BitrateDamper, DampedVp8Encoder, install, installed, live_audio_buffers, uninstall
from engines.audio_convention import AudioConvention
from realtime.frame_meta import FrameMeta, FrameTiming
from realtime.session import Session
from realtime.tracks import AUDIO_CHUNK, AvatarVideoTrack, DelayedAudioTrack


def test_tick_grid() -> None:
    g = TickGrid(10.0, 25.0)
    assert g.time_of(3) == pytest.approx(10.12)
    assert g.index_at(10.119) == 2 and g.index_at(10.12) == 3 and g.index_at(9.99) == -1
    assert g.next_tick(10.121) == pytest.approx(10.16) and g.next_tick(10.12) == pytest.approx(10.12)


def test_manual_clock_wakes_sleepers_in_order() -> None:
    async def go() -> list[tuple[str, float]]:
        clock, woke = ManualClock(), []

        async def sleeper(name: str, t: float) -> None:
            await clock.sleep_until(t)
            woke.append((name, clock.now()))

        tasks = [asyncio.ensure_future(sleeper("b", 0.2)), asyncio.ensure_future(sleeper("a", 0.1))]
        await asyncio.sleep(0)
        await clock.advance(0.15)
        assert woke == [("a", 0.1)]
        event = asyncio.Event()
        waiter = asyncio.ensure_future(wait_event_until(clock, event, 0.5))
        await clock.advance(0.1)
        event.set()
        assert await waiter is True
        assert await wait_event_until(clock, asyncio.Event(), 0.1) is False  # deadline already past
        await asyncio.gather(*tasks)
        return woke

    assert asyncio.run(go()) == [("a", 0.1), ("b", 0.2)]


def test_video_track_paces_to_the_grid_and_repeats_when_starved() -> None:
    async def go() -> None:
        clock = ManualClock(0.01)
        grid = TickGrid(0.0, 25.0)
        sent = []
        track = AvatarVideoTrack(clock, grid, np.zeros((6, 4), np.uint8), wait_s=0.03,
                                 on_sent=lambda meta, rep: sent.append((meta, rep)))
        recv = asyncio.ensure_future(track.recv())
        await clock.advance(0.03)  # slot 0.04 not reached
        assert not recv.done()
        await clock.advance(0.015)  # slot reached, no frame yet: waits up to 0.07
        assert not recv.done()
        track.deliver(np.full((6, 4), 7, np.uint8), meta="m0")
        await clock.advance(0.001)
        f0 = await recv
        assert f0.pts == 0 and sent == [("m0", False)]
        recv = asyncio.ensure_future(track.recv())
        await clock.advance(0.2)  # nothing delivered: the last frame again, counted as a drop
        f1 = await recv
        assert f1.pts == 3600 and sent[-1] == (None, True) and track.frames_repeated == 1
        assert f1.to_ndarray()[0, 0] == 7
        # recv called late: pts jump to the current slot instead of drifting behind real time
        recv = asyncio.ensure_future(track.recv())
        await clock.advance(0.05)
        assert (await recv).pts >= 5 * 3600

    asyncio.run(go())


def test_video_track_sends_a_waiting_frame_early_instead_of_a_slot_late() -> None:
    """A frame delivered just after a slot goes out when it arrives, not ~40 ms later at the next
    slot: otherwise the track can lock one slot behind the frame loop for the whole call."""
    async def go() -> None:
        clock = ManualClock(0.0)
        grid = TickGrid(0.0, 25.0)
        sent_at = []
        track = AvatarVideoTrack(clock, grid, np.zeros((6, 4), np.uint8), wait_s=0.035, lead_s=0.03,
                                 on_sent=lambda meta, rep: sent_at.append((meta, clock.now())))
        track.deliver(np.zeros((6, 4), np.uint8), meta="f0")
        await track.recv()  # slot 0.0
        await clock.advance(0.005)
        track.deliver(np.zeros((6, 4), np.uint8), meta="f1")  # for slot 0.04, 35 ms early
        recv = asyncio.ensure_future(track.recv())
        await clock.advance(0.004)  # 0.009: not yet within lead_s of the slot
        assert not recv.done()
        await clock.advance(0.002)  # 0.011 >= 0.04 - 0.03: the waiting frame goes
        frame = await recv
        assert sent_at[-1][0] == "f1" and sent_at[-1][1] == pytest.approx(0.01, abs=1.5e-3)
        assert frame.pts == 3600  # still the slot's timestamp: pacing unchanged

    asyncio.run(go())


def test_audio_track_sends_delivered_speech_then_silence() -> None:
    async def go() -> None:
        clock = ManualClock(0.0)
        track = DelayedAudioTrack(clock, TickGrid(0.0), wait_s=0.01)
        tone = 0.5 * np.sin(np.arange(640) * 0.3).astype(np.float32)
        for _ in range(3):
            track.deliver(tone)  # 3 video frames = 120 ms
        frames = []
        for _ in range(8):
            recv = asyncio.ensure_future(track.recv())
            await clock.advance(0.02)
            frames.append(await recv)
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
        assert all(f.samples == AUDIO_CHUNK and f.sample_rate == 48000 for f in frames)
        assert [f.pts for f in frames] == [i * AUDIO_CHUNK for i in range(8)]
        assert np.abs(pcm[:5000]).max() > 10000  # the tone, upsampled
        assert np.abs(pcm[-960 * 2:]).max() == 0  # then silence
        track.deliver(tone)
        track.clear()
        assert track.backlog_s == 0.0

    asyncio.run(go())


def _session(clock: ManualClock) -> Session:
    grid = TickGrid(0.0)
    video = AvatarVideoTrack(clock, grid, np.zeros((6, 4), np.uint8))
    audio = DelayedAudioTrack(clock, grid)
    return Session("s", "a", np.zeros(1, np.int64), clock, video, audio, AudioConvention.wav2lip(0.04))


def test_presenter_timeline_runs_in_real_time_with_silence_between() -> None:
    clock = ManualClock(0.0)
    s = _session(clock)
    s.speak(np.full(1600, 0.25, np.float32))  # 100 ms
    s.feed(0.0)
    lead = s.timeline.fed
    assert 0.05 * 16000 < lead < 0.15 * 16000  # the presenter runs a little ahead of now
    for t in np.arange(0.04, 1.0, 0.04):
        clock.set(float(t))
        s.feed(float(t))
    assert s.timeline.fed == pytest.approx(16000 * 0.96 + lead, abs=2)  # exactly real time
    assert s.source.queued_s == 0.0
    speech = s.timeline.audio_of_frames(0, 3)  # the first 120 ms: the 100 ms of speech, then silence
    assert np.all(speech[:1600] == 0.25) and np.all(speech[1600:] == 0.0)


def test_mic_timeline_fills_late_audio_and_repays_the_debt() -> None:
    clock = ManualClock(0.0)
    s = _session(clock)
    chunk = np.full(320, 0.1, np.float32)
    for i in range(10):  # 200 ms of mic audio arriving on time
        clock.set(0.02 * (i + 1))
        s.on_mic_audio(chunk)
        s.feed(clock.now())
    assert s.has_mic and s.timeline.fed == 3200 and s.source.stats.silence_filled == 0
    clock.set(0.5)  # the mic stalls for 300 ms: the frame loop fills what is over 100 ms late
    s.feed(0.5)
    filled = s.source.stats.silence_filled
    # the first packet (at 0.02 s) anchored sample 0 at 0.02 s; fill up to 100 ms before now
    assert filled == int((0.5 - 0.02) * 16000) - 1600 - 3200
    assert s.timeline.fed == 3200 + filled
    for _ in range(15):  # the late audio arrives in a burst: the filled part is discarded
        s.on_mic_audio(chunk)
    assert s.source.stats.late_discarded == filled
    assert s.timeline.fed == 3200 + filled + 15 * 320 - filled


def test_interrupt_is_an_event_applied_between_steps(engine, avatar) -> None:
    """Interrupt through the frame step, as the server posts it: nothing changes until the next
    step begins; then the queue is gone, the timeline restarts in silence, and a batch planned
    for the old timeline is not delivered."""
    from realtime.frame_step import FrameStep, Interrupt

    clock = ManualClock(0.0)
    step = FrameStep(engine)
    grid = TickGrid(0.0)
    rows = step.add_avatar(avatar)
    video = AvatarVideoTrack(clock, grid, step.renderers[avatar.name].placeholder())
    s = Session("s", avatar.name, rows, clock, video, DelayedAudioTrack(clock, grid), engine.convention)
    s.speak(np.full(16000, 0.3, np.float32))
    step.add(s)
    clock.set(0.2)
    step.begin(0.2)
    old = step.plan(0.2)
    assert old is not None and s.timeline.fed > 0
    step.post(Interrupt("s"))
    assert s.source.queued_s > 0.5  # posted, not applied yet
    clock.set(0.24)
    step.begin(0.24)
    assert s.source.queued_s == 0.0 and s.timeline.origin == 0.24
    assert np.all(s.timeline.audio_of_frames(0, 2) == 0.0)
    step.deliver(old, step.render(old), 0.25)  # the batch in flight for the old timeline
    assert s.stats.frames_rendered == 0
    clock.set(0.4)
    step.begin(0.4)
    new = step.plan(0.4)
    step.deliver(new, step.render(new), 0.41)
    assert s.stats.frames_rendered == 1 and s.stats.openings[-1] < 0.05  # from silence: closed


def test_bitrate_damper_moves_in_few_steps() -> None:
    d = BitrateDamper(hold_up_s=5.0)
    targets = [d.update(b, t * 0.2) for t, b in enumerate(np.linspace(300_000, 1_500_000, 50))]
    assert len(set(targets)) <= 3  # a 10 s ramp in 2% steps: a couple of changes, not 50
    assert d.update(320_000, 100.0) == 300_000  # congestion goes down at once


def test_low_latency_install_caps_audio_prefetch_and_damps_encoders() -> None:
    from aiortc import rtcrtpreceiver, rtcrtpsender
    from aiortc.jitterbuffer import JitterBuffer
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    was = installed()
    install()
    try:
        assert installed()
        audio = rtcrtpreceiver.JitterBuffer(capacity=16, prefetch=4)
        assert audio.prefetch_frames == 1 and audio in live_audio_buffers()
        assert not hasattr(rtcrtpreceiver.JitterBuffer(capacity=512, is_video=True), "prefetch_frames")
        enc = rtcrtpsender.get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96))
        assert isinstance(enc, DampedVp8Encoder)
        enc.target_bitrate = 540_000  # +8%: stays
        assert enc.target_bitrate == 500_000
    finally:
        uninstall()
    assert installed() == was  # undone: aiortc's own factory is back unless someone else installed
    if not was:
        assert rtcrtpreceiver.JitterBuffer is JitterBuffer


def test_vp8_encoder_runs_without_the_denoiser_through_rebuilds_and_decodes() -> None:
    import av
    from aiortc.codecs.vpx import Vp8Decoder, VpxPayloadDescriptor
    from aiortc.jitterbuffer import JitterFrame

    from realtime.vp8_encoder import TunedVp8Encoder

    rng = np.random.default_rng(0)
    enc, dec = DampedVp8Encoder(), Vp8Decoder()
    assert isinstance(enc, TunedVp8Encoder)
    img = np.repeat(np.repeat(rng.integers(0, 255, (16, 16, 3), np.uint8), 8, 0), 8, 1)
    for i in range(3):
        if i == 2:
            enc.damper.hold_up_s = 0.0
            enc.target_bitrate = 1_200_000  # a ladder step: aiortc rebuilds its codec
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i * 3600, fractions.Fraction(1, 90000)
        payloads, _ = enc.encode(frame, force_keyframe=i == 0)
        assert enc.codec is enc.built_codec and enc.codec.bit_rate == enc.target_bitrate  # aiortc kept ours
        assert enc.built_options["noise-sensitivity"] == "0" and enc.built_options["cpu-used"] == "-6"
        data = b"".join(VpxPayloadDescriptor.parse(p)[1] for p in payloads)
        out = dec.decode(JitterFrame(data=data, timestamp=i * 3600))
        if i == 0:
            decoded = out[0].to_ndarray(format="rgb24").astype(int)
            assert np.abs(decoded - img).mean() < 8  # a real, decodable VP8 picture
    assert enc.codec.bit_rate == 1_200_000


def test_mic_ptime_goes_into_the_answers_audio_section_only() -> None:
    from realtime.codecs import with_mic_ptime

    sdp = ("v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=ptime:20\r\n"
           "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n")
    out = with_mic_ptime(sdp, 10)
    audio, video = out.split("m=video")
    assert "a=ptime:10\r\n" in audio and "a=ptime:20" not in out and "ptime" not in video
    assert out.endswith("\r\n") and out.count("\r\n") == sdp.count("\r\n")
    assert with_mic_ptime(sdp, 20) == sdp  # the default leaves the answer as aiortc wrote it
    last = with_mic_ptime("v=0\nm=video 9 X 96\nm=audio 9 X 111\na=rtpmap:111 opus/48000/2", 10)
    assert last.endswith("opus/48000/2\na=ptime:10")  # audio last, LF-only, no trailing newline


def test_idle_motion_is_subtle_and_alive() -> None:
    rng = np.random.default_rng(0)
    img = (rng.random((128, 128, 3)) * 255).astype(np.uint8)
    img = np.ascontiguousarray(np.repeat(np.repeat(img[::8, ::8], 8, 0), 8, 1))
    idle = IdleMotion(128, 128)
    a, b = idle.apply(img, 0.0).copy(), idle.apply(img, 2.0).copy()
    c = idle.apply(img, 2.04).copy()
    assert not np.array_equal(a, b)  # it moves over seconds
    assert np.abs(b.astype(int) - c).mean() < np.abs(a.astype(int) - b).mean() / 5  # slowly
    assert np.abs(idle.matrix(1.3)[:, :2] - np.eye(2)).max() < 0.02  # a tiny warp


def test_a_tick_that_finds_the_worker_busy_plans_nothing_and_is_counted(engine, avatar) -> None:
    """The worker is held inside the engine call: the next tick returns without planning (counted),
    and the frame is delivered once the worker lets go.  No sleeps, no wall-clock asserts."""
    from gated_engine import GatedEngine
    from realtime.frame_loop import FrameLoop
    from realtime.metrics import ServerMetrics

    async def go() -> None:
        clock = ManualClock(0.0)
        metrics = ServerMetrics("gated", "m")
        gated = GatedEngine(engine, open_=False)
        loop = FrameLoop(gated, clock, metrics)
        rows = loop.add_avatar(avatar)
        video = AvatarVideoTrack(clock, loop.grid, loop.placeholder(avatar.name))
        s = Session("s", avatar.name, rows, clock, video, DelayedAudioTrack(clock, loop.grid), engine.convention)
        loop.add(s)
        clock.set(0.2)
        loop.tick(0.2)  # submits a frame; the worker blocks inside the engine
        await asyncio.get_running_loop().run_in_executor(None, gated.entered.wait, 10)
        clock.set(0.24)
        loop.tick(0.24)
        assert metrics.ticks_busy._value.get() == 1 and gated.batches == [1]
        gated.release()
        await loop.drain()
        assert s.stats.frames_rendered == 1
        await loop.stop()

    asyncio.run(go())


def test_frame_stages_add_up_to_the_latency() -> None:
    """Each stage starts where the previous ended, so a dashboard's stacked bars equal the total."""
    meta = FrameMeta("s", 7, heard_at=10.0, ready_at=10.055,
                     timing=FrameTiming(planned_at=10.08, infer_s=0.004, composite_s=0.001, rendered_at=10.0075 + 0.08))
    stages = meta.stages(sent_at=10.12)
    assert stages["lookahead"] == pytest.approx(0.055) and stages["tick_wait"] == pytest.approx(0.025)
    assert sum(stages.values()) == pytest.approx(0.12)
    # a window completed "after" its tick (clock granularity) is clamped, never negative
    late = FrameMeta("s", 7, 10.0, 10.2, FrameTiming(10.08, 0.004, 0.001, 10.09)).stages(10.1)
    assert min(late.values()) >= 0 and sum(late.values()) == pytest.approx(0.1)


def test_avatar_registry_forgets_unused_avatars_but_never_one_in_use(engine, avatar, tmp_path) -> None:
    """Avatars come and go: past ``max_loaded`` the least recently used unused one is dropped, so
    the engine's tables stay bounded; the avatar a live session shows is kept."""
    import json
    import shutil

    from realtime.avatars import AvatarRegistry
    from realtime.frame_loop import FrameLoop

    names = [f"a{i}" for i in range(6)]
    for name in names:
        shutil.copytree(avatar.path, tmp_path / name)
        man = json.loads((tmp_path / name / "manifest.json").read_text())
        man["name"] = name
        (tmp_path / name / "manifest.json").write_text(json.dumps(man))

    async def go() -> tuple[list[int], int, bool]:
        clock = ManualClock(0.0)
        loop = FrameLoop(engine, clock)
        reg = AvatarRegistry(loop, engine.manifest.features_version, tmp_path, keep="a0", max_loaded=2)
        await reg.get("a0")
        held, rows = await reg.get("a1")
        video = AvatarVideoTrack(clock, loop.grid, loop.placeholder("a1"))
        s = Session("s", "a1", rows, clock, video, DelayedAudioTrack(clock, loop.grid), engine.convention)
        loop.add(s)  # a1 is in use from now on
        sizes = []
        for name in names[2:]:
            await reg.get(name)
            sizes.append(len(reg))
        kept = "a1" in loop.step.renderers and "a0" in loop.step.renderers
        await loop.stop()
        return sizes, engine.table_rows, kept

    rows_before = engine.table_rows
    sizes, rows_after, kept = asyncio.run(go())
    assert max(sizes) <= 3, sizes  # the default, the one in use, the newest
    assert kept, "evicted the default avatar or the one a session shows"
    assert rows_after - rows_before <= 4 * avatar.n_frames  # 3 kept + the one loaded before evicting
