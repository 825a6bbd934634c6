"""Held-out evaluation of the audio-to-mouth net against a loudness+VAD baseline.

Voices never seen in training (flite ``slt``, festival ``cmu_us_slt_arctic_hts``) speak fresh
sentences; each is scored clean and through a fixed microphone degradation (room reverb, band
limit, noise), at 25 fps through the serving path's windows (``engines.windows.frame_windows``).

Targets: the reference phone targets (``export.phonemes.target_track`` defaults), the same yardstick
for every checkpoint; ``--targets trained`` scores against the targets a checkpoint was trained on
(its ``train_info["targets"]``) instead.

Metrics (effective opening = open * (1 - closure); "closed" = closure > 0.5 or effective
opening < ``CLOSED_OPEN``):

- ``corr_all`` / ``corr_speech``: Pearson correlation of predicted vs target effective opening over
  all frames / over frames inside a phone that is not a pause.
- ``closure_recall``: fraction of p/b/m phones with at least one "closed" frame within the phone
  (widened by ``TOL_S`` on each side, so a 50 ms /p/ between two frame ticks still counts).
- ``false_closure``: fraction of frames in the middle of open vowels (aa ae ah ao aw ay eh and
  SAMPA equivalents, 30 ms trimmed off each edge) predicted "closed".
- ``silence_open``: mean predicted effective opening in pause frames (should be ~0).
- ``jitter``: mean frame-to-frame change of the predicted effective opening over that of the
  target (1 = moves as much as the target; well above 1 = flicker).

Baseline: open = per-file normalised RMS loudness (40 ms, centred: it even sees the future),
gated by webrtcvad (mode 2); width 0, closure 0.

    python -m export.evaluate_audio --json benchmarks/results/audio_net_eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import webrtcvad

from export import augment
from export.phonemes import Segments, effective_open, is_bilabial, is_open_vowel, is_silence, target_track
from export.speech_corpus import DEFAULT_DATA_DIR, generate, load_voice
from engines.mel import SAMPLE_RATE, melspectrogram
from engines.windows import frame_count, frame_windows

FPS = 25.0
CLOSED_OPEN = 0.1
TOL_S = 0.02
EDGE_S = 0.03


def fixed_degradation(rng: np.random.Generator) -> augment.Degradation:
    """The evaluation's microphone: reverb, band limit, noise always on (drawn within ranges)."""
    return augment.Degradation(
        speed=1.0, level_db=float(rng.uniform(-35, -15)), rt60_s=float(rng.uniform(0.25, 0.5)),
        drr_db=float(rng.uniform(3, 9)), low_hz=float(rng.uniform(150, 300)),
        high_hz=float(rng.choice([3400.0, 5500.0, 7000.0])), tilt_db_per_oct=float(rng.uniform(-2, 2)),
        noise_kind=str(rng.choice(["pink", "babble", "white"])), snr_db=float(rng.uniform(10, 20)),
        clip_drive=0.0)


def degrade_fixed(wav: np.ndarray, utt_start: np.ndarray, seed: int) -> np.ndarray:
    """Per-utterance fixed-kind degradation (no speed change, so labels stay valid)."""
    rng = np.random.default_rng(seed)
    bounds = list(utt_start) + [wav.size]
    return np.concatenate([augment.apply(wav[a:b], fixed_degradation(rng), rng)
                           for a, b in zip(bounds[:-1], bounds[1:])])


def baseline_track(wav: np.ndarray, n_frames: int, vad_mode: int = 2) -> np.ndarray:
    """Loudness+VAD baseline (n_frames, 3): open from RMS, width 0, closure 0."""
    t = np.arange(n_frames) / FPS
    half = int(0.02 * SAMPLE_RATE)
    centers = (t * SAMPLE_RATE).astype(np.int64)
    padded = np.pad(wav.astype(np.float64), (half, half))
    idx = centers[:, None] + np.arange(2 * half)[None, :]
    idx = np.clip(idx, 0, padded.size - 1)
    db = 10 * np.log10(np.mean(padded[idx] ** 2, axis=1) + 1e-10)
    lo, hi = np.percentile(db, 10), np.percentile(db, 95)
    loud = np.clip((db - lo) / max(hi - lo, 1e-6), 0, 1)
    vad = webrtcvad.Vad(vad_mode)
    fl = int(0.02 * SAMPLE_RATE)
    pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16)
    n_v = pcm.size // fl
    speech = np.array([vad.is_speech(pcm[i * fl:(i + 1) * fl].tobytes(), SAMPLE_RATE) for i in range(n_v)])
    vi = np.clip((t / 0.02).astype(np.int64), 0, max(n_v - 1, 0))
    gate = speech[vi] if n_v else np.zeros(n_frames, bool)
    out = np.zeros((n_frames, 3), np.float32)
    out[:, 0] = loud * gate
    return out


def net_track(model, wav: np.ndarray, n_frames: int, lookahead_s: float) -> np.ndarray:
    """The net's (n_frames, 3) predictions through the serving windows."""
    import torch

    mel = melspectrogram(wav)
    win = frame_windows(mel, np.arange(n_frames), FPS, lookahead_s)
    with torch.no_grad():
        return model(torch.from_numpy(win)).numpy()


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def score(pred: np.ndarray, seg: Segments, targets: dict | None = None) -> dict[str, float]:
    """The metrics above for one (n_frames, 3) prediction track (``targets``: target_track options)."""
    n = pred.shape[0]
    t = np.arange(n) / FPS
    tgt = target_track(seg, t, **(targets or {}))
    pe, te = effective_open(pred), effective_open(tgt)
    idx = np.clip(np.searchsorted(seg.end, t, side="right"), 0, len(seg.phone) - 1)
    sil_ph = np.array([is_silence(p, seg.phoneset) for p in seg.phone])
    speech = ~sil_ph[idx]
    closed = (pred[:, 2] > 0.5) | (pe < CLOSED_OPEN)
    hits, total = 0, 0
    fc_n, fc_d = 0, 0
    for s, e, p in zip(seg.start, seg.end, seg.phone):
        if is_bilabial(p, seg.phoneset):
            lo, hi = np.searchsorted(t, s - TOL_S), np.searchsorted(t, e + TOL_S)
            total += 1
            hits += bool(np.any(closed[lo:hi]))
        elif is_open_vowel(p, seg.phoneset) and e - s > 2 * EDGE_S:
            lo, hi = np.searchsorted(t, s + EDGE_S), np.searchsorted(t, e - EDGE_S)
            fc_n += int(np.sum(closed[lo:hi]))
            fc_d += max(hi - lo, 0)
    return {
        "corr_all": _pearson(pe, te),
        "corr_speech": _pearson(pe[speech], te[speech]),
        "closure_recall": hits / total if total else float("nan"),
        "false_closure": fc_n / fc_d if fc_d else float("nan"),
        "silence_open": float(np.mean(pe[~speech])) if np.any(~speech) else float("nan"),
        "jitter": float(np.mean(np.abs(np.diff(pe))) / max(np.mean(np.abs(np.diff(te))), 1e-9)),
        "frames": int(n),
    }


def evaluate(model, data_dir: Path, utts: int, seed: int, lookahead_s: float,
             targets: dict | None = None) -> dict:
    """Scores per voice x condition x method, plus the frame-weighted mean over voices."""
    paths = generate(data_dir, "eval", utts, utts, seed, n_recorded=utts)
    res: dict = {}
    for p in paths:
        v = load_voice(p)
        conds = {"clean": v.wav, "degraded": degrade_fixed(v.wav, v.utt_start, seed + 17)}
        for cond, wav in conds.items():
            n = frame_count(wav.size, SAMPLE_RATE, FPS)
            res.setdefault(v.name, {})[cond] = {
                "net": score(net_track(model, wav, n, lookahead_s), v.seg, targets),
                "baseline": score(baseline_track(wav, n), v.seg, targets),
            }
    mean: dict = {}
    for cond in ("clean", "degraded"):
        for meth in ("net", "baseline"):
            rows = [res[v][cond][meth] for v in res]
            w = np.array([r["frames"] for r in rows], np.float64)
            mean.setdefault(cond, {})[meth] = {
                k: float(np.nansum([r[k] * wi for r, wi in zip(rows, w)]) / w.sum())
                for k in rows[0] if k != "frames"}
    return {"per_voice": res, "mean": mean}


def format_table(result: dict) -> str:
    """Plain-text table: metric x (condition, method)."""
    keys = ["corr_all", "corr_speech", "closure_recall", "false_closure", "silence_open", "jitter"]
    lines = [f"{'voice/cond':28s}" + "".join(f"{k:>15s}" for k in keys)]
    blocks = [("MEAN", result["mean"])] + list(result["per_voice"].items())
    for name, conds in blocks:
        for cond, meths in conds.items():
            for meth, sc in meths.items():
                lines.append(f"{name + ' ' + cond + ' ' + meth:28s}" + "".join(f"{sc[k]:15.3f}" for k in keys))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=Path, default=None, help="checkpoint (default: the committed one)")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--utts", type=int, default=40, help="held-out utterances per voice")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the full result here")
    ap.add_argument("--targets", choices=["reference", "trained"], default="reference",
                    help="score against the reference phone targets (export.phonemes defaults: the same "
                         "yardstick for every model) or the targets the checkpoint was trained on")
    a = ap.parse_args(argv)

    import torch

    from export import audio_net

    torch.set_num_threads(2)
    path = a.weights or audio_net.WEIGHTS_PATH
    model = audio_net.load_default(path=path)
    ck = audio_net.load_checkpoint(path)
    lookahead = float(ck.get("lookahead_s", audio_net.LOOKAHEAD_S))
    targets = ck.get("train_info", {}).get("targets") if a.targets == "trained" else None
    result = evaluate(model, a.data_dir, a.utts, a.seed, lookahead, targets)
    result["weights"] = str(path)
    result["targets"] = targets or "reference"
    print(format_table(result))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
