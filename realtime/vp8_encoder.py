"""aiortc's VP8 encoder with its denoiser off: rendered avatar frames have no sensor noise.

aiortc builds libvpx with ``noise-sensitivity 4``, a temporal denoiser meant for camera video.
On the avatar's frames it only costs time and blurs: ``python -m benchmarks.bench_encoders`` on the
server's own output at 500 kbit/s measured 2.36 -> 1.73 ms per 512 px frame and luma PSNR
38.7 -> 41.8 dB with it off (docs/benchmarks.md).  Every other setting (CBR, ``cpu-used -6``,
realtime deadline, no lag, one token partition) stays aiortc's.

aiortc sets the options inside ``encode`` when it (re)builds the codec, so this subclass builds
the codec itself, just before aiortc would, with the same settings plus :data:`OPTIONS`; aiortc
then finds a codec that matches the frame and its bitrate and keeps it.
"""

from __future__ import annotations

import multiprocessing

import av
from aiortc.codecs.vpx import Vp8Encoder, number_of_threads

__all__ = ["OPTIONS", "TunedVp8Encoder"]

OPTIONS = {"noise-sensitivity": "0"}


class TunedVp8Encoder(Vp8Encoder):
    """``Vp8Encoder`` whose libvpx codec is built with :data:`OPTIONS` over aiortc's own."""

    built_codec: av.CodecContext | None = None  # the codec made here, with ``built_options``
    built_options: dict[str, str] = {}

    def _rebuild_due(self, frame: av.VideoFrame) -> bool:
        """aiortc's own rule: no codec yet, another frame size, or the bitrate moved > 10 %."""
        codec = self.codec
        return (codec is None or frame.width != codec.width or frame.height != codec.height
                or abs(self.target_bitrate - codec.bit_rate) / codec.bit_rate > 0.1)

    def _build(self, frame: av.VideoFrame) -> av.CodecContext:
        bitrate = self.target_bitrate
        codec = av.CodecContext.create("libvpx", "w")
        codec.width, codec.height, codec.pix_fmt = frame.width, frame.height, "yuv420p"
        codec.bit_rate, codec.gop_size, codec.qmin, codec.qmax = bitrate, 3000, 2, 56
        codec.options = self.built_options = {
            "bufsize": str(bitrate), "cpu-used": "-6", "deadline": "realtime", "lag-in-frames": "0",
            "minrate": str(bitrate), "maxrate": str(bitrate),  # CBR
            "noise-sensitivity": "4", "overshoot-pct": "15", "partitions": "0", "static-thresh": "1",
            "undershoot-pct": "100", **OPTIONS}
        codec.thread_count = number_of_threads(frame.width * frame.height, multiprocessing.cpu_count())
        return codec

    def encode(self, frame, force_keyframe: bool = False):  # noqa: ANN001, ANN201 - aiortc's signature
        if self._rebuild_due(frame):
            self.codec = self.built_codec = self._build(frame)
        return super().encode(frame, force_keyframe)
