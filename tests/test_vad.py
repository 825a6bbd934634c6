"""realtime.vad: speech vs silence / low noise, hangover, streaming == offline."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.vad import FRAME_SAMPLES, VadStream, speech_mask

FPS = 25


def padded_speech(speech: np.ndarray, noise: float = 0.0, seed: int = 0) -> tuple[np.ndarray, int, int]:
    """1 s quiet, the speech, 1.5 s quiet; returns the signal and the speech's video-frame span."""
    rng = np.random.default_rng(seed)
    sig = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(24000, np.float32)])
    sig += (rng.standard_normal(sig.size) * noise).astype(np.float32)
    return sig, 25, 25 + int(speech.size / 16000 * FPS)


@pytest.mark.parametrize("noise", [0.0, 3e-4])
def test_speech_found_and_quiet_rejected(speech_16k: np.ndarray, noise: float) -> None:
    sig, first, last = padded_speech(speech_16k, noise)
    mask = speech_mask(sig, FPS)
    assert mask.shape == (int(np.ceil(sig.size / 16000 * FPS)),) and mask.dtype == np.bool_
    assert not mask[: first - 2].any()  # the leading quiet second
    assert mask[first + 2 : last - 2].mean() > 0.9  # the sentence (with hangover filling gaps)
    assert not mask[last + 10 :].any()  # quiet again once the hangover is over


@pytest.mark.parametrize("level", [0.0, 1e-4, 1e-3])
def test_noise_alone_is_not_speech(level: float) -> None:
    x = (np.random.default_rng(1).standard_normal(16000 * 3) * level).astype(np.float32)
    assert speech_mask(x, FPS)[5:].sum() == 0  # webrtcvad may need ~100 ms to settle at the start


def test_hiss_after_speech_is_not_speech(speech_16k: np.ndarray) -> None:
    """webrtcvad alone calls -60 dBFS hiss speech for seconds after talking; the floor stops it."""
    rng = np.random.default_rng(2)
    sig = np.concatenate([speech_16k, (rng.standard_normal(16000 * 3) * 1e-3).astype(np.float32)])
    mask = speech_mask(sig, FPS)
    tail_start = int(speech_16k.size / 16000 * FPS) + 8  # past the hangover
    assert not mask[tail_start:].any()
    unfloored = speech_mask(sig, FPS, floor_dbfs=-120.0)
    assert unfloored[tail_start:].any()  # the floor is what makes the difference here


def test_hangover_bridges_short_gaps_only() -> None:
    rng = np.random.default_rng(3)
    loud = lambda s: (rng.standard_normal(int(16000 * s)) * 0.1).astype(np.float32)  # noqa: E731
    quiet = lambda s: np.zeros(int(16000 * s), np.float32)  # noqa: E731
    # burst, 100 ms gap, burst, 600 ms gap: the short gap is bridged, the long one is not.
    v = VadStream(hangover_s=0.15)
    v.push(np.concatenate([loud(0.5), quiet(0.1), loud(0.5), quiet(0.6)]))
    raw = v.raw(0, v.frames_decided)
    assert not raw[27:30].any()  # webrtcvad itself sees the 100 ms gap...
    flags = v.speech_between(np.arange(0, 1.7, 0.02), np.arange(0.02, 1.72, 0.02))
    assert flags[5:55].all()  # ...the hangover bridges it
    assert flags[55 + 8:].sum() == 0  # and lets go within 150 ms of the long gap
    no_hang = VadStream(hangover_s=0.0)
    no_hang.push(np.concatenate([loud(0.5), quiet(0.1), loud(0.5)]))
    assert not no_hang.speech_between(0.54, 0.58)


def test_streaming_equals_offline_any_chunking(speech_16k: np.ndarray) -> None:
    sig, _, _ = padded_speech(speech_16k)
    sig = sig[: sig.size - sig.size % FRAME_SAMPLES]  # whole VAD frames: no tail padding differs
    offline = speech_mask(sig, FPS)
    rng = np.random.default_rng(4)
    v, i = VadStream(history_s=30), 0
    while i < sig.size:
        n = int(rng.integers(1, 1500))
        v.push(sig[i : i + n])
        i += n
    assert v.frames_decided == sig.size // FRAME_SAMPLES
    assert np.array_equal(v.speech_at_frames(np.arange(offline.size), FPS), offline)
    assert v.speech_at_frame(int(np.flatnonzero(offline)[3]), FPS) is True


def test_unknown_and_evicted_frames_are_not_speech() -> None:
    v = VadStream(history_s=1.0, hangover_s=0.0)
    assert v.speech_at_frame(0) is False  # nothing heard yet
    v.push((np.random.default_rng(5).standard_normal(16000 * 3) * 0.1).astype(np.float32))
    assert v.speech_at_frame(70)  # within the last second
    assert not v.speech_at_frame(10)  # evicted from the 1 s history
    assert not v.speech_at_frame(200)  # the future
    v.reset()
    assert v.frames_decided == 0 and not v.speech_at_frame(70)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="aggressiveness"):
        VadStream(aggressiveness=5)
    with pytest.raises(ValueError, match="mono"):
        VadStream().push(np.zeros((2, 320), np.float32))
