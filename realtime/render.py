"""Offline render: a speech file in, a lip-synced H.264 MP4 out — the streaming path on a fast clock.

Offline is streaming run as fast as possible: the speech is queued on a presenter
:class:`~realtime.session.Session`, the same :class:`~realtime.frame_step.FrameStep` the server
runs plans, renders (engine, compositor, idle motion, I420) and delivers each frame, and the
session's sinks are an MP4 writer instead of WebRTC tracks.  Only the clock differs: a manual
clock stepped ``batch`` frames at a time, so each engine call takes ``batch`` frames.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engines.avatar import Avatar
from engines.base import Engine
from engines.windows import frame_count
from realtime.audio_io import load_audio
from realtime.clock import ManualClock
from realtime.frame_step import FrameStep
from realtime.mp4_writer import Mp4Writer
from realtime.session import Session

SESSION = "render"


@dataclass
class RenderStats:
    frames: int
    audio_s: float
    wall_s: float
    mel_s: float  # timeline feed: mel + VAD
    engine_s: float
    composite_s: float  # composite + idle motion + I420
    encode_s: float  # muxing into the MP4 (H.264 + AAC)
    params: np.ndarray  # (frames, P) mouth parameters actually rendered
    frames_i420: list[np.ndarray] = field(default_factory=list)  # only with out=None
    audio_out: list[np.ndarray] = field(default_factory=list)  # speech sent with the frames; only with out=None

    @property
    def speed(self) -> float:
        """Real-time factor: seconds of audio rendered per second of wall time."""
        return self.audio_s / self.wall_s if self.wall_s > 0 else float("inf")


class _Mp4Sinks:
    """A session's video and audio sinks, writing what a WebRTC peer would receive into an MP4."""

    def __init__(self, writer: Mp4Writer | None, n_params: int, n_frames: int) -> None:
        self.writer = writer
        self.frames: list[np.ndarray] = []  # kept only without a writer (tests compare them)
        self.params = np.zeros((n_frames, n_params), np.float32)
        self.encode_s = 0.0
        self.frames_sent = self.frames_repeated = 0
        self.backlog_s = 0.0
        self.video, self.audio = self, _AudioSink(self)

    def deliver(self, planes: np.ndarray, meta: object = None) -> None:
        t0 = time.perf_counter()
        if self.writer is not None:
            self.writer.write_i420(planes)
        else:
            self.frames.append(planes.copy())
        self.encode_s += time.perf_counter() - t0
        self.frames_sent += 1

    def stop(self) -> None:
        pass


class _AudioSink:
    backlog_s = 0.0

    def __init__(self, owner: _Mp4Sinks) -> None:
        self.owner = owner
        self.samples: list[np.ndarray] = []

    def deliver(self, samples16k: np.ndarray) -> None:
        t0 = time.perf_counter()
        if self.owner.writer is not None:
            self.owner.writer.write_audio(samples16k)
        else:
            self.samples.append(samples16k.copy())
        self.owner.encode_s += time.perf_counter() - t0

    def clear(self) -> None:
        pass

    def stop(self) -> None:
        pass


def render(audio: Path | str | np.ndarray, avatar: Avatar, engine: Engine, out: Path | str | None, *,
           batch: int = 8, progress: Callable[[int, int], None] | None = None,
           idle_motion: bool = True) -> RenderStats:
    """Render ``audio`` on ``avatar`` into ``out`` (an MP4); ``out=None`` keeps the frames in memory
    (``RenderStats.frames_i420`` and ``audio_out``: what tests compare with the stream)."""
    t_start = time.perf_counter()
    wav = audio if isinstance(audio, np.ndarray) else load_audio(audio)
    conv = engine.convention
    n_frames = max(1, frame_count(wav.size, conv.sample_rate, conv.fps))
    step = FrameStep(engine, max_batch=batch, max_lag=n_frames + 1, idle_motion=idle_motion)  # offline: never skip
    rows = step.add_avatar(avatar)
    clock = ManualClock(0.0)
    h, w = avatar.frames.shape[1:3]
    writer = Mp4Writer(out, w, h, fps=int(conv.fps), audio_rate=conv.sample_rate) if out is not None else None
    sinks = _Mp4Sinks(writer, len(engine.manifest.params), n_frames)
    session = Session(SESSION, avatar.name, rows, clock, sinks.video, sinks.audio, conv,
                      max_queue_s=float("inf"), history_s=max(4.0, 2.0 * batch / conv.fps + 1.0))
    session.speak(wav)
    step.add(session)
    mel_s = engine_s = composite_s = 0.0
    try:
        while session.stats.frames_rendered < n_frames:
            last = min(session.stats.frames_rendered + batch, n_frames) - 1  # the step's last frame
            t0 = time.perf_counter()
            clock.set(last / conv.fps)
            step.begin(last / conv.fps)
            mel_s += time.perf_counter() - t0
            job = step.plan(last / conv.fps, max_per_session=last + 1 - session.stats.frames_rendered)
            if job is None:
                raise RuntimeError(f"audio front-end stalled at frame {session.stats.frames_rendered} of {n_frames}")
            rendered = step.render(job)
            engine_s += rendered[0].infer_s
            composite_s += sum(r.composite_s for r in rendered)
            for r in rendered:
                sinks.params[r.frame] = r.params
            step.deliver(job, rendered, clock.now())
            if progress:
                progress(session.stats.frames_rendered, n_frames)
    finally:
        if writer is not None:
            writer.close()
    return RenderStats(n_frames, wav.size / conv.sample_rate, time.perf_counter() - t_start, mel_s, engine_s,
                       composite_s, sinks.encode_s, sinks.params, sinks.frames, sinks.audio.samples)
