"""Which 16x80 mel window belongs to video frame k.

Frame k shows the instant ``t_k = k / fps``.  Its window is the 16 mel frames that end
``lookahead`` seconds after ``t_k``: mel frames ``[e - 16, e)`` with
``e = round((t_k + lookahead) * 80) + 1`` (mel frame j is centred on ``j / 80`` s, so the last
frame in the window is the one centred closest to ``t_k + lookahead``).  The lookahead is a
property of the model (its manifest) and the main latency knob.  Frames outside the available
mel range read as silence, so a window before the first audio or past the end never fails.

Training (``export/``), offline render and the streaming server all call this module, which is
what keeps their windows identical.
"""

from __future__ import annotations

import numpy as np

from engines.mel import MEL_FPS, N_MELS, SILENCE_VALUE

WINDOW = 16  # mel frames per model input (200 ms)


def window_end(frame_index: int | np.ndarray, fps: float, lookahead_s: float) -> np.ndarray | int:
    """Exclusive end mel index of the window for ``frame_index`` (scalar or array)."""
    t = np.asarray(frame_index, dtype=np.float64) / fps + lookahead_s
    end = np.rint(t * MEL_FPS).astype(np.int64) + 1
    return int(end) if end.ndim == 0 else end


def windows_at(mel: np.ndarray, ends: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Gather windows ending at mel indices ``ends`` -> (len(ends), 1, 80, 16) float32.

    ``mel`` is (80, T) in the normalised range; indices outside ``[0, T)`` read as silence.
    ``out`` may be a preallocated array of the right shape (the hot path reuses one).
    """
    ends = np.asarray(ends, dtype=np.int64).reshape(-1)
    idx = ends[:, None] + np.arange(-WINDOW, 0)[None, :]  # (n, 16)
    valid = (idx >= 0) & (idx < mel.shape[1])
    gathered = mel[:, np.clip(idx, 0, max(mel.shape[1] - 1, 0))] if mel.shape[1] else \
        np.full((N_MELS,) + idx.shape, SILENCE_VALUE, np.float32)
    gathered = np.where(valid[None], gathered, np.float32(SILENCE_VALUE))  # (80, n, 16)
    if out is None:
        out = np.empty((ends.size, 1, N_MELS, WINDOW), np.float32)
    out[:, 0] = gathered.transpose(1, 0, 2)
    return out


def frame_windows(mel: np.ndarray, frame_indices: np.ndarray, fps: float, lookahead_s: float) -> np.ndarray:
    """Windows for video frames ``frame_indices`` -> (n, 1, 80, 16)."""
    return windows_at(mel, np.atleast_1d(window_end(np.asarray(frame_indices), fps, lookahead_s)))


def frame_count(n_samples: int, sample_rate: int, fps: float) -> int:
    """Number of video frames that cover ``n_samples`` of audio (the last partial frame counts)."""
    return int(np.ceil(n_samples / sample_rate * fps))
