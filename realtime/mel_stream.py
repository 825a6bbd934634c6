"""Streaming Wav2Lip mel: frames computed as soon as their samples exist, kept in a ring.

Mel frame ``j`` is centred on sample ``j*200`` and spans samples ``[j*200 - 400, j*200 + 400)``
(``engines.mel``), so it is *complete* once ``j*200 + 400`` samples have arrived; from then on
it never changes, and it equals the same frame of ``melspectrogram(whole_signal)`` (pre-emphasis
carries its one-sample history across pushes).  The last frames of a finished signal lean on zero
padding past its end; :meth:`MelStream.finish` computes them when a signal is known to be over.

Frame indices are absolute (counted from the first sample since construction or :meth:`reset`),
which is what ``engines.windows.window_end`` produces; only the last ``history_s`` seconds are
kept, and a window reaching outside what is kept (or not computed yet) reads as silence, exactly
as ``engines.windows.windows_at`` treats the ends of a whole-signal mel.
"""

from __future__ import annotations

import numpy as np

from engines.mel import HOP, MEL_FPS, N_FFT, N_MELS, SILENCE_VALUE, frames_to_mel, preemphasis
from engines.windows import WINDOW

__all__ = ["MelStream"]

_PAD = N_FFT // 2  # centre padding: frame j starts at padded sample j*HOP
_BLOCK = 8000  # samples framed per pass; bounds the scratch buffer whatever the chunk size


class MelStream:
    """Incremental 80-band log-mel of one 16 kHz mono float32 stream.

    Not thread-safe; one per session.  ``push`` is the only hot-path call that allocates more than
    a few small arrays (the FFT of the newly completed frames).
    """

    def __init__(self, history_s: float = 4.0) -> None:
        self.capacity = max(WINDOW, int(np.ceil(history_s * MEL_FPS)))
        self._ring = np.full((N_MELS, self.capacity), SILENCE_VALUE, np.float32)
        # Pre-emphasised, centre-padded samples not yet consumed by a frame; _buf[0] is padded
        # sample _buf_start.  Room for one frame's overlap plus one block of new samples.
        self._buf = np.zeros(N_FFT + _BLOCK, np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget all audio: indices restart at 0 (e.g. after an interruption)."""
        self._ring.fill(SILENCE_VALUE)
        self._buf[:_PAD] = 0.0  # the zeros that precede sample 0
        self._buf_len = _PAD
        self._buf_start = 0
        self._prev = np.float32(0.0)
        self._frames = 0
        self._samples = 0
        self._finished = False

    @property
    def frames_ready(self) -> int:
        """Mel frames computed so far (absolute); frames ``[0, frames_ready)`` are final."""
        return self._frames

    @property
    def samples_seen(self) -> int:
        """16 kHz samples pushed since construction or the last reset."""
        return self._samples

    @property
    def oldest_frame(self) -> int:
        """Smallest absolute frame index still held in the ring."""
        return max(0, self._frames - self.capacity)

    def push(self, samples: np.ndarray) -> int:
        """Append 16 kHz mono float32 samples; returns how many new mel frames were completed."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono 16 kHz samples (1-D), got shape {x.shape}")
        if self._finished:
            raise RuntimeError("MelStream.finish() was called; reset() before pushing more audio")
        before = self._frames
        for start in range(0, x.size, _BLOCK):
            chunk = x[start:start + _BLOCK]
            y = preemphasis(chunk, prev=self._prev)
            self._prev = chunk[-1]  # np.float32: keeps the boundary sample in float32 arithmetic
            self._buf[self._buf_len:self._buf_len + y.size] = y
            self._buf_len += y.size
            self._samples += chunk.size
            self._emit(complete_only=True)
        return self._frames - before

    def finish(self) -> int:
        """The signal is over: compute the trailing frames that zero padding completes.

        Afterwards the stream equals ``melspectrogram`` of everything pushed, frame for frame.
        Returns the number of new frames; further pushes need :meth:`reset`.
        """
        before = self._frames
        if not self._finished:
            self._finished = True
            self._emit(complete_only=False)
        return self._frames - before

    def _emit(self, complete_only: bool) -> None:
        """Frame, transform and store every frame the buffer now allows; drop consumed samples."""
        if complete_only:
            end = (self._samples + _PAD - N_FFT) // HOP + 1  # frames j with j*HOP + N_FFT <= padded length
        else:
            end = 1 + self._samples // HOP  # melspectrogram's frame count
            # The zeros after the end of the signal (at most ~3 frames' worth: fits the buffer).
            need = max(0, (end - 1) * HOP + N_FFT - self._buf_start - self._buf_len)
            self._buf[self._buf_len:self._buf_len + need] = 0.0
            self._buf_len += need
        n = end - self._frames
        if n > 0:
            offset = self._frames * HOP - self._buf_start
            view = np.lib.stride_tricks.sliding_window_view(self._buf[:self._buf_len], N_FFT)
            self._store(frames_to_mel(view[offset:offset + (n - 1) * HOP + 1:HOP]))
        keep_from = self._frames * HOP - self._buf_start  # first sample the next frame needs
        if keep_from > 0:
            keep = self._buf_len - keep_from
            self._buf[:keep] = self._buf[keep_from:self._buf_len]
            self._buf_len = keep
            self._buf_start += keep_from

    def _store(self, mel: np.ndarray) -> None:
        """Write (80, n) new frames into the ring at their absolute positions modulo capacity."""
        n = mel.shape[1]
        if n > self.capacity:  # only the newest fit
            mel = mel[:, n - self.capacity:]
            self._frames += n - self.capacity
            n = self.capacity
        pos = self._frames % self.capacity
        first = min(n, self.capacity - pos)
        self._ring[:, pos:pos + first] = mel[:, :first]
        self._ring[:, :n - first] = mel[:, first:]
        self._frames += n

    def frames(self, start: int, end: int) -> np.ndarray:
        """Mel frames ``[start, end)`` as (80, end - start); missing ones read as silence."""
        return self._gather(np.arange(start, end, dtype=np.int64))

    def window(self, end: int, out: np.ndarray | None = None) -> np.ndarray:
        """The (1, 80, 16) model window ending (exclusive) at absolute mel index ``end``."""
        if out is None:
            out = np.empty((1, N_MELS, WINDOW), np.float32)
        start = end - WINDOW
        if start >= self.oldest_frame and end <= self._frames:
            pos = start % self.capacity
            if pos + WINDOW <= self.capacity:  # fast path: one contiguous slice of the ring
                out[0] = self._ring[:, pos:pos + WINDOW]
                return out
        return self.windows(np.array([end]), out=out[None])[0]

    def windows(self, ends: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Batched :meth:`window`: (n, 1, 80, 16) for absolute end indices ``ends``."""
        ends = np.asarray(ends, dtype=np.int64).reshape(-1)
        idx = ends[:, None] + np.arange(-WINDOW, 0)[None, :]  # (n, 16)
        if out is None:
            out = np.empty((ends.size, 1, N_MELS, WINDOW), np.float32)
        out[:, 0] = self._gather(idx).transpose(1, 0, 2)
        return out

    def _gather(self, idx: np.ndarray) -> np.ndarray:
        """(80, *idx.shape) frames at absolute indices; outside what the ring holds -> silence."""
        valid = (idx >= self.oldest_frame) & (idx < self._frames)
        gathered = self._ring[:, idx % self.capacity]
        return np.where(valid[None], gathered, np.float32(SILENCE_VALUE))
