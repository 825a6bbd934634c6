"""Wav2Lip-family generators from the checkpoints people own: definitions, loading, ONNX export.

Two variants, told apart by their parameters (``variant="auto"``):

* ``wav2lip``: Rudrabha/Wav2Lip's generator (``wav2lip.pth``, ``wav2lip_gan.pth``), 96x96 face;
* ``wav2lip-livetalking``: LiveTalking's larger generator (``wav2lip256.pth``), 256x256 face,
  one more encoder/decoder level.

Each is split into ``prepare`` (face encoder: depends only on avatar pixels, cached per avatar
frame) and ``step`` (audio encoder + decoder over the cached skip features -> face crop).
``python -m export.wav2lip CKPT --out DIR [--fp16]`` writes ``prepare.onnx``, ``step.onnx`` and
``wav2lip.json``; see docs/wav2lip.md.

Importing this package does not import torch; the model classes load it on first use.
"""

from __future__ import annotations

from export.wav2lip.checkpoint import CheckpointError, detect_variant, load_generator
from export.wav2lip.convention import CONVENTION_NAME, LOOKAHEAD_S
from export.wav2lip.onnx_export import export_wav2lip
from export.wav2lip.spec import KIND_256, KIND_96, KINDS, Variant, variant

_LAZY = {"Wav2LipGenerator", "Wav2LipPrepare", "Wav2LipStep", "calibrated_random", "expected_state_shapes"}


def __getattr__(name: str):
    if name in _LAZY:
        from export.wav2lip import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CheckpointError", "detect_variant", "load_generator", "export_wav2lip", "CONVENTION_NAME",
           "LOOKAHEAD_S", "KIND_96", "KIND_256", "KINDS", "Variant", "variant", *sorted(_LAZY)]
