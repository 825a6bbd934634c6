"""Offline render: a speech file in, a lip-synced H.264 MP4 out, through the streaming path.

Offline is streaming run as fast as possible: the audio goes through the same
``AudioFrontEnd`` in 20 ms chunks, frames are batched into the same ``Engine`` calls the frame
scheduler makes, and the same ``Compositor`` pastes the mouth.  Only the clock differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from engines.base import Engine
from export.avatar import Avatar
from realtime.audio_frontend import AudioFrontEnd
from realtime.audio_io import load_audio
from realtime.compositor import Compositor, avatar_frame_for, to_i420
from realtime.mel import SAMPLE_RATE
from realtime.mp4_writer import Mp4Writer
from realtime.windows import frame_count

CHUNK = SAMPLE_RATE // 50  # 20 ms, what the server receives per packet


@dataclass
class RenderStats:
    frames: int
    audio_s: float
    wall_s: float
    mel_s: float
    engine_s: float
    composite_s: float
    encode_s: float
    params: np.ndarray  # (frames, P) mouth parameters actually rendered

    @property
    def speed(self) -> float:
        """Real-time factor: seconds of audio rendered per second of wall time."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else float("inf")


def render(audio: Path | str | np.ndarray, avatar: Avatar, engine: Engine, out: Path | str, *,
           batch: int = 8, progress: Callable[[int, int], None] | None = None) -> RenderStats:
    t_start = time.perf_counter()
    wav = audio if isinstance(audio, np.ndarray) else load_audio(audio)
    fps = engine.manifest.fps
    n_frames = max(1, frame_count(wav.size, SAMPLE_RATE, fps))

    t0 = time.perf_counter()
    front = AudioFrontEnd(fps=fps, lookahead_s=engine.manifest.lookahead_s,
                          history_s=wav.size / SAMPLE_RATE + 2.0)
    for i in range(0, wav.size, CHUNK):
        front.push(wav[i:i + CHUNK])
    front.flush()
    mel_s = time.perf_counter() - t0

    rows = engine.add_avatar(avatar.name, avatar.features)
    compositor = Compositor(avatar)
    h, w = avatar.frames.shape[1:3]
    mel_buf = np.empty((batch, 1, *engine.manifest.window), np.float32)
    gate_buf = np.empty(batch, np.float32)
    params = np.zeros((n_frames, len(engine.manifest.params)), np.float32)
    engine_s = composite_s = encode_s = 0.0
    spf = int(round(SAMPLE_RATE / fps))  # audio samples per video frame, to interleave the mux

    with Mp4Writer(out, w, h, fps=int(fps), audio_rate=SAMPLE_RATE) as writer:
        for start in range(0, n_frames, batch):
            ks = np.arange(start, min(start + batch, n_frames))
            b = ks.size
            t0 = time.perf_counter()
            front.fill(ks, mel_buf, gate_buf)
            avatar_idx = np.array([avatar_frame_for(int(k), avatar.n_frames) for k in ks])
            result = engine.run(mel_buf[:b], rows[avatar_idx], gate_buf[:b])
            t1 = time.perf_counter()
            params[ks] = result.params
            engine_s += t1 - t0
            for i, k in enumerate(ks):
                t2 = time.perf_counter()
                frame = compositor.compose(int(avatar_idx[i]), result.crops[i])
                planes = to_i420(frame)
                t3 = time.perf_counter()
                writer.write_audio(wav[int(k) * spf:(int(k) + 1) * spf])
                writer.write_i420(planes)
                composite_s += t3 - t2
                encode_s += time.perf_counter() - t3
            if progress:
                progress(int(ks[-1]) + 1, n_frames)
    wall = time.perf_counter() - t_start
    return RenderStats(n_frames, wav.size / SAMPLE_RATE, wall, mel_s, engine_s, composite_s, encode_s, params)
