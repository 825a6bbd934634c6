"""Arguments of ``lipstream export``, kept torch-free so ``lipstream --help`` never imports torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from engines.manifest import DEFAULT_MODEL_DIR


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="model to export (only the built-in 'default' exists)")
    p.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR,
                   help="artifact directory (default: the built-in model's, engines/models/default)")
    p.add_argument("--fp16", action="store_true", help="also write an FP16 graph (for TensorRT FP16 engines)")
    p.add_argument("--weights", type=Path, help="audio net weights (.pt) instead of the committed ones")
