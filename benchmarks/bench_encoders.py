"""What the server's two encoders cost per frame, and what their settings buy.

    python -m benchmarks.bench_encoders [--seconds 7] [--json PATH]

Every session encodes its own 25 fps video (VP8) and its returned speech (Opus, 20 ms packets),
so their CPU is paid once per session per frame and sets how many sessions fit on the cores.
This runs both encoders offline on the server's real output: the avatar frames and speech that
``lipstream render`` makes from the bundled sample (same engine, compositor and idle motion as
``serve``), decoded back to raw frames first.  For each setting it reports the CPU per frame
(``time.process_time`` around the encode calls only, one thread), the bitrate, and the quality:
luma PSNR of the decoded VP8 frames against the source frames, and for Opus the SNR of the
decoded speech against the input (codec delay removed by cross-correlation).

The VP8 rows are aiortc's own encoder settings (``aiortc.codecs.vpx.Vp8Encoder``: CBR,
``cpu-used -6``, ``noise-sensitivity 4``, realtime deadline, no lag) and variations of the two
settings that decide its speed; the bitrate is the server's starting target (500 kbit/s).  The
Opus rows are aiortc's ``OpusEncoder`` (96 kbit/s, libopus' default complexity 10) and lower
bitrates/complexities.  Figures depend on the machine: compare rows of one run only.
"""

from __future__ import annotations

import argparse
import fractions
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from benchmarks.machine import machine_info, write_result

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE = Path(__file__).resolve().parents[1] / "realtime" / "samples" / "hello.wav"

AIORTC_VP8 = {"cpu-used": "-6", "noise-sensitivity": "4"}
VP8_VARIANTS = {
    "aiortc (cpu-used -6, noise-sensitivity 4)": AIORTC_VP8,
    "cpu-used -6, noise-sensitivity 0": {"cpu-used": "-6", "noise-sensitivity": "0"},
    "cpu-used -10, noise-sensitivity 0": {"cpu-used": "-10", "noise-sensitivity": "0"},
    "cpu-used -16, noise-sensitivity 0": {"cpu-used": "-16", "noise-sensitivity": "0"},
}
OPUS_VARIANTS = {
    "aiortc (96 kbit/s, complexity 10)": {"bit_rate": 96_000, "options": {}},
    "48 kbit/s, complexity 10": {"bit_rate": 48_000, "options": {}},
    "32 kbit/s, complexity 10": {"bit_rate": 32_000, "options": {}},
    "32 kbit/s, complexity 5": {"bit_rate": 32_000, "options": {"compression_level": "5"}},
    "32 kbit/s, complexity 5, voip": {"bit_rate": 32_000, "options": {"compression_level": "5",
                                                                      "application": "voip"}},
}


def rendered_output(seconds: float, workdir: Path) -> tuple[list[av.VideoFrame], np.ndarray]:
    """The server's frames and speech for the sample, via ``lipstream render`` (an MP4), decoded."""
    out = workdir / "render.mp4"
    subprocess.run([sys.executable, "-m", "realtime.cli", "render", "--audio", str(SAMPLE), "--out", str(out)],
                   check=True, capture_output=True)
    frames, speech = [], []
    with av.open(str(out)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.reformat(format="yuv420p"))
            if len(frames) >= seconds * 25:
                break
    resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
    with av.open(str(out)) as container:
        for frame in container.decode(audio=0):
            for r in resampler.resample(frame):
                speech.append(r.to_ndarray().reshape(-1))
    return frames, np.concatenate(speech)[: int(seconds * 48000)]


def _vp8_encoder(width: int, height: int, bitrate: int, options: dict[str, str]) -> av.CodecContext:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.bit_rate, codec.gop_size, codec.qmin, codec.qmax = bitrate, 3000, 2, 56
    codec.time_base = fractions.Fraction(1, 25)
    codec.options = {"bufsize": str(bitrate), "deadline": "realtime", "lag-in-frames": "0",
                     "minrate": str(bitrate), "maxrate": str(bitrate), "overshoot-pct": "15",
                     "partitions": "0", "static-thresh": "1", "undershoot-pct": "100", **options}
    codec.thread_count = 1
    return codec


class _EncodeClock:
    """Process CPU time spent inside ``encode`` calls, summed (decoding for the quality checks is not)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def encode(self, codec: av.CodecContext, frame: av.frame.Frame) -> list[av.Packet]:
        t0 = time.process_time()
        packets = codec.encode(frame)
        self.seconds += time.process_time() - t0
        return packets


def _luma_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def bench_vp8(frames: list[av.VideoFrame], options: dict[str, str], bitrate: int = 500_000) -> dict:
    enc = _vp8_encoder(frames[0].width, frames[0].height, bitrate, options)
    dec = av.CodecContext.create("libvpx", "r")
    clock, nbytes, psnr = _EncodeClock(), 0, []
    for i, src in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(src.to_ndarray(), format="yuv420p")
        frame.pts = i
        for packet in clock.encode(enc, frame):
            nbytes += packet.size
            for out in dec.decode(packet):
                h = src.height
                psnr.append(_luma_psnr(out.to_ndarray()[:h], src.to_ndarray()[:h]))
    n = len(frames)
    return {"ms_per_frame": round(1000 * clock.seconds / n, 3), "kbit_s": round(nbytes * 8 * 25 / n / 1000, 1),
            "luma_psnr_db": round(float(np.mean(psnr[10:])), 2), "frames": n}


def _snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    out = out.astype(np.float64)
    corr = np.correlate(out[:48000], ref[:48000 - 2000], mode="valid")  # the codec's delay
    delay = int(np.argmax(corr))
    n = min(len(ref), len(out) - delay)
    err = out[delay:delay + n] - ref[:n]
    return round(10 * np.log10(np.sum(ref[:n] ** 2) / max(np.sum(err**2), 1e-9)), 2)


def bench_opus(speech: np.ndarray, bit_rate: int, options: dict[str, str]) -> dict:
    enc = av.CodecContext.create("libopus", "w")
    enc.bit_rate, enc.sample_rate, enc.layout, enc.format = bit_rate, 48000, "mono", "s16"
    enc.time_base = fractions.Fraction(1, 48000)
    enc.options = dict(options)
    dec = av.CodecContext.create("libopus", "r")
    dec.sample_rate, dec.layout = 48000, "mono"
    clock, nbytes, decoded = _EncodeClock(), 0, []
    n = len(speech) // 960
    for i in range(n):
        frame = av.AudioFrame.from_ndarray(speech[i * 960:(i + 1) * 960].reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate, frame.pts = 48000, i * 960
        for packet in clock.encode(enc, frame):
            nbytes += packet.size
            for out in dec.decode(packet):
                decoded.append(out.to_ndarray().reshape(-1))
    out = np.concatenate(decoded)
    if out.dtype != np.int16:
        out = out * 32767.0
    cpu = clock.seconds
    return {"ms_per_packet": round(1000 * cpu / n, 3), "ms_per_video_frame": round(2000 * cpu / n, 3),
            "kbit_s": round(nbytes * 8 * 50 / n / 1000, 1), "snr_db": _snr_db(speech, out), "packets": n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_encoders", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=7.0, help="frames/speech to encode (default: 7, the sample)")
    p.add_argument("--repeats", type=int, default=3, help="runs per setting; the fastest is reported (default: 3)")
    p.add_argument("--json", type=Path, default=RESULTS / "encoders.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        frames, speech = rendered_output(args.seconds, Path(tmp))
    print(f"encoders: {len(frames)} frames {frames[0].width}x{frames[0].height}, "
          f"{len(speech) / 48000:.1f} s of speech; CPU = process time of the encode calls, best of {args.repeats}")
    vp8 = {name: min((bench_vp8(frames, opts) for _ in range(args.repeats)), key=lambda r: r["ms_per_frame"])
           for name, opts in VP8_VARIANTS.items()}
    print(f"\n{'VP8 at 500 kbit/s CBR':44s} {'ms/frame':>9s} {'kbit/s':>8s} {'PSNR dB':>8s}")
    for name, r in vp8.items():
        print(f"{name:44s} {r['ms_per_frame']:9.2f} {r['kbit_s']:8.1f} {r['luma_psnr_db']:8.2f}")
    opus = {name: min((bench_opus(speech, **v) for _ in range(args.repeats)), key=lambda r: r["ms_per_packet"])
            for name, v in OPUS_VARIANTS.items()}
    print(f"\n{'Opus, 20 ms packets':44s} {'ms/video frame':>14s} {'kbit/s':>8s} {'SNR dB':>8s}")
    for name, r in opus.items():
        print(f"{name:44s} {r['ms_per_video_frame']:14.3f} {r['kbit_s']:8.1f} {r['snr_db']:8.2f}")
    result = {"benchmark": "encoders", "machine": machine_info(), "settings": vars(args) | {"json": str(args.json)},
              "vp8": vp8, "opus": opus, "vp8_variants": VP8_VARIANTS, "opus_variants": OPUS_VARIANTS}
    write_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
