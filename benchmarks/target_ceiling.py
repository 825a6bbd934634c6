"""How close can any phone-derived target come to a filmed mouth? A ceiling for the audio net.

The audio net is trained to reproduce ``export.phonemes.target_track``: a viseme table smoothed in
time, with a jaw-coupling knob for tongue-only consonants. A net that learnt its targets perfectly
would correlate with a real speaker's mouth exactly as well as those targets do. This script asks
how well each target shape of a fixed grid (jaw coupling 0 / 0.5 / 0.75 / 1, smoothing 50/30,
80/50, 120/80 ms of anticipation / carry-over) does on the GRID clips: the speakers' filmed mouths
and pocketsphinx's phone alignment, both read from a result of ``export.real_speech_eval`` (it
stores them per clip), so nothing is decoded again.

It is a measurement of the targets, not a fit: the grid is coarse and set beforehand, and a shape
picked by it on four 3 s clips would be tuned on the validation set the model is judged on.

    python -m benchmarks.target_ceiling --json benchmarks/results/target_ceiling.json
    python -m benchmarks.target_ceiling --from /tmp/rse.json       # another real_speech_eval result
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from export.phonemes import Segments, effective_open, is_silence, target_track
from export.real_speech_eval import pearson

DEFAULT_FROM = Path(__file__).resolve().parent / "results" / "real_speech_eval.json"
JAW = (0.0, 0.5, 0.75, 1.0)
SMOOTHING = ((0.05, 0.03), (0.08, 0.05), (0.12, 0.08))
FPS = 25.0


def clip_tracks(clip: dict) -> tuple[Segments, np.ndarray, np.ndarray]:
    """The aligned phones, the filmed mouth and the spoken span of one clip of a result file."""
    seg = clip["segments"]
    s = Segments(np.array([x[0] for x in seg]), np.array([x[1] for x in seg]), [x[2] for x in seg], "cmu")
    real = np.asarray(clip["tracks"]["real"], np.float64)
    t = np.arange(real.size) / FPS
    sounding = [(a, b) for a, b, p in seg if not is_silence(p, "cmu")]
    span = (t >= sounding[0][0]) & (t < sounding[-1][1])
    return s, real, span


def score_shape(clips: dict, **shape: float) -> dict:
    """Correlation of one target shape's effective opening with each clip's filmed mouth."""
    whole, speech = {}, {}
    for name, clip in clips.items():
        seg, real, span = clip_tracks(clip)
        tgt = effective_open(target_track(seg, np.arange(real.size) / FPS, **shape))
        whole[name], speech[name] = pearson(tgt, real), pearson(tgt[span], real[span])
    return {"shape": shape, "corr": float(np.mean(list(whole.values()))),
            "corr_speech": float(np.mean(list(speech.values()))), "per_clip": whole,
            "per_clip_speech": speech}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from", dest="src", type=Path, default=DEFAULT_FROM,
                    help="a JSON written by `python -m export.real_speech_eval --json`")
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    a = ap.parse_args(argv)
    try:
        res = json.loads(a.src.read_text())
    except (OSError, ValueError) as e:
        print(f"error: cannot read {a.src} ({e}); write one with "
              "`python -m export.real_speech_eval --json FILE`", file=sys.stderr)
        return 2
    clips = {k: c for k, c in res.get("clips", {}).items() if "segments" in c}
    if not clips:
        print(f"error: {a.src} has no phone-aligned clips (pocketsphinx missing when it was written?); "
              "re-run `python -m export.real_speech_eval --json FILE` with pocketsphinx installed",
              file=sys.stderr)
        return 2
    rows = [score_shape(clips, anticipation_s=an, carryover_s=co, jaw_coupling=j)
            for j in JAW for an, co in SMOOTHING]
    model = res.get("mean", {}).get("model", {})
    print(f"{len(clips)} clips from {a.src}; the model in that file: corr {model.get('corr', float('nan')):.3f}, "
          f"corr speech {model.get('corr_speech', float('nan')):.3f}")
    print("jaw  lead/carry   corr  corr speech   per clip (corr)")
    for r in rows:
        s = r["shape"]
        print(f"{s['jaw_coupling']:.2f} {s['anticipation_s'] * 1e3:4.0f}/{s['carryover_s'] * 1e3:<4.0f}ms "
              f"{r['corr']:6.3f} {r['corr_speech']:8.3f}      "
              + " ".join(f"{v:.3f}" for v in r["per_clip"].values()))
    best = max(rows, key=lambda r: r["corr"])
    print(f"best shape {best['shape']}: corr {best['corr']:.3f}; spread over the grid "
          f"{min(r['corr'] for r in rows):.3f}-{best['corr']:.3f}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"benchmark": "target_ceiling", "source": str(a.src), "clips": list(clips),
                                      "model_in_source": model, "shapes": rows}, indent=1))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
