"""Voice activity per video frame, from webrtcvad's 20 ms decisions, streaming and offline.

webrtcvad decides each 20 ms frame (320 samples of 16-bit PCM at 16 kHz) on its own.  Between
words, and inside words at stop closures, it drops to "no speech" for a frame or a few; a mouth
driven straight from that would snap shut and reopen.  So a decision is held for a **hangover**
(default 150 ms) after the last speech frame: video frame ``k`` counts as speech when any speech
frame lies in ``[t0 - hangover, t1)``, where ``[t0, t1)`` is the frame's own interval, one frame
period centred on ``k / fps`` (clipped at 0).  The hangover only extends speech forwards in time,
so it adds no latency: a query needs no audio later than ``t1``.

webrtcvad adapts its noise model slowly: right after speech, a steady hiss at -60 dBFS was called
speech for ~3.5 s in mode 2 (white noise, measured).  Frames below an RMS **floor** (default
-55 dBFS; conversational speech into a normal mic sits around -20 to -35 dBFS) are therefore
non-speech whatever webrtcvad says.  Louder steady noise after speech can still read as speech
for a few seconds; mode 3 shortens that.  Audio not heard yet counts as
no speech; so do frames older than the kept history.

:func:`speech_mask` (offline) is :class:`VadStream` fed the whole signal, so both give the same
answers.
"""

from __future__ import annotations

import numpy as np
import webrtcvad

from engines.mel import SAMPLE_RATE
from engines.windows import frame_count

__all__ = ["VadStream", "speech_mask", "FRAME_S", "FRAME_SAMPLES"]

FRAME_S = 0.02  # webrtcvad accepts 10, 20 or 30 ms; 20 ms divides a 40 ms video frame evenly
FRAME_SAMPLES = int(SAMPLE_RATE * FRAME_S)


class VadStream:
    """Incremental webrtcvad over 16 kHz mono float32 samples, queried per video frame.

    ``aggressiveness`` is webrtcvad's mode, 0 (keeps most audio as speech) to 3 (rejects most
    non-speech).  Decisions are kept for ``history_s`` seconds (a ring), indexed from the first
    sample since construction or :meth:`reset`, like ``MelStream``.  Frames whose RMS is below
    ``floor_dbfs`` (full scale = 0 dB) are non-speech without asking webrtcvad (see module doc).
    """

    def __init__(self, aggressiveness: int = 2, hangover_s: float = 0.15, history_s: float = 10.0,
                 floor_dbfs: float = -55.0) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness}")
        self.aggressiveness = aggressiveness
        self.hangover_frames = max(0, int(round(hangover_s / FRAME_S)))
        self.capacity = max(1, int(np.ceil(history_s / FRAME_S)))
        self.floor_dbfs = floor_dbfs
        self._min_power = (32768.0 * 10.0 ** (floor_dbfs / 20.0)) ** 2  # mean square, int16 units
        self._vad = webrtcvad.Vad(aggressiveness)
        self._ring = np.zeros(self.capacity, np.bool_)
        self._pending = np.zeros(FRAME_SAMPLES, np.int16)
        self.reset()

    def reset(self) -> None:
        """Forget all audio and decisions: indices restart at 0."""
        self._ring.fill(False)
        self._n_pending = 0
        self._decided = 0

    @property
    def frames_decided(self) -> int:
        """20 ms VAD frames decided so far (absolute count)."""
        return self._decided

    def push(self, samples: np.ndarray) -> int:
        """Append 16 kHz mono float32 samples in [-1, 1]; returns how many 20 ms frames were decided."""
        x = np.asarray(samples, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected mono 16 kHz samples (1-D), got shape {x.shape}")
        pcm = np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)
        if self._n_pending:  # the frame left over from the previous push comes first
            pcm = np.concatenate([self._pending[:self._n_pending], pcm])
        whole = pcm.size - pcm.size % FRAME_SAMPLES
        frames = pcm[:whole].reshape(-1, FRAME_SAMPLES)
        self._n_pending = pcm.size - whole
        self._pending[:self._n_pending] = pcm[whole:]
        if frames.size:
            # webrtcvad sees every frame (its noise model adapts on them); the floor then vetoes.
            decisions = np.fromiter((self._vad.is_speech(f.tobytes(), SAMPLE_RATE) for f in frames),
                                    np.bool_, len(frames))
            decisions &= np.mean(np.square(frames, dtype=np.float64), axis=1) > self._min_power
            pos = (self._decided + np.arange(len(frames))) % self.capacity
            self._ring[pos[-self.capacity:]] = decisions[-self.capacity:]
            self._decided += len(frames)
        return len(frames)

    def raw(self, start: int, end: int) -> np.ndarray:
        """Per-20 ms decisions (webrtcvad and the floor, no hangover) for ``[start, end)``; unknown -> False."""
        idx = np.arange(start, end, dtype=np.int64)
        return self._known(idx) & self._ring[idx % self.capacity]

    def _known(self, idx: np.ndarray) -> np.ndarray:
        return (idx >= max(0, self._decided - self.capacity)) & (idx < self._decided)

    def speech_between(self, t0: np.ndarray | float, t1: np.ndarray | float) -> np.ndarray:
        """Speech (with hangover) anywhere in ``[t0, t1)`` seconds; vectorised over arrays."""
        t0 = np.asarray(t0, dtype=np.float64)
        t1 = np.asarray(t1, dtype=np.float64)
        eps = 1e-9  # a time exactly on a frame boundary belongs to the later frame
        lo = np.floor(np.maximum(t0, 0.0) / FRAME_S + eps).astype(np.int64) - self.hangover_frames
        hi = np.ceil(t1 / FRAME_S - eps).astype(np.int64)  # exclusive
        oldest = max(0, self._decided - self.capacity)
        lo = np.clip(lo, oldest, self._decided)
        hi = np.clip(hi, oldest, self._decided)
        # Prefix sums over the kept decisions in time order make every query O(1).
        held = self.raw(oldest, self._decided)
        csum = np.concatenate([[0], np.cumsum(held, dtype=np.int64)])
        return (csum[np.maximum(hi, lo) - oldest] - csum[lo - oldest]) > 0

    def speech_at_frames(self, frame_indices: np.ndarray, fps: float = 25.0) -> np.ndarray:
        """Speech for each video frame ``k`` (interval one period centred on ``k / fps``)."""
        k = np.asarray(frame_indices, dtype=np.float64)
        return self.speech_between((k - 0.5) / fps, (k + 0.5) / fps)

    def speech_at_frame(self, k: int, fps: float = 25.0) -> bool:
        """Whether video frame ``k`` shows speech (see the module docstring for the rule)."""
        return bool(self.speech_at_frames(np.array([k]), fps)[0])


def speech_mask(wav16k: np.ndarray, fps: float = 25.0, n_frames: int | None = None,
                aggressiveness: int = 2, hangover_s: float = 0.15, floor_dbfs: float = -55.0) -> np.ndarray:
    """Offline per-video-frame speech flags (bool, length ``n_frames``) for a whole signal.

    ``n_frames`` defaults to the frames that cover the signal (``engines.windows.frame_count``);
    the last partial 20 ms of audio is zero-padded to a whole VAD frame.
    """
    wav16k = np.asarray(wav16k, dtype=np.float32)
    if n_frames is None:
        n_frames = frame_count(wav16k.size, SAMPLE_RATE, fps)
    vad = VadStream(aggressiveness, hangover_s, history_s=wav16k.size / SAMPLE_RATE + 1.0, floor_dbfs=floor_dbfs)
    vad.push(wav16k)
    vad.push(np.zeros(-wav16k.size % FRAME_SAMPLES, np.float32))  # decide the last partial frame
    return vad.speech_at_frames(np.arange(n_frames), fps)
