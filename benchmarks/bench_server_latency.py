"""Server-side audio-in -> frame-out latency and the A/V skew a client sees, on loopback.

    python -m benchmarks.bench_server_latency [--seconds 20] [--json PATH]

An in-process server (the real app, engine and frame loop) and a real aiortc client on
127.0.0.1.  The client's mic plays speech bursts (0.8 s of the bundled sample) separated by
1.2 s of silence.  Reported:

* audio-in -> frame-out: the server's own timestamps, from the moment a frame's speech reached
  the audio front-end to the moment that frame was handed to the encoder (p50/p99);
* A/V skew: for every burst, the onset of the *returned* audio minus the onset of mouth motion
  in the *returned* video, both by client receive time (positive = sound after lips);
* received fps and the server's repeated-frame count;
* the latency split into its stages, from the server's own timestamps (``FrameMeta.stages``):
  jitter_buffer (an audio frame's first RTP packet -> released by aiortc's jitter buffer),
  lookahead (the frame's speech in -> the last sample of its mel window in: the model's 40 ms
  lookahead plus the mel's right context), tick_wait (window complete -> the 25 fps tick that
  batches it), inference, composite (+ I420), worker_other (the rest of the batch's worker time),
  send_wait (rendered -> the video track's frame slot hands it to the encoder), encode.
  jitter_buffer and encode are timed per audio frame / per encode, the others per frame; the
  stages' p50s add up to about the end-to-end p50, not exactly.

A long run also reports the drift of the A/V skew over the run (least-squares slope, ms per
minute) and the process RSS growth (server and client share this process).  The soak proper,
four sessions for an hour against a server process of its own, is ``benchmarks/bench_soak.py``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import aiohttp
import numpy as np
import psutil

from benchmarks.machine import RESULTS_DIR, machine_info, publish, save_figure, summarize_ms

SAMPLE = Path(__file__).resolve().parents[1] / "realtime" / "samples" / "hello.wav"
BURST_S, GAP_S = 0.8, 1.2


def burst_signal(seconds: float) -> tuple[np.ndarray, list[float]]:
    """Speech bursts cut from the sample, each preceded by silence; returns samples and onsets (s)."""
    from realtime.audio_io import load_audio

    speech = load_audio(SAMPLE)
    active = np.flatnonzero(np.abs(speech) > 0.02)
    speech = speech[active[0]:active[-1]]
    out, onsets, t, src = [], [], 0.0, 0
    n_burst, n_gap = int(BURST_S * 16000), int(GAP_S * 16000)
    while t + GAP_S + BURST_S <= seconds:
        out.append(np.zeros(n_gap, np.float32))
        t += GAP_S
        seg = np.take(speech, np.arange(src, src + n_burst), mode="wrap")
        src += n_burst
        out.append(seg.astype(np.float32))
        onsets.append(t)
        t += BURST_S
    return np.concatenate(out), onsets


def dark_share(crop: np.ndarray) -> float:
    """Mouth opening read off the pixels: the share of dark (cavity) pixels in the mouth box, which
    the idle head motion of a still avatar does not change."""
    return float((crop.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) < 70).mean())


def pcm_rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pcm.astype(np.float32) / 32768) ** 2)))


def _onsets(times: np.ndarray, level: np.ndarray, threshold: float, quiet_s: float = 0.5) -> list[float]:
    """Times where ``level`` crosses ``threshold`` after at least ``quiet_s`` below it."""
    found, last_loud = [], -1e9
    for t, v in zip(times, level):
        if v > threshold:
            if t - last_loud > quiet_s:
                found.append(float(t))
            last_loud = t
    return found


def _pair(a: list[float], b: list[float], max_gap: float = 0.5) -> list[float]:
    """b - a for each onset in a that has a partner in b within ``max_gap``."""
    out = []
    for t in a:
        near = [x - t for x in b if abs(x - t) <= max_gap]
        if near:
            out.append(min(near, key=abs))
    return out


STAGE_ORDER = ("jitter_buffer", "lookahead", "tick_wait", "inference", "composite", "worker_other",
               "send_wait", "encode")


async def run(seconds: float, engine_name: str, max_lag_frames: int = 2, render_when: str = "tick",
              model_dir: Path | None = None) -> dict:
    from benchmarks.webrtc_client import connect, serving
    from engines.factory import create_engine
    from export.avatar import ensure_default_avatar
    from realtime.progress import ProgressLine
    from realtime.server import K_STATE

    from engines.manifest import DEFAULT_MODEL_DIR

    engine = create_engine(engine_name, model_dir or DEFAULT_MODEL_DIR)
    avatar = ensure_default_avatar(None, engine.model_dir)
    x0, y0, x1, y1 = (int(v) for v in avatar.mouth_boxes[0])
    mic, mic_onsets = burst_signal(seconds)
    async with serving(engine, max_lag_frames=max_lag_frames, render_when=render_when) as (base, app), \
            aiohttp.ClientSession() as http:
        # one value per frame and per audio packet, not the pixels: a 10-minute soak would otherwise
        # keep gigabytes in this process and hide the server's own RSS
        client = await connect(base, http, mic=mic, mouth_box=(x0, y0, x1, y1), video_stat=dark_share,
                               audio_stat=pcm_rms)
        t_start = asyncio.get_running_loop().time()
        t_end = t_start + seconds + 1.0
        progress = ProgressLine("server latency", unit="s")
        proc = psutil.Process()
        rss: list[tuple[float, float]] = []
        while (now := asyncio.get_running_loop().time()) < t_end:
            await asyncio.sleep(0.25)
            if not rss or now - t_start - rss[-1][0] >= 1.0:
                rss.append((now - t_start, proc.memory_info().rss / 2**20))
            progress(min(int(now - t_start), int(seconds) - 1), int(seconds))
        progress(int(seconds), int(seconds))
        state = app[K_STATE]
        latencies = list(state.latency.samples)
        stages = {k: list(state.latency.stages[k]) for k in STAGE_ORDER if state.latency.stages.get(k)}
        dropped = state.metrics.frames_dropped._value.get()
        sent = state.metrics.frames_sent._value.get()
        await client.close()

    v_times = np.array([t for t, _ in client.video])
    opening = np.array([v for _, v in client.video])
    a_times = np.array([t for t, _ in client.audio])
    a_rms = np.array([v for _, v in client.audio])
    lo, hi = np.percentile(opening, [10, 95])
    video_on = _onsets(v_times, opening, threshold=lo + 0.3 * max(hi - lo, 0.01))
    audio_on = _onsets(a_times, a_rms, threshold=0.3 * np.percentile(a_rms, 95))
    pairs = _pair_with_time(video_on, audio_on)
    skews = [d for _, d in pairs]
    span = v_times[-1] - v_times[0] if v_times.size > 1 else 1.0
    return {
        "benchmark": "server_latency", "machine": machine_info(), "engine": engine.name,
        "model": {"name": engine.manifest.name, "lookahead_s": engine.manifest.lookahead_s},
        "settings": {"seconds": seconds, "bursts": len(mic_onsets), "burst_s": BURST_S, "gap_s": GAP_S,
                     "codec": "vp8", "max_lag_frames": max_lag_frames, "transport": "aiortc client on 127.0.0.1, same process"},
        "audio_to_frame": summarize_ms(latencies) if latencies else None,
        "av_skew": {**summarize_ms(skews), "raw_ms": [round(1000 * s, 1) for s in skews],
                    "at_s": [round(t - v_times[0], 2) for t, _ in pairs],
                    "drift_ms_per_min": _slope_per_min(pairs)} if skews else None,
        "stages": {k: summarize_ms(v) for k, v in stages.items()},
        "rss_mb": {"start": rss[0][1], "end": rss[-1][1], "max": max(r for _, r in rss),
                   "series": [[round(t, 1), round(r, 1)] for t, r in rss]} if rss else None,
        "received_fps": (len(v_times) - 1) / span,
        "frames_sent": sent, "frames_repeated": dropped,
        "raw_audio_to_frame_ms": [round(1000 * x, 2) for x in latencies],
    }


def _pair_with_time(a: list[float], b: list[float], max_gap: float = 0.5) -> list[tuple[float, float]]:
    """(onset in a, b - a) for each onset in a with a partner in b within ``max_gap``."""
    return [(t, d) for t in a for d in _pair([t], b, max_gap)]


def _slope_per_min(pairs: list[tuple[float, float]]) -> float | None:
    """Least-squares drift of the skew over the run, ms per minute (None with < 3 bursts)."""
    if len(pairs) < 3:
        return None
    t = np.array([p[0] for p in pairs])
    d = np.array([p[1] for p in pairs])
    return float(np.polyfit(t, d, 1)[0] * 1000 * 60)


def plot(r: dict, path: Path) -> None:
    """Latency histogram, the stage split (p50 bars), and skew/RSS over the run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].hist(r["raw_audio_to_frame_ms"], bins=40, color="tab:blue")
    ax[0].set(title="server audio-in -> frame-out", xlabel="ms", ylabel="frames")
    names = list(r["stages"])
    ax[1].barh(names, [r["stages"][k]["p50_ms"] for k in names], color="tab:green", label="p50")
    ax[1].barh(names, [r["stages"][k]["p99_ms"] - r["stages"][k]["p50_ms"] for k in names],
               left=[r["stages"][k]["p50_ms"] for k in names], color="tab:olive", alpha=0.5, label="p99")
    ax[1].invert_yaxis()
    ax[1].set(title="by stage", xlabel="ms")
    ax[1].legend()
    if r["av_skew"]:
        ax[2].plot(r["av_skew"]["at_s"], r["av_skew"]["raw_ms"], "o-", label="A/V skew (ms)")
    if r["rss_mb"]:
        t, m = zip(*r["rss_mb"]["series"])
        ax2 = ax[2].twinx()
        ax2.plot(t, m, color="tab:red", label="RSS (MiB)")
        ax2.set_ylabel("RSS MiB")
    ax[2].set(title="over the run", xlabel="s", ylabel="skew ms")
    fig.suptitle(f"{r['engine']}, {r['settings']['seconds']:.0f} s, {r['machine']['cores']} cores")
    save_figure(fig, path)


def print_table(r: dict) -> None:
    a = r["audio_to_frame"]
    print(f"\naudio-in -> frame-out (server): p50 {a['p50_ms']:.1f} ms, p99 {a['p99_ms']:.1f} ms "
          f"(n={a['n']})")
    s = r["av_skew"]
    if s:
        print(f"A/V skew at the client (audio onset - lip onset): p50 {s['p50_ms']:+.1f} ms, "
              f"min {s['min_ms']:+.1f}, max {max(s['raw_ms']):+.1f} ms over {s['n']} bursts")
    else:
        print("A/V skew: no burst onsets detected")
    print(f"received {r['received_fps']:.2f} fps; {r['frames_repeated']:.0f} of {r['frames_sent']:.0f} "
          f"frame slots repeated")
    if r["stages"]:
        print(f"\n{'stage':<16}{'p50 ms':>9}{'p99 ms':>9}{'n':>8}")
        for k, v in r["stages"].items():
            print(f"{k:<16}{v['p50_ms']:>9.2f}{v['p99_ms']:>9.2f}{v['n']:>8}")
    if s and s.get("drift_ms_per_min") is not None:
        print(f"A/V skew drift: {s['drift_ms_per_min']:+.2f} ms/min")
    if r["rss_mb"]:
        m = r["rss_mb"]
        print(f"RSS: {m['start']:.0f} -> {m['end']:.0f} MiB (max {m['max']:.0f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_server_latency",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="mic duration (default: 20)")
    p.add_argument("--engine", default="auto")
    p.add_argument("--max-lag-frames", type=int, default=2, choices=(1, 2, 3),
                   help="the server's --max-lag-frames (default: 2, the server's default)")
    p.add_argument("--render-when", default="tick", choices=("tick", "window"),
                   help="the server's render trigger (serve --render-when; default: tick)")
    p.add_argument("--model", type=Path, default=None, help="model directory (default: the built-in model)")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "server_latency.json")
    p.add_argument("--plot", type=Path, default=None, help="PNG (default: next to --json)")
    args = p.parse_args(argv)
    result = asyncio.run(run(args.seconds, args.engine, args.max_lag_frames, args.render_when, args.model))
    result["render_when"] = args.render_when
    publish(result, args.json, args.plot, print_table, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
