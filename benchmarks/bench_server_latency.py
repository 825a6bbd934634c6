"""Server-side audio-in -> frame-out latency and the A/V skew a client sees, on loopback.

    python -m benchmarks.bench_server_latency [--seconds 20] [--json PATH]

An in-process server (the real app, engine and frame loop) and a real aiortc client on
127.0.0.1.  The client's mic plays speech bursts (0.8 s of the bundled sample) separated by
1.2 s of silence.  Reported:

* audio-in -> frame-out: the server's own timestamps, from the moment a frame's speech reached
  the audio front-end to the moment that frame was handed to the encoder (p50/p99);
* A/V skew: for every burst, the onset of the *returned* audio minus the onset of mouth motion
  in the *returned* video, both by client receive time (positive = sound after lips);
* received fps and the server's repeated-frame count.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import aiohttp
import numpy as np

from benchmarks.machine import RESULTS_DIR, machine_info, summarize_ms, write_result

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


async def run(seconds: float, engine_name: str, max_lag_frames: int = 2) -> dict:
    from benchmarks.webrtc_client import connect, serving
    from engines.factory import create_engine
    from export.avatar import ensure_default_avatar
    from realtime.server import K_STATE

    engine = create_engine(engine_name)
    avatar = ensure_default_avatar()
    x0, y0, x1, y1 = (int(v) for v in avatar.mouth_boxes[0])
    mic, mic_onsets = burst_signal(seconds)
    async with serving(engine, max_lag_frames=max_lag_frames) as (base, app), aiohttp.ClientSession() as http:
        client = await connect(base, http, mic=mic, mouth_box=(x0, y0, x1, y1))
        t_end = asyncio.get_running_loop().time() + seconds + 1.0
        while asyncio.get_running_loop().time() < t_end:
            await asyncio.sleep(0.25)
            done = int(len(client.video) / 25)
            sys.stderr.write(f"\rserver latency benchmark: {min(done, int(seconds))}/{int(seconds)} s")
        sys.stderr.write("\n")
        state = app[K_STATE]
        latencies = list(state.latency_samples)
        dropped = state.metrics.frames_dropped._value.get()
        sent = state.metrics.frames_sent._value.get()
        await client.close()

    v_times = np.array([t for t, _ in client.video])
    # mouth opening read off the pixels: the share of dark (cavity) pixels in the mouth box, which
    # the idle head motion of a still avatar does not change
    opening = np.array([(c.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) < 70).mean()
                        for _, c in client.video])
    a_times = np.array([t for t, _ in client.audio])
    a_rms = np.array([np.sqrt(np.mean((s.astype(np.float32) / 32768) ** 2)) for _, s in client.audio])
    lo, hi = np.percentile(opening, [10, 95])
    video_on = _onsets(v_times, opening, threshold=lo + 0.3 * max(hi - lo, 0.01))
    audio_on = _onsets(a_times, a_rms, threshold=0.3 * np.percentile(a_rms, 95))
    skews = _pair(video_on, audio_on)
    span = v_times[-1] - v_times[0] if v_times.size > 1 else 1.0
    return {
        "benchmark": "server_latency", "machine": machine_info(), "engine": engine.name,
        "model": {"name": engine.manifest.name, "lookahead_s": engine.manifest.lookahead_s},
        "settings": {"seconds": seconds, "bursts": len(mic_onsets), "burst_s": BURST_S, "gap_s": GAP_S,
                     "codec": "vp8", "max_lag_frames": max_lag_frames, "transport": "aiortc client on 127.0.0.1, same process"},
        "audio_to_frame": summarize_ms(latencies) if latencies else None,
        "av_skew": {**summarize_ms(skews), "raw_ms": [round(1000 * s, 1) for s in skews]} if skews else None,
        "received_fps": (len(v_times) - 1) / span,
        "frames_sent": sent, "frames_repeated": dropped,
        "raw_audio_to_frame_ms": [round(1000 * x, 2) for x in latencies],
    }


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_server_latency",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="mic duration (default: 20)")
    p.add_argument("--engine", default="auto")
    p.add_argument("--max-lag-frames", type=int, default=2, choices=(1, 2, 3),
                   help="the server's --max-lag-frames (default: 2, the server's default)")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "server_latency.json")
    args = p.parse_args(argv)
    result = asyncio.run(run(args.seconds, args.engine, args.max_lag_frames))
    print_table(result)
    write_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
