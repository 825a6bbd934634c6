"""How the mouth model does on real human speech: filmed speakers, their own mouths as the reference.

Each clip is a real person filmed saying a sentence (the GRID corpus samples in
``tests/data/grid/``, CC BY 4.0).  For every 25 fps video frame:

- **real mouth**: the inner-lip gap read off the video by mediapipe's face mesh (mean vertical
  distance of the three inner-lip pairs around the midline, over the forehead-chin face height);
- **model mouth**: the effective opening ``open * (1 - closure)`` the model makes from the clip's
  own audio, through the serving windows (``engines.windows``) at the model's lookahead: by default
  the shipped artifact (``engines/models/default``, its ONNX graph through the onnxruntime engine,
  voice gate 1), or a checkpoint (``--weights``) through torch;
- **baseline**: loudness gated by webrtcvad (``export.evaluate_audio.baseline_track``: it even sees
  20 ms of the future).

Per clip and mean: Pearson correlation with the real mouth at lag 0 (``corr``), the best lag in
frames within +-``MAX_LAG`` (positive = the model's mouth moves *later* than the speaker's) and the
correlation there, and ``silence_closed``: the share of frames in the pauses before and after the
sentence (``SIL_MARGIN_S`` away from speech) where the model's mouth is closed (effective opening
< ``export.evaluate_audio.CLOSED_OPEN``).

When pocketsphinx (PyPI; its English acoustic model is trained on real speech and ships in the
wheel) is installed, the clip's known sentence is force-aligned to its audio, which gives the pause
frames, and a phone-derived target (``export.phonemes.target_track``, the targets the model is
trained on); ``export.evaluate_audio.score`` then reports the model against it: ``corr_speech``,
``false_closure`` (open-vowel frames wrongly closed), ``closure_recall`` (p/b/m closed).  Without
pocketsphinx the pauses come from webrtcvad and the phone scores are left out.

    python -m export.real_speech_eval --json benchmarks/results/real_speech_eval.json
    python -m export.real_speech_eval --weights /tmp/candidate.pt      # a checkpoint, via torch
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from export.evaluate_audio import CLOSED_OPEN, baseline_track, score
from export.phonemes import Segments, effective_open, is_silence, target_track
from export.real_clips import Clip, align_phones, load_clip, real_mouth_opening, vad_segments
from engines.manifest import DEFAULT_MODEL_DIR, ModelManifest
from engines.mel import SAMPLE_RATE, melspectrogram
from engines.windows import frame_windows

REPO = Path(__file__).resolve().parent.parent
GRID_DIR = REPO / "tests" / "data" / "grid"
MAX_LAG = 5  # frames searched either side for the A/V offset
SIL_MARGIN_S = 0.08  # pause frames this close to speech are not counted as silence


class OnnxMouthModel:
    """The shipped artifact's ONNX graph through the onnxruntime engine; returns its ``params``."""

    def __init__(self, model_dir: Path | str = DEFAULT_MODEL_DIR, precision: str = "fp32") -> None:
        from engines.onnxruntime_engine import OnnxRuntimeEngine

        self.engine = OnnxRuntimeEngine(model_dir, precision=precision, threads=2)
        m = self.engine.manifest
        self.lookahead_s, self.fps = m.lookahead_s, m.fps
        # The crops are not looked at: any avatar row of the right shapes will do.
        feats = {k: np.zeros([1] + [int(d) for d in m.inputs[k][1:]], np.float32) for k in m.feature_keys}
        self.rows = self.engine.add_avatar("eval", feats)
        self.label = f"{Path(model_dir).name} ({precision} ONNX, lookahead {self.lookahead_s * 1000:.0f} ms)"

    def predict(self, windows: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(windows), 32):
            w = windows[i:i + 32]
            rows = np.repeat(self.rows[:1], len(w))
            out.append(self.engine.run(w, rows, np.ones(len(w), np.float32)).params)
        return np.concatenate(out)


class TorchMouthModel:
    """An audio-net checkpoint (``export.audio_net``) through torch, at its stored lookahead."""

    def __init__(self, weights: Path | str, fps: float = 25.0) -> None:
        from export import audio_net

        self.net = audio_net.load_default(path=Path(weights))
        ck = audio_net.load_checkpoint(Path(weights))
        self.lookahead_s = float(ck.get("lookahead_s", audio_net.LOOKAHEAD_S))
        self.fps = fps
        self.label = f"{weights} (torch, lookahead {self.lookahead_s * 1000:.0f} ms)"

    def predict(self, windows: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.net(torch.from_numpy(windows)).numpy()


def model_track(model, wav: np.ndarray, n_frames: int) -> np.ndarray:
    """(n_frames, 3) mouth parameters for frames 0..n-1 through the serving windows."""
    mel = melspectrogram(wav)
    return model.predict(frame_windows(mel, np.arange(n_frames), model.fps, model.lookahead_s))


def served_gate(wav: np.ndarray, n_frames: int, fps: float, lookahead_s: float) -> np.ndarray:
    """The server's voice gate per frame, as ``realtime.vad`` computes it (export may not import
    realtime): webrtcvad mode 2 on 20 ms frames, frames under -55 dBFS are non-speech, a decision
    held 150 ms, and frame k open when speech lies in ``[t_k - 20 ms - 150 ms, t_k + lookahead)``."""
    import webrtcvad

    vad, fl = webrtcvad.Vad(2), int(0.02 * SAMPLE_RATE)
    pcm = np.clip(np.rint(np.asarray(wav, np.float32) * 32768.0), -32768, 32767).astype(np.int16)
    pcm = np.pad(pcm, (0, -pcm.size % fl)).reshape(-1, fl)
    floor = (32768.0 * 10 ** (-55 / 20)) ** 2
    dec = np.array([vad.is_speech(f.tobytes(), SAMPLE_RATE) and np.mean(f.astype(np.float64) ** 2) > floor
                    for f in pcm], bool)
    csum = np.concatenate([[0], np.cumsum(dec)])
    t = np.arange(n_frames) / fps
    lo = np.clip(np.floor(np.maximum(t - 0.5 / fps, 0) / 0.02 + 1e-9).astype(int) - 8, 0, dec.size)
    hi = np.clip(np.ceil((t + lookahead_s) / 0.02 - 1e-9).astype(int), 0, dec.size)
    return (csum[np.maximum(hi, lo)] - csum[lo]) > 0


def silence_mask(seg: Segments, times: np.ndarray, margin_s: float = SIL_MARGIN_S) -> np.ndarray:
    """Frames inside a pause and at least ``margin_s`` from every sounding phone."""
    speech = [(s, e) for s, e, p in zip(seg.start, seg.end, seg.phone) if not is_silence(p, seg.phoneset)]
    if not speech:
        return np.ones(times.size, bool)
    keep = np.ones(times.size, bool)
    for s, e in speech:
        keep &= ~((times > s - margin_s) & (times < e + margin_s))
    return keep


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def lagged_corr(pred: np.ndarray, real: np.ndarray, max_lag: int = MAX_LAG) -> tuple[int, float]:
    """(lag, corr) maximising corr(pred[k + lag], real[k]): lag > 0 = the prediction is late."""
    best = (0, -2.0)
    n = pred.size
    for lag in range(-max_lag, max_lag + 1):
        a = pred[max(lag, 0): n + min(lag, 0)]
        b = real[max(-lag, 0): n - max(lag, 0)]
        c = pearson(a, b)
        if np.isfinite(c) and c > best[1]:
            best = (lag, c)
    return best


def _compare(pred_open: np.ndarray, real: np.ndarray, span: np.ndarray) -> dict:
    lag, c_lag = lagged_corr(pred_open, real)
    return {"corr": pearson(pred_open, real), "corr_speech": pearson(pred_open[span], real[span]),
            "best_lag": lag, "corr_at_best_lag": c_lag}


def evaluate_clip(clip: Clip, model, real: np.ndarray | None = None) -> dict:
    """All the figures for one clip (see the module docstring)."""
    if real is None:
        real = real_mouth_opening(clip.frames)
    n = len(real)
    t = np.arange(n) / clip.fps
    pred = model_track(model, clip.wav, n)
    base = baseline_track(clip.wav, n)
    pe, be = effective_open(pred), effective_open(base)
    served = pe * served_gate(clip.wav, n, clip.fps, model.lookahead_s)  # what the avatar shows
    seg = align_phones(clip.wav, clip.sentence)
    aligned = seg is not None
    if seg is None:
        seg = vad_segments(clip.wav)
    sil = silence_mask(seg, t)
    speech = ~silence_mask(seg, t, margin_s=0.0)  # inside a sounding phone
    sounding = [(a, b) for a, b, p in zip(seg.start, seg.end, seg.phone) if not is_silence(p, seg.phoneset)]
    span = (t >= sounding[0][0]) & (t < sounding[-1][1]) if sounding else np.ones(n, bool)
    res = {
        "frames": int(n),
        "sentence": clip.sentence,
        "alignment": "pocketsphinx" if aligned else "webrtcvad",
        "model": _compare(pe, real, span),
        "baseline": _compare(be, real, span),
        "silence_frames": int(sil.sum()),
        "silence_closed": float(np.mean(pe[sil] < CLOSED_OPEN)) if sil.any() else float("nan"),
        "baseline_silence_closed": float(np.mean(be[sil] < CLOSED_OPEN)) if sil.any() else float("nan"),
        "served_silence_closed": float(np.mean(served[sil] < CLOSED_OPEN)) if sil.any() else float("nan"),
        "served_corr": pearson(served, real),
        "real_open_speech": float(np.mean(real[speech])) if speech.any() else float("nan"),
        "real_open_silence": float(np.mean(real[sil])) if sil.any() else float("nan"),
    }
    if aligned:
        tgt = effective_open(target_track(seg, t))
        res["phones"] = {"model": score(pred, seg), "baseline": score(base, seg),
                         "target_vs_real_corr": pearson(tgt, real)}
        res["segments"] = [[round(float(s), 3), round(float(e), 3), p]
                           for s, e, p in zip(seg.start, seg.end, seg.phone)]
    res["tracks"] = {"real": np.round(real, 5).tolist(), "model": np.round(pe, 4).tolist(),
                     "baseline": np.round(be, 4).tolist()}
    return res


def _nanmean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.mean(xs)) if xs else float("nan")


def summarize(per_clip: dict) -> dict:
    """Mean (and worst) over clips of the headline figures."""
    rows = list(per_clip.values())
    out = {}
    for meth in ("model", "baseline"):
        out[meth] = {
            "corr": _nanmean([r[meth]["corr"] for r in rows]),
            "corr_min": float(np.nanmin([r[meth]["corr"] for r in rows])),
            "corr_speech": _nanmean([r[meth]["corr_speech"] for r in rows]),
            "corr_at_best_lag": _nanmean([r[meth]["corr_at_best_lag"] for r in rows]),
            "best_lag": [r[meth]["best_lag"] for r in rows],
        }
    out["model"]["silence_closed"] = _nanmean([r["silence_closed"] for r in rows])
    out["baseline"]["silence_closed"] = _nanmean([r["baseline_silence_closed"] for r in rows])
    out["model"]["served_silence_closed"] = _nanmean([r["served_silence_closed"] for r in rows])
    out["model"]["served_corr"] = _nanmean([r["served_corr"] for r in rows])
    ph = [r["phones"] for r in rows if "phones" in r]
    if ph:
        for meth in ("model", "baseline"):
            for k in ("corr_all", "corr_speech", "false_closure", "closure_recall", "silence_open"):
                out[meth]["phone_" + k] = _nanmean([p[meth][k] for p in ph])
        out["phone_target_vs_real_corr"] = _nanmean([p["target_vs_real_corr"] for p in ph])
        out["aligned_clips"] = len(ph)
    return out


def clip_paths(directory: Path = GRID_DIR) -> list[Path]:
    return sorted(Path(directory).glob("*.mpg"))


def evaluate(model, paths: list[Path]) -> dict:
    per = {}
    for p in paths:
        per[p.stem] = evaluate_clip(load_clip(p), model)
    return {"model": model.label, "lookahead_s": model.lookahead_s, "clips": per, "mean": summarize(per)}


def format_table(result: dict) -> str:
    """Per clip and mean: model vs real mouth, baseline vs real mouth, pauses, phone scores."""
    head = (f"{'clip':8s} {'corr':>6s} {'corrSp':>6s} {'lag':>4s} | {'base':>6s} {'baseSp':>6s} {'lag':>4s} | "
            f"{'silClosed':>9s} | {'phCorrSp':>8s} {'falseCl':>7s} {'pbm':>5s}")
    lines = [f"model: {result['model']}", head]
    rows = [(n, r["model"], r["baseline"], r["silence_closed"], r.get("phones", {}).get("model", {}))
            for n, r in result["clips"].items()]
    m = result["mean"]
    ph_mean = {k: m["model"].get("phone_" + k, np.nan) for k in ("corr_speech", "false_closure", "closure_recall")}
    rows.append(("MEAN", m["model"], m["baseline"], m["model"]["silence_closed"], ph_mean))
    for name, mo, ba, sil, ph in rows:
        lag_m = mo["best_lag"] if isinstance(mo["best_lag"], int) else ""
        lag_b = ba["best_lag"] if isinstance(ba["best_lag"], int) else ""
        lines.append(f"{name:8s} {mo['corr']:6.3f} {mo['corr_speech']:6.3f} {lag_m!s:>4s} | {ba['corr']:6.3f} "
                     f"{ba['corr_speech']:6.3f} {lag_b!s:>4s} | {sil:9.3f} | {ph.get('corr_speech', np.nan):8.3f} "
                     f"{ph.get('false_closure', np.nan):7.3f} {ph.get('closure_recall', np.nan):5.3f}")
    lines.append(f"with the server's voice gate: corr {m['model']['served_corr']:.3f}, silence closed "
                 f"{m['model']['served_silence_closed']:.3f}")
    lines.append(f"worst clip corr: model {m['model']['corr_min']:.3f}, baseline {m['baseline']['corr_min']:.3f}; "
                 f"phone targets vs real mouth {m.get('phone_target_vs_real_corr', np.nan):.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="model artifact (ONNX)")
    ap.add_argument("--precision", choices=["fp32", "fp16"], default="fp32")
    ap.add_argument("--weights", type=Path, default=None, help="an audio-net checkpoint instead (torch)")
    ap.add_argument("--clips", type=Path, nargs="*", default=None, help="clips (default: tests/data/grid/*.mpg)")
    ap.add_argument("--json", type=Path, default=None, help="write the full result here")
    ap.add_argument("--no-tracks", action="store_true", help="leave the per-frame tracks out of the JSON")
    a = ap.parse_args(argv)
    if a.weights:
        import torch

        torch.set_num_threads(2)
        model = TorchMouthModel(a.weights, fps=ModelManifest.load(a.model_dir).fps)
    else:
        model = OnnxMouthModel(a.model_dir, a.precision)
    result = evaluate(model, a.clips or clip_paths())
    print(format_table(result))
    if a.json:
        if a.no_tracks:
            for r in result["clips"].values():
                r.pop("tracks", None)
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
