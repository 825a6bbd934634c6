"""One session's audio front-end: 16 kHz speech in, per-video-frame model inputs out.

It owns the streaming mel and the voice-activity detector and knows, from the model's lookahead,
which video frames have a complete window.  The server feeds it network audio as it arrives;
``render`` feeds it a whole file in 20 ms chunks, then flushes — the same code either way.
"""

from __future__ import annotations

import numpy as np

from engines.audio_convention import AudioConvention
from engines.mel import HOP, N_FFT, SAMPLE_RATE
from engines.windows import window_end
from realtime.mel_stream import MelStream
from realtime.vad import VadStream


class AudioFrontEnd:
    """The mel and the VAD keep ``history_s`` of their own outputs; the samples live in the Timeline."""

    def __init__(self, convention: AudioConvention, *, history_s: float = 4.0, vad_aggressiveness: int = 2) -> None:
        self.convention = convention
        self.fps = convention.fps
        self.lookahead_s = convention.lookahead_s
        self.mel = MelStream(history_s=history_s)
        self.vad = VadStream(aggressiveness=vad_aggressiveness, history_s=history_s)

    def push(self, samples16k: np.ndarray) -> None:
        self.mel.push(samples16k)
        self.vad.push(samples16k)

    def flush(self) -> None:
        """End of speech: pad with silence so every frame that audio reached gets a full window."""
        pad = int(np.ceil((self.lookahead_s + 1.0 / self.fps) * SAMPLE_RATE)) + N_FFT // 2 + HOP
        self.push(np.zeros(pad, np.float32))

    def frames_ready(self) -> int:
        """How many frames (from 0) have their whole mel window computed."""
        n = self.mel.frames_ready
        if n <= 0:
            return 0
        # largest k with window_end(k) <= n, plus one
        t = (n - 1) / 80.0 - self.lookahead_s
        k = int(np.floor(t * self.fps + 1e-9))
        while k >= 0 and window_end(k, self.fps, self.lookahead_s) > n:
            k -= 1
        while window_end(k + 1, self.fps, self.lookahead_s) <= n:
            k += 1
        return max(k + 1, 0)

    def fill(self, frames: np.ndarray, mel_out: np.ndarray, gate_out: np.ndarray) -> None:
        """Write the windows and voice gates of ``frames`` into preallocated batch buffers."""
        frames = np.atleast_1d(np.asarray(frames))
        n = frames.size
        self.mel.windows(np.atleast_1d(window_end(frames, self.fps, self.lookahead_s)), out=mel_out[:n])
        # The gate looks as far ahead as the model does, so a word's onset opens the mouth on time.
        t = frames / self.fps
        gate_out[:n] = self.vad.speech_between(t - 0.5 / self.fps, t + self.lookahead_s)

    def reset(self) -> None:
        self.mel.reset()
        self.vad.reset()
