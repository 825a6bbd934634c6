"""The server's "lookahead" latency stage for a model lookahead, on a manual clock (no CPU load in it).

The stage is pure bookkeeping (``realtime.frame_meta.FrameMeta.stages``): the time between the
speech at a frame's instant reaching the front end and the last sample of that frame's mel window
reaching it (``realtime.timeline.Timeline.heard_at`` / ``ready_at``).  Here the timeline is fed
audio in real time, in 20 ms chunks as WebRTC's Opus delivers it, each heard when its last sample
is due, and the stage is read for every frame.  On an idle machine the live benchmark
(``benchmarks.bench_server_latency``, 40 ms model) measured p50 59.8 ms / mean 56.0 ms: what this
gives for 40 ms; on a loaded machine the live figure is distorted by late, bunched audio.

    python -m benchmarks.lookahead_stage [--lookahead 0.04 0.02 0.0] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from engines.audio_convention import AudioConvention
from realtime.timeline import Timeline


def lookahead_stage(lookahead_s: float, seconds: float = 20.0, chunk_s: float = 0.02) -> dict[str, float]:
    """p50 / mean / min / max (ms) of the lookahead stage over ``seconds`` of real-time audio."""
    tl = Timeline(AudioConvention.wav2lip(lookahead_s), history_s=seconds + 2)
    n = int(round(chunk_s * 16000))
    rng = np.random.default_rng(0)
    for i in range(int(seconds / chunk_s)):
        tl.push(rng.standard_normal(n).astype(np.float32) * 0.01, heard_at=(i + 1) * chunk_s)
    now = seconds + 1.0
    frames = np.arange(int((seconds - 0.5) * tl.fps))  # every frame whose window lies inside the audio
    st = np.array([max(tl.ready_at(int(k), now), tl.heard_at(int(k))) - tl.heard_at(int(k)) for k in frames]) * 1e3
    return {"p50_ms": round(float(np.median(st)), 2), "mean_ms": round(float(st.mean()), 2),
            "min_ms": round(float(st.min()), 2), "max_ms": round(float(st.max()), 2), "frames": int(frames.size)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.lookahead_stage", description=__doc__.split("\n\n")[0])
    ap.add_argument("--lookahead", type=float, nargs="+", default=[0.04, 0.02, 0.0], help="seconds")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if any(x < 0 or x > 0.5 for x in a.lookahead):
        print("error: --lookahead takes seconds between 0 and 0.5, e.g. --lookahead 0.04 0.02 0", file=sys.stderr)
        return 2
    res = {f"{x * 1000:g} ms": lookahead_stage(x) for x in a.lookahead}
    for k, v in res.items():
        print(f"lookahead {k}: stage p50 {v['p50_ms']:.1f} ms, mean {v['mean_ms']:.1f} ms "
              f"(min {v['min_ms']:.1f}, max {v['max_ms']:.1f}, {v['frames']} frames)")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
