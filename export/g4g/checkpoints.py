"""Run-directory plumbing shared by ``train`` and ``train-sync``: the device, atomic checkpoints,
JSON-lines logs, PNG sample grids.

A checkpoint is written to a temporary file in the run directory and renamed over
``checkpoint.pt``, so an interrupted save never leaves a truncated checkpoint behind; resuming
reads it with ``weights_only=True`` (plain tensors, numbers, strings and dicts only).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save to ``path`` via a temporary file and a rename (atomic on one file system)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, fmt: str) -> dict:
    """A checkpoint of format ``fmt`` (weights_only); ValueError naming the file otherwise."""
    ck = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != fmt:
        raise ValueError(f"{path} is not a {fmt} checkpoint")
    return ck


class JsonLog:
    """Appends one JSON object per line to ``RUN/log.jsonl`` (step, losses, wall time)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOG
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()

    def write(self, **record: object) -> None:
        record = {k: (float(v) if isinstance(v, (np.floating, torch.Tensor)) else v) for k, v in record.items()}
        record.setdefault("wall_s", round(time.perf_counter() - self.t0, 2))
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read_log(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / LOG
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def save_grid(rows: list[torch.Tensor], path: Path) -> None:
    """PNG of images (each row a (N, 3, S, S) tensor in [0, 1]) laid out row by row."""
    import cv2

    tiles = [torch.cat(list(r.detach().float().clamp(0, 1).cpu()), dim=2) for r in rows]  # (3, S, N*S)
    grid = torch.cat(tiles, dim=1).permute(1, 2, 0).numpy()
    cv2.imwrite(str(path), np.round(grid[..., ::-1] * 255).astype(np.uint8))
