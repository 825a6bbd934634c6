"""engines.mel (numpy) against a librosa reference of the Wav2Lip mel recipe."""

from __future__ import annotations

import numpy as np
import pytest

from engines import mel as M


def librosa_mel(wav: np.ndarray) -> np.ndarray:
    """The Wav2Lip-style recipe written with librosa/scipy, independently of engines.mel."""
    librosa = pytest.importorskip("librosa")
    signal = pytest.importorskip("scipy.signal")
    y = signal.lfilter([1.0, -0.97], [1.0], wav.astype(np.float64))
    spec = np.abs(librosa.stft(y, n_fft=800, hop_length=200, win_length=800, window="hann",
                               center=True, pad_mode="constant"))
    basis = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)  # Slaney
    db = 20 * np.log10(np.maximum(1e-5, basis @ spec)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def test_filterbank_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)
    ours = M.mel_filterbank()
    assert ours.shape == (80, 401)
    assert np.abs(ours - ref).max() <= 1e-6 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize("n", [0, 1, 199, 200, 16000, 16123])
def test_frame_count_and_shape(n: int) -> None:
    wav = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    out = M.melspectrogram(wav)
    assert out.shape == (80, 1 + n // 200)
    assert out.dtype == np.float32
    assert out.min() >= -4 and out.max() <= 4


def test_noise_matches_librosa() -> None:
    wav = (np.random.default_rng(1).standard_normal(16000 * 2) * 0.1).astype(np.float32)
    ref = librosa_mel(wav)
    ours = M.melspectrogram(wav)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-3


def test_speech_matches_librosa(speech_16k: np.ndarray) -> None:
    ref = librosa_mel(speech_16k)
    ours = M.melspectrogram(speech_16k)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-3
    # The comparison is not vacuous: speech spans the normalised range.
    assert ours.max() > 0 and ours.min() <= -3.9


def test_silence_is_floor_value() -> None:
    assert np.all(M.melspectrogram(np.zeros(3200, np.float32)) == M.SILENCE_VALUE)


def test_preemphasis_chains_across_chunks() -> None:
    x = np.random.default_rng(2).standard_normal(1000).astype(np.float32)
    whole = M.preemphasis(x)
    parts = np.concatenate([M.preemphasis(x[:333]), M.preemphasis(x[333:], prev=x[332])])
    assert np.abs(whole - parts).max() <= 1e-6


def test_rejects_stereo() -> None:
    with pytest.raises(ValueError, match="mono"):
        M.melspectrogram(np.zeros((2, 1600), np.float32))
