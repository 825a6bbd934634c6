"""Does the served mouth flicker, and what would a per-session smoother of its parameters buy and cost?

A measurement, not a feature: the built-in model computes the mouth parameters and renders the crop
in one graph (``export.generator.Generator``), so a smoother carried as session state would need
that graph split (or a state input on every engine); ``docs/model-card.md`` says why it was left.
This probe answers the question first, offline, on the tracks the serving windows give:

1. **movement**: on the GRID clips (``export.real_speech_eval``; real speakers, never trained on),
   the served effective opening (net x the server's voice gate) against the reference phone targets,
   the targets the checkpoint was trained on (``train_info["targets"]``) and the speaker's own filmed
   mouth (scaled to the served track's spread): mean frame-to-frame change and direction reversals
   (steps over ``REVERSAL_STEP`` whose sign flips: what flicker looks like);
2. **a causal smoother**, ``y_k = a x_k + (1 - a) y_(k-1)`` on open and width (closure left raw so a
   p/b/m press keeps its depth), for each ``a`` in ``ALPHAS`` (1 = today's output): the real-speech
   figures, the synthetic held-out ones (``export.evaluate_audio``, reference targets) and its group
   delay ``(1 - a) / a`` frames, the latency it would add to every frame.

    python -m benchmarks.mouth_smoothing_probe --json benchmarks/results/mouth_smoothing_probe.json
    python -m benchmarks.mouth_smoothing_probe --weights /tmp/la20.pt      # another checkpoint
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ALPHAS = (1.0, 0.8, 0.65, 0.5)
REVERSAL_STEP = 0.02  # a frame-to-frame step smaller than this is not counted as a movement
FPS = 25.0


def ema(params: np.ndarray, a: float, cols: tuple[int, ...] = (0, 1)) -> np.ndarray:
    """Causal exponential smoothing of ``cols`` of a (n, P) track, started from its first frame."""
    y = np.array(params, np.float64)
    idx = list(cols)
    for k in range(1, len(y)):
        y[k, idx] = a * y[k, idx] + (1 - a) * y[k - 1, idx]
    return y.astype(np.float32)


def movement(track: np.ndarray) -> dict[str, float]:
    """Mean frame-to-frame change and direction reversals of a 1-D track."""
    d = np.diff(np.asarray(track, np.float64))
    big = d[np.abs(d) > REVERSAL_STEP]
    return {"mean_abs_step": float(np.mean(np.abs(d))),
            "reversals": int(np.sum(np.sign(big[1:]) != np.sign(big[:-1])))}


def load_clips(model) -> list[dict]:
    """Per GRID clip: the real mouth, the served params (net x voice gate), the aligned phones."""
    from export import real_speech_eval as rse
    from export.real_clips import align_phones, load_clip, real_mouth_opening

    clips = []
    for path in rse.clip_paths():
        clip = load_clip(path)
        real = real_mouth_opening(clip.frames)
        n = len(real)
        raw = rse.model_track(model, clip.wav, n)
        gate = rse.served_gate(clip.wav, n, clip.fps, model.lookahead_s).astype(np.float32)
        seg = align_phones(clip.wav, clip.sentence)
        if seg is None:
            raise RuntimeError("pocketsphinx is needed to align the clips (pip install pocketsphinx==5.1.1)")
        clips.append({"name": path.stem, "real": real, "served": raw * gate[:, None], "seg": seg,
                      "t": np.arange(n) / clip.fps})
    return clips


def clip_movement(clips: list[dict], trained: dict) -> dict:
    """Part 1: how much the served mouth moves against its targets and the real mouth, per clip."""
    from export.phonemes import effective_open, target_track

    out = {}
    for c in clips:
        served = effective_open(c["served"])
        real = c["real"]
        real_scaled = (real - real.mean()) * served.std() / max(real.std(), 1e-9) + served.mean()
        tracks = {"served": served, "reference_target": effective_open(target_track(c["seg"], c["t"])),
                  "trained_target": effective_open(target_track(c["seg"], c["t"], **trained)),
                  "real_mouth_scaled": real_scaled}
        row = {k: movement(v) for k, v in tracks.items()}
        s = row["served"]["mean_abs_step"]
        row["served_over"] = {k: s / max(row[k]["mean_abs_step"], 1e-9) for k in tracks if k != "served"}
        out[c["name"]] = row
    return out


def _real_scores(clips: list[dict], a: float, trained: dict) -> dict:
    """Real-speech figures of the smoothed served track, mean (and per clip) over the clips."""
    from export import real_speech_eval as rse
    from export.evaluate_audio import CLOSED_OPEN, score
    from export.phonemes import effective_open, is_silence

    rows = []
    for c in clips:
        sm = ema(c["served"], a)
        pe, t, seg = effective_open(sm), c["t"], c["seg"]
        sounding = [(s, e) for s, e, p in zip(seg.start, seg.end, seg.phone) if not is_silence(p, seg.phoneset)]
        span = (t >= sounding[0][0]) & (t < sounding[-1][1])
        sil = rse.silence_mask(seg, t)
        ph = score(sm, seg)
        rows.append({"corr": rse.pearson(pe, c["real"]), "corr_speech": rse.pearson(pe[span], c["real"][span]),
                     "best_lag": rse.lagged_corr(pe, c["real"])[0],
                     "silence_closed": float(np.mean(pe[sil] < CLOSED_OPEN)),
                     "closure_recall": ph["closure_recall"], "false_closure": ph["false_closure"],
                     "jitter_reference": ph["jitter"], "jitter_trained": score(sm, seg, trained)["jitter"]})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "best_lag"}
    mean["corr_min"] = float(min(r["corr"] for r in rows))
    mean["best_lag"] = [r["best_lag"] for r in rows]
    mean["jitter_trained_per_clip"] = [round(r["jitter_trained"], 3) for r in rows]
    return mean


def synthetic_tracks(net, lookahead_s: float, utts: int = 40, seed: int = 0) -> list[tuple]:
    """(condition, params, segments) of ``export.evaluate_audio``'s held-out voices, clean and degraded."""
    from export import evaluate_audio as ea
    from export.speech_corpus import DEFAULT_DATA_DIR, generate, load_voice
    from engines.mel import SAMPLE_RATE
    from engines.windows import frame_count

    out = []
    for p in generate(DEFAULT_DATA_DIR, "eval", utts, utts, seed, n_recorded=utts):
        v = load_voice(p)
        for cond, wav in (("clean", v.wav), ("degraded", ea.degrade_fixed(v.wav, v.utt_start, seed + 17))):
            out.append((cond, ea.net_track(net, wav, frame_count(wav.size, SAMPLE_RATE, ea.FPS), lookahead_s), v.seg))
    return out


def _synthetic_scores(tracks: list[tuple], a: float, trained: dict) -> dict:
    """Frame-weighted means over voices, as ``export.evaluate_audio`` reports them."""
    from export.evaluate_audio import score

    res = {}
    for cond in ("clean", "degraded"):
        rows = [(score(ema(tr, a), seg), score(ema(tr, a), seg, trained)) for c, tr, seg in tracks if c == cond]
        w = np.array([r[0]["frames"] for r in rows], np.float64)
        res[cond] = {k: float(sum(r[0][k] * wi for r, wi in zip(rows, w)) / w.sum())
                     for k in ("corr_speech", "closure_recall", "false_closure", "jitter")}
        res[cond]["jitter_trained"] = float(sum(r[1]["jitter"] * wi for r, wi in zip(rows, w)) / w.sum())
    return res


def probe(weights: Path, alphas: tuple[float, ...] = ALPHAS) -> dict:
    """Both parts for one checkpoint (torch, at its stored lookahead)."""
    from export import audio_net
    from export.real_speech_eval import TorchMouthModel

    model = TorchMouthModel(weights, fps=FPS)
    trained = audio_net.load_checkpoint(weights).get("train_info", {}).get("targets") or {}
    clips = load_clips(model)
    tracks = synthetic_tracks(model.net, model.lookahead_s)
    smoothers = {str(a): {"alpha": a, "group_delay_ms": 1000.0 * (1 - a) / a / FPS,
                          "real": _real_scores(clips, a, trained),
                          "synthetic": _synthetic_scores(tracks, a, trained)} for a in alphas}
    return {"benchmark": "mouth_smoothing_probe", "weights": str(weights), "lookahead_s": model.lookahead_s,
            "trained_targets": trained, "movement": clip_movement(clips, trained), "smoothers": smoothers}


def format_table(res: dict) -> str:
    lines = [f"{res['weights']} (lookahead {res['lookahead_s'] * 1000:.0f} ms)",
             "served mean |step| over: reference target / trained target / real mouth (scaled); reversals"]
    for name, row in res["movement"].items():
        o = row["served_over"]
        lines.append(f"  {name}: {o['reference_target']:.2f} / {o['trained_target']:.2f} / "
                     f"{o['real_mouth_scaled']:.2f}; reversals served {row['served']['reversals']}, "
                     f"trained target {row['trained_target']['reversals']}, real {row['real_mouth_scaled']['reversals']}")
    for s in res["smoothers"].values():
        r, c, d = s["real"], s["synthetic"]["clean"], s["synthetic"]["degraded"]
        lines.append(f"a={s['alpha']:.2f} (+{s['group_delay_ms']:.0f} ms): real corr {r['corr']:.3f}/{r['corr_min']:.3f} "
                     f"speech {r['corr_speech']:.3f} lag {r['best_lag']} silence {r['silence_closed']:.3f} "
                     f"p/b/m {r['closure_recall']:.3f} jitter ref {r['jitter_reference']:.2f} trained "
                     f"{r['jitter_trained']:.2f} | synthetic speech {c['corr_speech']:.3f}/{d['corr_speech']:.3f} "
                     f"p/b/m {c['closure_recall']:.3f}/{d['closure_recall']:.3f} jitter trained "
                     f"{c['jitter_trained']:.2f}/{d['jitter_trained']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mouth_smoothing_probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=None, help="audio-net checkpoint (default: the committed one)")
    ap.add_argument("--json", type=Path, default=None, help="write the result here")
    a = ap.parse_args(argv)
    import torch

    from export import audio_net

    torch.set_num_threads(1)
    weights = a.weights or audio_net.WEIGHTS_PATH
    if not Path(weights).is_file():
        print(f"error: no checkpoint at {weights}: train one with python -m export.train_audio --out FILE", file=sys.stderr)
        return 2
    res = probe(Path(weights))
    print(format_table(res))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
