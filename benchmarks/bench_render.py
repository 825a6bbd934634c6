"""Per-frame cost of each offline stage on this machine, and the render speed factor.

    python -m benchmarks.bench_render [--frames 500] [--seconds 30] [--json PATH] [--plot PATH]

Stages are timed in isolation over >= 500 frames (mel streaming per 20 ms packet summed per
frame, engine step at batch 1 and batch 2..32 (per frame), compositing, RGB->I420, VP8 encode
(what the server sends, aiortc's encoder) and H.264 encode (what ``render`` writes)), then a whole
render of ``--seconds`` of speech measures the real-time factor end to end.  This is the
"stages" part of ``lipstream bench``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import RESULTS_DIR, machine_info, publish, save_figure, summarize_ms

SAMPLE = Path(__file__).resolve().parents[1] / "realtime" / "samples" / "hello.wav"


def _speech(seconds: float) -> np.ndarray:
    from realtime.audio_io import load_audio

    wav = load_audio(SAMPLE)
    reps = int(np.ceil(seconds * 16000 / wav.size))
    return np.tile(wav, reps)[: int(seconds * 16000)]


ENGINE_BATCHES = (1, 2, 4, 8, 16, 32)


def bench(frames: int, seconds: float, engine_name: str = "auto") -> dict:
    from engines.factory import create_engine
    from engines.avatar import default_avatars_dir
    from export.avatar import ensure_default_avatar
    from realtime.audio_frontend import AudioFrontEnd
    from realtime.compositor import Compositor, to_i420
    from realtime.mp4_writer import Mp4Writer
    from realtime.progress import ProgressLine
    from realtime.render import render

    engine = create_engine(engine_name)
    avatar = ensure_default_avatar(default_avatars_dir())
    rows = engine.add_avatar(avatar.name, avatar.features)
    wav = _speech(max(seconds, frames / 25 + 1))
    progress = ProgressLine("benchmark", unit="steps")
    total_steps = 6
    stages: dict[str, list[float]] = {}

    # mel: push 20 ms packets as the server does; a frame's cost = 2 packets + its window
    front = AudioFrontEnd(engine.convention, history_s=wav.size / 16000 + 1)
    mel_buf = np.empty((1, 1, 80, 16), np.float32)
    gate = np.empty(1, np.float32)
    times = []
    for k in range(frames):
        t0 = time.perf_counter()
        front.push(wav[k * 640:k * 640 + 320])
        front.push(wav[k * 640 + 320:(k + 1) * 640])
        ready = front.frames_ready()
        if ready:
            front.fill(np.array([ready - 1]), mel_buf, gate)
        times.append(time.perf_counter() - t0)
    stages["mel_window_vad"] = times
    progress(1, total_steps)

    windows = np.random.default_rng(0).uniform(-4, 2, (32, 1, 80, 16)).astype(np.float32)
    ones = np.ones(32, np.float32)
    engine.warmup(ENGINE_BATCHES)
    for b in ENGINE_BATCHES:
        times = []
        for _ in range(max(frames // b, 20)):
            t0 = time.perf_counter()
            out = engine.run(windows[:b], rows[np.zeros(b, int)], ones[:b])
            times.append((time.perf_counter() - t0) / b)
        stages[f"engine_batch{b}_per_frame" if b > 1 else "engine_batch1"] = times
    progress(2, total_steps)

    comp = Compositor(avatar)
    crop = out.crops[0]
    times, i420_times = [], []
    for _ in range(frames):
        t0 = time.perf_counter()
        rgb = comp.compose(0, crop)
        t1 = time.perf_counter()
        planes = to_i420(rgb)
        t2 = time.perf_counter()
        times.append(t1 - t0)
        i420_times.append(t2 - t1)
    stages["composite"] = times
    stages["rgb_to_i420"] = i420_times
    progress(3, total_steps)

    h, w = avatar.frames.shape[1:3]
    stages["vp8_encode"] = _vp8_encode_times(planes, frames)
    progress(4, total_steps)

    with tempfile.TemporaryDirectory() as tmp:
        times = []
        with Mp4Writer(Path(tmp) / "enc.mp4", w, h) as writer:
            for _ in range(frames):
                t0 = time.perf_counter()
                writer.write_i420(planes)
                times.append(time.perf_counter() - t0)
        stages["h264_encode"] = times
        progress(5, total_steps)
        speech = _speech(seconds)
        stats = render(speech, avatar, engine, Path(tmp) / "render.mp4")
        progress(6, total_steps)

    return {
        "benchmark": "render", "machine": machine_info(), "engine": engine.name,
        "model": {"name": engine.manifest.name, "version": engine.manifest.version},
        "settings": {"frames": frames, "render_seconds": seconds, "avatar": avatar.name,
                     "frame_size": list(avatar.frames.shape[1:3])},
        "stages": {k: summarize_ms(v) for k, v in stages.items()},
        "raw_ms": {k: [round(1000 * x, 4) for x in v] for k, v in stages.items()},
        "render": {"audio_s": stats.audio_s, "wall_s": stats.wall_s, "speed_x_realtime": stats.speed,
                   "frames": stats.frames},
    }


def _vp8_encode_times(planes: np.ndarray, frames: int) -> list[float]:
    """aiortc's VP8 encoder (as the server uses it) on a slowly changing frame, per frame."""
    import fractions

    import av
    from aiortc.codecs.vpx import Vp8Encoder

    enc = Vp8Encoder()
    times = []
    for k in range(frames):
        p = planes.copy()
        p[: p.shape[0] * 2 // 3 // 8] ^= k & 1  # a few changed rows, like a moving mouth
        frame = av.VideoFrame.from_ndarray(p, format="yuv420p")
        frame.pts, frame.time_base = k * 3600, fractions.Fraction(1, 90000)
        t0 = time.perf_counter()
        enc.encode(frame)
        times.append(time.perf_counter() - t0)
    return times


def plot(result: dict, path: Path) -> None:
    """Per-stage p50 with the p99 as a whisker, on a log axis (stages span 0.05 to 10 ms)."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["stages"])
    p50 = [result["stages"][k]["p50_ms"] for k in names]
    p99 = [result["stages"][k]["p99_ms"] for k in names]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.barh(names, p50, color="tab:blue", label="p50")
    ax.errorbar(p50, names, xerr=[[0] * len(names), [b - a for a, b in zip(p50, p99)]], fmt="none",
                ecolor="black", capsize=3, label="p99")
    ax.set(xscale="log", xlabel="ms per frame", title=f"stages per frame ({result['engine']}, "
           f"{result['machine']['cores']} cores)")
    ax.invert_yaxis()
    ax.legend()
    save_figure(fig, path)


def print_table(result: dict) -> None:
    print(f"\n{'stage':<28}{'min ms':>9}{'p50 ms':>9}{'p99 ms':>9}")
    for name, s in result["stages"].items():
        print(f"{name:<28}{s['min_ms']:>9.3f}{s['p50_ms']:>9.3f}{s['p99_ms']:>9.3f}")
    r = result["render"]
    print(f"\nrender: {r['audio_s']:.1f} s of speech in {r['wall_s']:.2f} s = "
          f"{r['speed_x_realtime']:.1f}x real time ({result['machine']['cores']} cores, {result['engine']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_render", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=500, help="frames per stage (default: 500)")
    p.add_argument("--seconds", type=float, default=30.0, help="speech rendered end to end (default: 30)")
    p.add_argument("--engine", default="auto")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "stages.json", help="result file")
    p.add_argument("--plot", type=Path, default=None, help="PNG (default: next to --json)")
    args = p.parse_args(argv)
    result = bench(args.frames, args.seconds, args.engine)
    publish(result, args.json, args.plot, print_table, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
