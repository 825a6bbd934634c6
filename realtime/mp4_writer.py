"""Write composited frames and the speech they were driven by into an H.264 MP4 (PyAV)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class Mp4Writer:
    """Frames go in as I420 planes (what the compositor produces cheaply), audio as float32 mono.

    Video pts are frame numbers at 1/fps, audio pts are sample counts, both from zero, so the
    muxed file keeps lips and sound in the alignment the pipeline produced.
    """

    def __init__(self, path: Path | str, width: int, height: int, *, fps: int = 25,
                 audio_rate: int = 16000, crf: int = 20, preset: str = "veryfast") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.path), mode="w")
        self.video = self.container.add_stream("libx264", rate=fps)
        self.video.width, self.video.height = width, height
        self.video.pix_fmt = "yuv420p"
        self.video.time_base = Fraction(1, fps)
        self.video.options = {"crf": str(crf), "preset": preset}
        self.video.codec_context.thread_count = 2
        self.audio = self.container.add_stream("aac", rate=audio_rate)
        self.audio.layout = "mono"
        self.audio_rate = audio_rate
        self._frames = 0
        self._samples = 0

    def write_i420(self, planes: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts = self._frames
        self._frames += 1
        self.container.mux(self.video.encode(frame))

    def write_audio(self, samples: np.ndarray) -> None:
        """Append float32 mono samples at ``audio_rate``; call it as frames go so the file interleaves."""
        pcm = np.clip(np.asarray(samples, np.float32).reshape(-1), -1.0, 1.0)
        if pcm.size == 0:
            return
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="flt", layout="mono")
        frame.sample_rate = self.audio_rate
        frame.pts = self._samples
        self._samples += pcm.size
        self.container.mux(self.audio.encode(frame))

    def close(self) -> None:
        self.container.mux(self.video.encode(None))
        self.container.mux(self.audio.encode(None))
        self.container.close()

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
