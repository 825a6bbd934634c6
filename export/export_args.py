"""Arguments of ``lipstream export``, kept torch-free so ``lipstream --help`` never imports torch."""

from __future__ import annotations

import argparse
from pathlib import Path

from engines.manifest import DEFAULT_MODEL_DIR


# export.wav2lip_serving.SOURCES + export.g4g.serving.KIND, without importing torch
SOURCES = ("wav2lip", "wav2lip-livetalking", "g4g")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", type=Path,
                   help="with --from: your generator checkpoint (.pth), e.g. wav2lip.pth, wav2lip_gan.pth, "
                        "wav2lip256.pth, or a G4G run's RUN/checkpoint.pt (lipstream train)")
    p.add_argument("--from", dest="source", choices=SOURCES,
                   help="convert a checkpoint you own instead of exporting the built-in model: wav2lip = "
                        "Wav2Lip's 96x96 generator (wav2lip.pth, wav2lip_gan.pth), wav2lip-livetalking = "
                        "LiveTalking's 256x256 wav2lip256.pth, g4g = a G4G generator trained by `lipstream train` "
                        "(RUN/checkpoint.pt); then `lipstream serve --model OUT`")
    p.add_argument("--model", default="default", help="model to export (only the built-in 'default' exists)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"artifact directory (default: the built-in model's, {DEFAULT_MODEL_DIR.name}; required with --from)")
    p.add_argument("--fp16", action="store_true", help="also write an FP16 graph (for TensorRT FP16 engines)")
    p.add_argument("--weights", type=Path, help="audio net weights (.pt) instead of the committed ones")
