"""Evaluate a trained G4G generator on held-out frames, against copying a reference frame.

``python -m export.g4g.evaluate RUN/checkpoint.pt DATA_DIR --json OUT.json [--sync RUN_SYNC/checkpoint.pt]``

The held-out clips are the validation speakers of ``data.split_by_speaker`` (the rule training
used).  Each clip is driven the way the server drives an avatar: references spread over the clip
(``faces.pick_references`` without a generator), each frame's own masked source and landmark
prior, and the clip's own speech.  Figures, for the model and for the baseline "copy the first
reference frame", on the clip's frames other than its ``n_refs`` reference frames (a reference
frame scored against itself would give the copy 100 dB on one frame in 75, lifting its mean mouth
PSNR by about 1 dB, and would let the model copy its answer):

- PSNR and SSIM of the face crop and of its mouth region (``faces.mouth_region``);
- the mouth opening read by the face mesh (``export.real_clips.real_mouth_opening``, the function
  the real-speech evaluation uses) on the output crops vs the ground-truth crops, both upscaled
  to ``MESH_SIDE`` px: Pearson correlation and mean absolute error;
- with a sync expert: its mean in-sync probability on 5-frame windows of the output, of the
  ground truth and of the copy (all frames: the windows need consecutive frames).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from export.g4g import data as gdata
from export.g4g.config import G4GConfig
from export.g4g.faces import mask_lower, mouth_region, pick_references
from export.g4g.losses import ssim
from export.g4g.model import G4G
from export.g4g.train import FORMAT, psnr
from export.real_speech_eval import pearson

log = logging.getLogger(__name__)

MESH_SIDE = 256  # crops are upscaled to this before the face mesh reads the mouth opening


def load_generator(path: Path) -> tuple[G4G, dict]:
    """The generator (eval mode) and its checkpoint dict; ValueError for another file."""
    ck = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ValueError(f"{path} is not a lipstream G4G checkpoint (made by `lipstream train`)")
    model = G4G(G4GConfig.from_dict(ck["config"]))
    model.load_state_dict(ck["generator"])
    return model.eval(), ck


def generate_clip(model: G4G, clip: gdata.ClipData, lo: int, hi: int, batch: int = 25) -> tuple[np.ndarray, ...]:
    """(output, ground truth, copied reference) faces (n, 3, S, S) float32 for frames lo..hi-1, and
    the reference frames' indices within them (n_refs,)."""
    cfg = model.cfg
    target = clip.faces[lo:hi].astype(np.float32) / 255.0
    refs_idx = lo + pick_references(hi - lo, cfg.n_refs)
    refs = (clip.faces[refs_idx].astype(np.float32) / 255.0).reshape(1, -1, cfg.size, cfg.size)
    outs = []
    with torch.no_grad():
        for s in range(0, len(target), batch):
            t = torch.from_numpy(target[s:s + batch])
            n = len(t)
            out = model(torch.from_numpy(mask_lower(t.numpy(), cfg.mask_from)),
                        torch.from_numpy(refs).expand(n, -1, -1, -1),
                        torch.from_numpy(clip.prior[lo + s:lo + s + n].astype(np.float32) / 255.0),
                        torch.from_numpy(clip.windows[lo + s:lo + s + n]))
            outs.append(out.face.numpy())
    copy = np.repeat(refs[:, :3], len(target), 0)
    return np.concatenate(outs), target, copy, refs_idx - lo


def image_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """PSNR / SSIM of the whole crop and of the mouth region."""
    rows, cols = mouth_region(pred.shape[-1])
    p, t = torch.from_numpy(pred), torch.from_numpy(target)
    pm, tm = p[..., rows, cols].contiguous(), t[..., rows, cols].contiguous()
    return {"psnr": psnr(p, t).mean().item(), "ssim": ssim(p, t).mean().item(),
            "mouth_psnr": psnr(pm, tm).mean().item(), "mouth_ssim": ssim(pm, tm).mean().item()}


def mouth_openings(faces: np.ndarray) -> np.ndarray | None:
    """Face-mesh mouth opening per crop (upscaled to MESH_SIDE), or None where the mesh finds no face."""
    from export.real_clips import real_mouth_opening

    frames = [cv2.resize(np.round(f.transpose(1, 2, 0) * 255).astype(np.uint8), (MESH_SIDE, MESH_SIDE),
                         interpolation=cv2.INTER_CUBIC) for f in faces]
    try:
        return real_mouth_opening(np.stack(frames))
    except RuntimeError as exc:
        log.warning("mouth opening not measured: %s", exc)
        return None


def sync_scores(expert: torch.nn.Module, faces: np.ndarray, clip: gdata.ClipData, lo: int) -> float:
    """Mean in-sync probability of the expert on every 5-frame window of ``faces``."""
    n = len(faces) - gdata.WINDOW + 1
    f5 = torch.from_numpy(np.stack([faces[s:s + gdata.WINDOW] for s in range(n)]))
    mel = torch.from_numpy(clip.windows[[lo + s + gdata.WINDOW // 2 for s in range(n)]])
    with torch.no_grad():
        return float(expert.sync_probability(f5, mel).mean())


def _mouth_figures(real: np.ndarray | None, pred: np.ndarray | None) -> dict[str, float | None]:
    if real is None or pred is None:
        return {"mouth_open_corr": None, "mouth_open_mae": None}
    c = pearson(pred, real)
    return {"mouth_open_corr": None if not np.isfinite(c) else c, "mouth_open_mae": float(np.abs(pred - real).mean())}


def evaluate(checkpoint: Path, data_dir: Path, cache: Path, sync: Path | None = None) -> dict:
    """Per-clip and mean figures for the model and the copy-reference baseline."""
    model, ck = load_generator(checkpoint)
    clips = gdata.prepare_dataset(data_dir, model.cfg.size, cache)
    _, val_r, how = gdata.split_by_speaker(clips)
    expert = None
    if sync is not None:
        from export.g4g.syncnet import load_expert

        expert = load_expert(sync)
    per_clip, n_scored = {}, 0
    for ci, lo, hi in val_r:
        clip = clips[ci]
        out, gt, copy, ref_idx = generate_clip(model, clip, lo, hi)
        keep = np.setdiff1d(np.arange(len(gt)), ref_idx)  # never score a reference against itself
        n_scored += len(keep)
        real_open = mouth_openings(gt[keep])
        res = {}
        for name, faces in (("model", out), ("copy_reference", copy)):
            res[name] = {**image_scores(faces[keep], gt[keep]),
                         **_mouth_figures(real_open, mouth_openings(faces[keep]))}
            if expert is not None:
                res[name]["sync"] = sync_scores(expert, faces, clip, lo)
        if expert is not None:
            res["ground_truth"] = {"sync": sync_scores(expert, gt, clip, lo)}
        per_clip[clip.name] = res
    return {"checkpoint": str(checkpoint), "step": int(ck["step"]), "split": how, "n_frames":
            int(sum(hi - lo for _, lo, hi in val_r)), "n_scored": n_scored, "mean": _means(per_clip),
            "per_clip": per_clip}


def _means(per_clip: dict) -> dict:
    out: dict[str, dict] = {}
    for res in per_clip.values():
        for who, figs in res.items():
            for k, v in figs.items():
                out.setdefault(who, {}).setdefault(k, []).append(v)
    return {who: {k: (float(np.mean([x for x in v if x is not None])) if any(x is not None for x in v) else None)
                  for k, v in figs.items()} for who, figs in out.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.g4g.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="RUN/checkpoint.pt from `lipstream train`")
    p.add_argument("data_dir", type=Path, help="the talking videos it was trained on (validation speakers are scored)")
    p.add_argument("--json", type=Path, default=None, help="write the figures here as JSON")
    p.add_argument("--sync", type=Path, default=None, help="sync expert checkpoint (`lipstream train-sync`)")
    p.add_argument("--cache", type=Path, default=None, help="prepared-clip cache (default: next to the checkpoint)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = evaluate(args.checkpoint, args.data_dir, args.cache or args.checkpoint.parent / "data-cache", args.sync)
    except (gdata.DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(json.dumps(result["mean"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
