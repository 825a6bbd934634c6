"""engines.windows: which mel frames form the window of video frame k."""

from __future__ import annotations

import numpy as np
import pytest

from engines.mel import N_MELS, SILENCE_VALUE
from engines.windows import WINDOW, frame_count, frame_windows, window_end, windows_at


def ramp_mel(t: int) -> np.ndarray:
    """A mel whose every value is its own frame index: windows show which frames they hold."""
    return np.broadcast_to(np.arange(t, dtype=np.float32), (N_MELS, t)).copy()


def test_window_end_without_lookahead() -> None:
    # Frame k at 25 fps is at k/25 s = 3.2k mel frames; the window's last frame is the nearest one.
    assert window_end(0, 25, 0.0) == 1
    assert window_end(1, 25, 0.0) == 4  # 3.2 -> 3, exclusive end 4
    assert window_end(5, 25, 0.0) == 17
    ends = window_end(np.arange(4), 25, 0.0)
    assert ends.tolist() == [1, 4, 7, 11]


@pytest.mark.parametrize("lookahead_s", [0.0, 0.04, 0.1])
def test_lookahead_shifts_end(lookahead_s: float) -> None:
    k = np.arange(50)
    shift = np.asarray(window_end(k, 25, lookahead_s)) - np.asarray(window_end(k, 25, 0.0))
    # 40 ms = 3.2 mel frames, 100 ms = 8; rounding moves a frame by at most one.
    assert np.all(np.abs(shift - lookahead_s * 80) <= 1)
    assert abs(shift.mean() - lookahead_s * 80) < 0.5


def test_windows_at_gathers_consecutive_frames() -> None:
    mel = ramp_mel(100)
    out = windows_at(mel, np.array([20, 50, 100]))
    assert out.shape == (3, 1, N_MELS, WINDOW) and out.dtype == np.float32
    for row, end in zip(out, [20, 50, 100]):
        assert row[0, 0].tolist() == list(range(end - WINDOW, end))
        assert np.all(row[0] == row[0, :1])  # every band holds the same frame


def test_silence_before_start_and_after_end() -> None:
    mel = ramp_mel(30)
    before, after = windows_at(mel, np.array([5, 35]))[:, 0, 0]
    assert before.tolist() == [SILENCE_VALUE] * 11 + [0, 1, 2, 3, 4]
    assert after.tolist() == list(range(19, 30)) + [SILENCE_VALUE] * 5
    far = windows_at(mel, np.array([-10, 500]))
    assert np.all(far == SILENCE_VALUE)


def test_empty_mel_reads_silence() -> None:
    out = windows_at(np.zeros((N_MELS, 0), np.float32), np.array([0, 16]))
    assert out.shape == (2, 1, N_MELS, WINDOW) and np.all(out == SILENCE_VALUE)


def test_out_buffer_is_filled_in_place() -> None:
    mel = ramp_mel(40)
    buf = np.zeros((2, 1, N_MELS, WINDOW), np.float32)
    res = windows_at(mel, np.array([16, 40]), out=buf)
    assert res is buf and buf[1, 0, 0, -1] == 39


def test_frame_windows_matches_window_end() -> None:
    mel = ramp_mel(200)
    frames = np.arange(0, 60, 7)
    out = frame_windows(mel, frames, 25, 0.04)
    ends = window_end(frames, 25, 0.04)
    assert out.shape == (frames.size, 1, N_MELS, WINDOW)
    assert np.array_equal(out, windows_at(mel, ends))
    assert out[-1, 0, 0, -1] == ends[-1] - 1


def test_frame_count() -> None:
    assert frame_count(16000, 16000, 25) == 25
    assert frame_count(16001, 16000, 25) == 26
    assert frame_count(0, 16000, 25) == 0
