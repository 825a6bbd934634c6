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
    streams = build_streams(paths, copies=1, seed=3, workers=1)
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
