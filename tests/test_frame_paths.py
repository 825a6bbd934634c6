"""One frame step for every path: the batched loop with real tracks on a manual clock, and offline
``render`` against the stream — same speech, same per-frame mouth parameters, same frames.

No sleeps and no wall-clock asserts: the manual clock moves only when the test says, and
``FrameLoop.drain`` waits for the worker thread instead of sleeping.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from realtime.clock import ManualClock
from realtime.frame_loop import FrameLoop
from realtime.render import render
from realtime.session import Session
from realtime.tracks import AvatarVideoTrack, DelayedAudioTrack

FPS = 25.0


class _Capture:
    """Video and audio sinks that keep what a peer would receive, by frame number."""

    def __init__(self) -> None:
        self.frames: dict[int, np.ndarray] = {}
        self.samples: list[np.ndarray] = []
        self.frames_sent = self.frames_repeated = 0
        self.backlog_s = 0.0
        self.audio = _CaptureAudio(self.samples)

    def deliver(self, planes: np.ndarray, meta: object = None) -> None:
        self.frames[meta.frame] = planes.copy()

    def stop(self) -> None:
        pass


class _CaptureAudio:
    backlog_s = 0.0

    def __init__(self, samples: list[np.ndarray]) -> None:
        self.samples = samples

    def deliver(self, samples16k: np.ndarray) -> None:
        self.samples.append(samples16k.copy())

    def clear(self) -> None:
        pass

    def stop(self) -> None:
        pass


def _opening(params: np.ndarray) -> np.ndarray:
    return params[:, 0] * (1.0 - params[:, 2])


def test_batched_loop_with_tracks_on_a_manual_clock(engine, avatar, speech_16k) -> None:
    """Two presenter sessions on one loop: one engine call per tick holding both, frames delivered in
    order, the tracks send them on the 25 fps grid with their pts, and the audio track sends speech."""
    from gated_engine import GatedEngine

    async def go() -> tuple[list[int], list[list[int]], list[int], float]:
        clock = ManualClock(0.0)
        gated = GatedEngine(engine)
        loop = FrameLoop(gated, clock)
        rows = loop.add_avatar(avatar)
        sessions = []
        for sid in ("a", "b"):
            video = AvatarVideoTrack(clock, loop.grid, loop.placeholder(avatar.name))
            s = Session(sid, avatar.name, rows, clock, video, DelayedAudioTrack(clock, loop.grid), engine.convention)
            s.speak(speech_16k[:16000])
            loop.add(s)
            sessions.append(s)
        a = sessions[0]
        pts, heard = [], []

        async def consume() -> None:
            while True:
                frame = await a.video.recv()
                pts.append(frame.pts)
                pcm = (await a.audio.recv()).to_ndarray()
                heard.append(float(np.abs(pcm).max()))

        consumer = asyncio.ensure_future(consume())
        rendered = []
        for n in range(1, 26):  # one second, tick by tick
            await clock.advance(1 / FPS)
            loop.tick(clock.now())
            await loop.drain()
            rendered.append([s.stats.frames_rendered for s in sessions])
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        await loop.stop()
        return gated.batches, rendered, pts, max(heard)

    batches, rendered, pts, loudest = asyncio.run(go())
    assert set(batches) == {2}, f"each tick should make one call holding both sessions: {batches}"
    assert [r[0] for r in rendered] == list(range(1, 26)) and all(a == b for a, b in rendered)
    assert pts[:5] == [k * 3600 for k in range(5)] and pts == sorted(set(pts))
    assert loudest > 1000  # the speech went out (int16 at 48 kHz)


def _stream(engine, avatar, wav: np.ndarray, n_frames: int) -> tuple[_Capture, Session]:  # noqa: ANN001
    """The server's path on a manual clock: a presenter session on a FrameLoop, ticked by hand."""

    async def go() -> tuple[_Capture, Session]:
        clock = ManualClock(0.0)
        loop = FrameLoop(engine, clock)
        rows = loop.add_avatar(avatar)
        sink = _Capture()
        s = Session("stream", avatar.name, rows, clock, sink, sink.audio, engine.convention, max_queue_s=1e9)
        s.speak(wav)
        loop.add(s)
        k = 0
        while s.stats.frames_rendered < n_frames and k < 4 * n_frames:
            loop.tick(clock.now())
            await loop.drain()
            await clock.advance(1 / FPS)
            k += 1
        await loop.stop()
        return sink, s

    return asyncio.run(go())


def test_render_is_the_stream_on_a_fast_clock(engine, avatar, speech_16k, tmp_path) -> None:
    wav = speech_16k[:int(2.4 * 16000)]
    offline = render(wav, avatar, engine, None, batch=8)
    n = offline.frames
    sink, session = _stream(engine, avatar, wav, n)
    assert session.stats.frames_skipped == 0
    assert sorted(sink.frames)[:n] == list(range(n)), "the stream skipped or reordered frames"
    # the same mouth parameters, frame for frame (the session keeps its openings)
    stream_open = np.array(session.stats.openings)[:n]
    np.testing.assert_allclose(stream_open, _opening(offline.params), atol=1e-5)
    assert _opening(offline.params).max() > 0.2  # there is speech in it: the comparison means something
    # the same frames, idle motion included (the still avatar breathes and blinks in both); float
    # rounding may move a pixel by one level (numpy's SIMD paths depend on buffer alignment)
    for k in range(n):
        d = np.abs(sink.frames[k].astype(np.int16) - offline.frames_i420[k])
        assert d.max() <= 1 and (d > 0).mean() < 1e-3, f"frame {k} differs: max {d.max()}, {(d > 0).sum()} px"
    assert not np.array_equal(offline.frames_i420[0], offline.frames_i420[n - 1])
    # and the same speech with them
    np.testing.assert_array_equal(np.concatenate(sink.samples)[:wav.size], np.concatenate(offline.audio_out)[:wav.size])


def test_render_mp4_matches_the_stream_within_encoder_noise(engine, avatar, speech_16k, tmp_path) -> None:
    import av

    wav = speech_16k[:int(1.2 * 16000)]
    out = tmp_path / "r.mp4"
    stats = render(wav, avatar, engine, out, batch=4)
    sink, _ = _stream(engine, avatar, wav, stats.frames)
    with av.open(str(out)) as c:
        decoded = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    assert len(decoded) == stats.frames
    for k in (0, stats.frames // 2, stats.frames - 1):
        err = decoded[k].astype(np.float64) - sink.frames[k]
        psnr = 10 * np.log10(255.0 ** 2 / max(np.mean(err ** 2), 1e-9))
        assert psnr > 32, f"frame {k}: PSNR {psnr:.1f} dB against the streamed frame"


@pytest.mark.parametrize("field,value", [("n_fft", 1024), ("fmin", 80.0)])
def test_a_model_whose_audio_convention_we_cannot_compute_is_refused(tmp_path, field, value) -> None:
    import json
    import shutil

    from engines.audio_convention import UnsupportedConvention
    from engines.manifest import DEFAULT_MODEL_DIR, ModelManifest

    d = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, d)
    man = json.loads((d / "manifest.json").read_text())
    man["audio"][field] = value
    (d / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(UnsupportedConvention, match=field):
        ModelManifest.load(d).convention
    from engines.factory import create_engine

    with pytest.raises(UnsupportedConvention, match="Wav2Lip mel"):
        create_engine("onnxruntime", d)


@pytest.mark.parametrize("render_when", ["tick", "window"])
def test_render_when_window_renders_as_soon_as_mic_audio_completes_it(engine, avatar, render_when) -> None:
    """With ``window`` a frame is rendered when its window's last mic packet arrives, with no tick in
    between; with ``tick`` it waits for the next tick."""

    async def go() -> tuple[int, int, float]:
        clock = ManualClock(0.0)
        loop = FrameLoop(engine, clock, render_when=render_when, coalesce_s=0.0)
        rows = loop.add_avatar(avatar)
        video = AvatarVideoTrack(clock, loop.grid, loop.placeholder(avatar.name))
        s = Session("m", avatar.name, rows, clock, video, DelayedAudioTrack(clock, loop.grid), engine.convention)
        loop.add(s)
        tone = (0.3 * np.sin(np.arange(320) * 0.2)).astype(np.float32)
        for i in range(8):  # 160 ms of mic audio in 20 ms packets, between ticks (no tick runs)
            clock.set(0.001 + 0.02 * i)
            s.on_mic_audio(tone)
            await asyncio.sleep(0)
            await loop.drain()
        before_tick = s.stats.frames_rendered
        clock.set(0.2)
        loop.tick(0.2)
        await loop.drain()
        await loop.stop()
        return before_tick, s.stats.frames_rendered, loop.kicks

    before, after, kicks = asyncio.run(go())
    if render_when == "window":
        # 160 ms of audio completes the windows of frames 0..1 (40 ms lookahead + 25 ms STFT context)
        assert before >= 2 and kicks >= 1, (before, kicks)
    else:
        assert before == 0 and kicks == 0 and after == 1
