"""Arguments of ``lipstream train`` and ``lipstream train-sync``, torch-free (``--help`` never
imports torch).  docs/g4g-training.md explains the data layout, losses and figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from export.g4g.config import PRESETS

DEVICES = ("auto", "cpu", "cuda")


def _common(p: argparse.ArgumentParser, steps: int, batch: int, lr: float) -> None:
    p.add_argument("data_dir", type=Path,
                   help="folder of talking videos (any format PyAV reads, resampled to 25 fps); the speaker is "
                        "the first sub-folder, else the file name up to its first '_' or '-'")
    p.add_argument("--out", type=Path, required=True,
                   help="run directory: checkpoint.pt (rewritten atomically), log.jsonl, samples/*.png")
    p.add_argument("--config", default="base", choices=sorted(PRESETS),
                   help="model size: tiny = 64 px crops, trains in minutes on a CPU; base = 128 px, the "
                        "paper's 256 channels, for a GPU (default: base)")
    p.add_argument("--steps", type=int, default=steps,
                   help=f"train until this many optimiser steps in all (with --resume: the total, not more; "
                        f"default: {steps})")
    p.add_argument("--batch", type=int, default=batch,
                   help=f"windows of 5 consecutive frames per step (default: {batch})")
    p.add_argument("--lr", type=float, default=lr, help=f"Adam learning rate (default: {lr:g})")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt (weights, optimisers, step count); without it an "
                        "existing checkpoint in OUT is an error")
    p.add_argument("--cache", type=Path, default=None,
                   help="where the prepared clips (.npz) are cached and re-used (default: OUT/data-cache)")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="auto = CUDA when torch sees a GPU, else the CPU (default: auto)")
    p.add_argument("--val-every", type=int, default=100,
                   help="validate (held-out speakers), save the checkpoint and a PNG sample grid every N steps "
                        "(default: 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (default: 0 = torch's choice)")


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``lipstream train`` (the G4G generator)."""
    _common(p, steps=20000, batch=4, lr=2e-4)
    p.add_argument("--sync", type=Path, default=None,
                   help="sync expert checkpoint (RUN_SYNC/checkpoint.pt from `lipstream train-sync`) for the "
                        "sync loss and the sync score; without it the sync loss is off")
    p.add_argument("--vgg19", type=Path, default=None,
                   help="your torchvision VGG-19 state dict (.pth) for the perceptual loss; without it a "
                        "two-scale SSIM loss stands in (no weights can be downloaded)")
    p.add_argument("--gan-start", type=int, default=0,
                   help="step from which the two LS-GAN losses (frame, 5-frame window) are on (default: 0)")


def add_train_sync_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``lipstream train-sync`` (the lip-sync expert)."""
    _common(p, steps=4000, batch=16, lr=1e-4)
