"""FrameScheduler as a pure object: real audio front-ends, no model, no clock."""

from __future__ import annotations

import numpy as np

from engines.audio_convention import AudioConvention
from engines.base import EngineOutput
from realtime.audio_frontend import AudioFrontEnd
from realtime.scheduler import FrameScheduler


def _front(seconds: float, seed: int = 0) -> AudioFrontEnd:
    f = AudioFrontEnd(AudioConvention.wav2lip(0.04))
    wav = (np.random.default_rng(seed).standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)
    for i in range(0, wav.size, 320):
        f.push(wav[i:i + 320])
    return f


def _fake_output(batch) -> EngineOutput:
    """Crops that encode (row, frame) so the routing back to sessions can be checked."""
    b = len(batch)
    crops = np.zeros((b, 3, 4, 4), np.float32)
    crops[:, 0] = batch.rows[:, None, None]
    crops[:, 1] = batch.frames[:, None, None]
    return EngineOutput(crops, np.zeros((b, 3), np.float32))


def test_only_ready_frames_are_planned_in_order():
    front = _front(1.0)
    ready = front.frames_ready()
    # 1 s of audio, 40 ms lookahead + half an FFT window: frames up to ~0.95 s are complete
    assert 20 <= ready <= 24
    s = FrameScheduler(max_batch=64)
    s.add("a", front, np.array([7]))
    b = s.plan(max_per_session=100)
    assert list(b.frames) == list(range(ready))
    assert (b.rows == 7).all() and b.mel.shape == (ready, 1, 80, 16)
    assert s.plan() is None  # nothing new until more audio arrives
    front.push(np.zeros(640, np.float32))
    b2 = s.plan(max_per_session=100)
    assert b2 is not None and b2.frames[0] == ready


def test_batch_limit_and_round_robin_fairness():
    s = FrameScheduler(max_batch=4)
    for i, sid in enumerate("abcdef"):
        s.add(sid, _front(1.0, seed=i), np.array([i]))
    seen = []
    for _ in range(3):
        b = s.plan(max_per_session=1)
        assert len(b) == 4
        seen += b.session_ids
    # six sessions, twelve slots: everyone got served twice, nobody starved
    assert sorted(seen) == sorted(list("abcdef") * 2)


def test_complete_routes_outputs_and_skips_removed_sessions():
    s = FrameScheduler(max_batch=8)
    s.add("a", _front(0.5), np.array([3, 4]))  # a two-frame (video) avatar
    s.add("b", _front(0.5, seed=1), np.array([9]))
    b = s.plan(max_per_session=2)
    s.remove("b")
    results = s.complete(b, _fake_output(b))
    assert {r.session_id for r in results} == {"a"}
    for r in results:
        assert r.crop[1, 0, 0] == r.frame
        assert r.crop[0, 0, 0] == [3, 4][r.avatar_frame]


def test_windows_match_the_offline_mel():
    from engines.mel import melspectrogram
    from engines.windows import frame_windows

    wav = (np.random.default_rng(5).standard_normal(16000) * 0.2).astype(np.float32)
    front = AudioFrontEnd(AudioConvention.wav2lip(0.04))
    for i in range(0, wav.size, 320):
        front.push(wav[i:i + 320])
    s = FrameScheduler(max_batch=64)
    s.add("a", front, np.array([0]))
    b = s.plan(max_per_session=64)
    offline = frame_windows(melspectrogram(wav), b.frames, 25, 0.04)
    assert np.abs(b.mel - offline).max() <= 1e-4


def test_skip_to_jumps_ahead_and_never_back():
    s = FrameScheduler(max_batch=64)
    front = _front(1.0)
    s.add("a", front, np.array([0]))
    assert s.skip_to("a", 10) == 10 and s.next_frame("a") == 10
    assert s.skip_to("a", 4) == 0 and s.next_frame("a") == 10
    assert s.plan(max_per_session=1).frames[0] == 10
