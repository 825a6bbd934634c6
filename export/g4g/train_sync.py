"""``lipstream train-sync DATA_DIR --out RUN``: train the G4G lip-sync expert (``syncnet.SyncExpert``).

Each step draws windows of five consecutive face crops from the training speakers, half paired
with the middle frame's own mel window (in sync, label 1) and half with the window of a frame at
least five frames away in the same clip (off sync, label 0), and minimises BCE on the expert's
in-sync probability.  Validation (held-out speakers, the same pairs every time) reports the loss
and the accuracy at 0.5.  The run directory holds ``checkpoint.pt`` (``format`` =
``lipstream-g4g-sync``), ``log.jsonl`` and the data cache.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from export.g4g import data as gdata
from export.g4g.checkpoints import CHECKPOINT, JsonLog, load_checkpoint, pick_device, save_atomic
from export.g4g.config import preset
from export.g4g.syncnet import SYNC_FORMAT, SYNC_VERSION, SyncExpert

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def sample_pairs(clips: list[gdata.ClipData], ranges: gdata.Ranges, rng: np.random.Generator,
                 n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(faces5 (n,5,3,S,S) float32, mel (n,1,80,16), label (n,)): half in sync, half shifted."""
    faces5, mels, labels = [], [], []
    for k in range(n):
        ci, lo, hi = ranges[int(rng.integers(len(ranges)))]
        clip = clips[ci]
        s = int(rng.integers(lo, hi - gdata.WINDOW + 1))
        faces5.append(clip.faces[s:s + gdata.WINDOW].astype(np.float32) / 255.0)
        sync = k % 2 == 0
        mid = s + gdata.WINDOW // 2
        mels.append(clip.windows[mid] if sync else gdata.shifted_windows(clip, mid, rng))
        labels.append(1.0 if sync else 0.0)
    return np.stack(faces5), np.stack(mels), np.asarray(labels, np.float32)


def _validate(expert: SyncExpert, val: tuple[np.ndarray, ...], device: torch.device) -> dict:
    expert.eval()
    with torch.no_grad():
        f5, mel, y = (torch.from_numpy(a).to(device) for a in val)
        p = torch.cat([expert(f5[i:i + 32], mel[i:i + 32]) for i in range(0, len(y), 32)])
        loss = F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), y)
        acc = ((p > 0.5).float() == y).float().mean()
    expert.train()
    return {"val_loss": float(loss), "val_acc": float(acc), "val_p_sync": float(p[y == 1].mean()),
            "val_p_off": float(p[y == 0].mean())}


def _start(args: argparse.Namespace, size: int, device: torch.device) -> tuple[SyncExpert, torch.optim.Optimizer, int]:
    expert = SyncExpert(size=size).to(device)
    opt = torch.optim.Adam(expert.parameters(), lr=args.lr)
    path = Path(args.out) / CHECKPOINT
    if path.is_file() and not args.resume:
        raise ValueError(f"{path} exists; pass --resume to continue it or choose another --out")
    if not (args.resume and path.is_file()):
        return expert, opt, 0
    ck = load_checkpoint(path, SYNC_FORMAT)
    if ck["config"]["size"] != size:
        raise ValueError(f"{path} was trained at {ck['config']['size']} px, not {size} (--config)")
    expert.load_state_dict(ck["expert"])
    opt.load_state_dict(ck["optimizer"])
    log.info("resuming the sync expert at step %d", ck["step"])
    return expert, opt, int(ck["step"])


def run_sync(args: argparse.Namespace, progress: Progress | None = None) -> dict:
    """Train (or resume) the expert to ``args.steps`` steps; returns the last validation figures."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    run = Path(args.out)
    size = preset(args.config).size
    clips = gdata.prepare_dataset(args.data_dir, size, args.cache or run / "data-cache", progress)
    train_r, val_r, how = gdata.split_by_speaker(clips)
    log.info("sync expert: split %s", how)
    device = pick_device(args.device)
    expert, opt, step = _start(args, size, device)
    rng = np.random.default_rng(args.seed + step)
    val = sample_pairs(clips, val_r, np.random.default_rng(12345), 64)
    jlog, t0, figures = JsonLog(run), time.perf_counter(), {}
    while step < args.steps:
        f5, mel, y = (torch.from_numpy(a).to(device) for a in sample_pairs(clips, train_r, rng, args.batch))
        p = expert(f5, mel).clamp(1e-6, 1 - 1e-6)
        loss = F.binary_cross_entropy(p, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 10 == 0 or step == args.steps:
            jlog.write(step=step, loss=loss.item())
        if step % args.val_every == 0 or step == args.steps:
            figures = {"step": step, **_validate(expert, val, device)}
            jlog.write(**figures)
            _save(run, expert, opt, step, args, how, figures)
            log.info("sync step %d: train loss %.3f, val loss %.3f, val acc %.2f (%.0f s)", step, loss.item(),
                     figures["val_loss"], figures["val_acc"], time.perf_counter() - t0)
    if not figures:
        figures = {"step": step, **_validate(expert, val, device)}
    return figures


def _save(run: Path, expert: SyncExpert, opt: torch.optim.Optimizer, step: int, args: argparse.Namespace,
          split: str, figures: dict) -> None:
    save_atomic({"format": SYNC_FORMAT, "version": SYNC_VERSION, "config": expert.config(),
                 "expert": expert.state_dict(), "optimizer": opt.state_dict(), "step": step,
                 "train_info": {"data_dir": str(args.data_dir), "split": split, "lookahead_s": gdata.LOOKAHEAD_S,
                                "batch": args.batch, "lr": args.lr, **figures}}, run / CHECKPOINT)
