"""The whole per-frame step as one module: mel window + cached avatar features -> mouth crop.

This is what gets exported to ONNX.  The avatar features live in tables with one row per
prepared avatar frame; each batch item names its row, so one call serves many sessions on
different avatars.  A per-item ``gate`` (voice activity, 0..1) scales the opening, which keeps
the mouth shut in non-speech noise the net was never trained on.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from export.audio_net import AudioToMouth
from export.renderer import MouthRenderer

PARAM_NAMES = ("open", "width", "closure")


def renderer_feature_keys(renderer: nn.Module) -> tuple[str, ...]:
    """The avatar feature names the renderer consumes, in its forward() order."""
    names = list(inspect.signature(renderer.forward).parameters)
    return tuple(n for n in names if n not in ("self", "params"))


class Generator(nn.Module):
    def __init__(self, audio_net: AudioToMouth, renderer: MouthRenderer) -> None:
        super().__init__()
        self.audio_net = audio_net
        self.renderer = renderer
        self.feature_keys = renderer_feature_keys(renderer)

    def forward(self, mel: torch.Tensor, rows: torch.Tensor, gate: torch.Tensor,
                *tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.audio_net(mel)  # (B, 3): open, width, closure
        g = gate.reshape(-1, 1)
        # Silence gates the opening and the press; width relaxes towards neutral with it.
        params = raw * g
        feats = {k: torch.index_select(t, 0, rows) for k, t in zip(self.feature_keys, tables)}
        crops = self.renderer(params, **feats)
        return crops, params


def load_generator(weights: Path | str) -> Generator:
    """The generator for an audio-net checkpoint, in eval mode: the ``manifest.torch`` builder the
    torch engine calls (the renderer has no weights; it is fixed geometry)."""
    from export.audio_net import load_default

    return Generator(load_default(path=Path(weights)), MouthRenderer()).eval()
