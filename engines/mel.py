"""Wav2Lip-family log-mel features, offline and streaming, computed with numpy only.

The serving path must not depend on librosa (numba, slow import), so the Slaney mel filterbank
and the STFT are written here with numpy; ``tests/test_mel.py`` checks them against librosa.

Convention (DESIGN.md): 16 kHz mono, pre-emphasis 0.97, STFT n_fft 800 / hop 200 / win 800 Hann,
80 Slaney mel bands 55-7600 Hz, ``20*log10(max(1e-5, x)) - 20`` dB, normalised
``clip(8*(S+100)/100 - 4, -4, 4)``.  Mel frame ``j`` is centred on sample ``j*200`` of the
signal; samples before 0 are zeros (librosa's ``center=True, pad_mode="constant"``).  The
pre-emphasis filter starts from a zero history, so a stream and a whole-file computation agree
exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MEL_FPS = SAMPLE_RATE / HOP  # 80 mel frames per second
SILENCE_VALUE = -MAX_ABS_VALUE  # what a window holds where there is no audio yet


@dataclass(frozen=True)
class MelConvention:
    """The mel front end a model was trained with; recorded in every model manifest (``audio``).

    This module computes exactly one convention, the default values; a manifest that records any
    other is refused by ``engines.audio_convention`` rather than served with the wrong features.
    """

    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    hop: int = HOP
    win: int = WIN
    n_mels: int = N_MELS
    fmin: float = FMIN
    fmax: float = FMAX
    preemphasis: float = PREEMPHASIS
    ref_level_db: float = REF_LEVEL_DB
    min_level_db: float = MIN_LEVEL_DB
    max_abs_value: float = MAX_ABS_VALUE
    silence_value: float = SILENCE_VALUE
    name: str = "wav2lip-mel-v1"


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


@lru_cache(maxsize=4)
def mel_filterbank(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   fmin: float = FMIN, fmax: float = FMAX) -> np.ndarray:
    """Slaney-normalised triangular mel filters, shape (n_mels, n_fft//2+1), float32."""
    fftfreqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_pts = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_pts[2 : n_mels + 2] - mel_pts[:n_mels]))[:, None]
    weights.setflags(write=False)
    return weights.astype(np.float32)


@lru_cache(maxsize=2)
def hann_window(n: int = WIN) -> np.ndarray:
    """Periodic Hann window (scipy/librosa ``get_window('hann', n, fftbins=True)``)."""
    w = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)
    w.setflags(write=False)
    return w


def preemphasis(x: np.ndarray, coef: float = PREEMPHASIS, prev: float = 0.0) -> np.ndarray:
    """y[n] = x[n] - coef*x[n-1], with ``prev`` as x[-1] so chunks chain exactly."""
    x = np.asarray(x, dtype=np.float32)
    y = np.empty_like(x)
    if x.size:
        y[0] = x[0] - coef * prev
        y[1:] = x[1:] - coef * x[:-1]
    return y


def frames_to_mel(frames: np.ndarray) -> np.ndarray:
    """Normalised log-mel of already windowed-out signal frames, shape (n, N_FFT) -> (80, n)."""
    spec = np.abs(np.fft.rfft(frames * hann_window(), n=N_FFT, axis=-1)).astype(np.float32)
    mel = mel_filterbank() @ spec.T
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
    return np.clip((2 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE,
                   -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def melspectrogram(wav: np.ndarray) -> np.ndarray:
    """Whole-signal mel, shape (80, 1 + len(wav)//200); frame j is centred on sample j*200."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected mono 16 kHz samples (1-D), got shape {wav.shape}")
    y = np.pad(preemphasis(wav), (N_FFT // 2, N_FFT // 2))
    n = 1 + wav.size // HOP
    frames = np.lib.stride_tricks.sliding_window_view(y, N_FFT)[::HOP][:n]
    return frames_to_mel(frames)
