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
from realtime.compositor import Compositor, to_i420
from realtime.mel import SAMPLE_RATE
from realtime.mp4_writer import Mp4Writer
from realtime.scheduler import FrameScheduler
from realtime.windows import frame_count

CHUNK = SAMPLE_RATE // 50  # 20 ms, what the server receives per packet
SESSION = "render"


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

    front = AudioFrontEnd(fps=fps, lookahead_s=engine.manifest.lookahead_s)
    fed = 0  # samples pushed so far, in 20 ms packets as the server gets them
    flushed = False
    mel_s = 0.0
    scheduler = FrameScheduler(max_batch=batch, window=engine.manifest.window)
    scheduler.add(SESSION, front, engine.add_avatar(avatar.name, avatar.features))
    compositor = Compositor(avatar)
    h, w = avatar.frames.shape[1:3]
    params = np.zeros((n_frames, len(engine.manifest.params)), np.float32)
    engine_s = composite_s = encode_s = 0.0
    spf = int(round(SAMPLE_RATE / fps))  # audio samples per video frame, to interleave the mux

    with Mp4Writer(out, w, h, fps=int(fps), audio_rate=SAMPLE_RATE) as writer:
        done = 0
        while done < n_frames:
            t0 = time.perf_counter()
            while front.frames_ready() < min(done + batch, n_frames) and not flushed:
                if fed < wav.size:
                    front.push(wav[fed:fed + CHUNK])
                    fed += CHUNK
                else:
                    front.flush()  # the tail: silence so the last frames get whole windows
                    flushed = True
            t1 = time.perf_counter()
            mel_s += t1 - t0
            planned = scheduler.plan(max_per_session=min(batch, n_frames - done))
            if planned is None:
                raise RuntimeError(f"audio front-end stalled at frame {done} of {n_frames}")
            results = scheduler.complete(planned, engine.run(planned.mel, planned.rows, planned.gate))
            engine_s += time.perf_counter() - t1
            for r in results:
                t2 = time.perf_counter()
                planes = to_i420(compositor.compose(r.avatar_frame, r.crop))
                t3 = time.perf_counter()
                writer.write_audio(wav[r.frame * spf:(r.frame + 1) * spf])
                writer.write_i420(planes)
                params[r.frame] = r.params
                composite_s += t3 - t2
                encode_s += time.perf_counter() - t3
            done += len(results)
            if progress:
                progress(done, n_frames)
    wall = time.perf_counter() - t_start
    return RenderStats(n_frames, wav.size / SAMPLE_RATE, wall, mel_s, engine_s, composite_s, encode_s, params)
