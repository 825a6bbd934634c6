"""G4G: the alignment-deformation talking-face generator (arXiv 2402.18122), trained here.

``config`` (torch-free) fixes the shapes; ``model`` holds the network (Es/Er/Ea encoders,
intra- and inter-modal alignment, per-channel affine deformation, decoder, face mask, blend net),
split into an audio-independent ``prepare`` (cached per avatar frame) and a per-frame ``step``;
``serving`` exports both to ONNX for ``lipstream export --from g4g``. See docs/g4g.md.

Importing this package does not import torch; ``G4G`` / ``G4GOutput`` load it on first use.
"""

from __future__ import annotations

from export.g4g.config import PRESETS, G4GConfig, preset

_LAZY = {"G4G", "G4GOutput"}


def __getattr__(name: str):
    if name in _LAZY:
        from export.g4g import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["G4GConfig", "PRESETS", "preset", *sorted(_LAZY)]
