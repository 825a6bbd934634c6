"""The audio-to-mouth-shape net: one 16x80 mel window -> (open, width, closure).

A small strided CNN (~200k parameters, under 1 ms per window on one CPU core) whose
forward is plain Conv2d/ReLU/Linear plus a max and a subtraction, so it exports to ONNX opset 17
and fuses into the full generator graph.

Level robustness: the mel is in dB, so a microphone's gain is an additive shift of the whole
window.  The net sees two channels: the window as is (absolute level still tells a pause from
speech) and the window minus its own maximum (the spectral shape, invariant to gain).  Training
adds random level changes on top (``export.augment``).

Output contract (DESIGN/renderer): ``open`` = sigmoid in [0, 1], ``width`` = tanh in [-1, 1],
``closure`` = sigmoid in [0, 1]; effective opening = open * (1 - closure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

LOOKAHEAD_S = 0.04  # where the window ends relative to the frame time (engines.windows)
VERSION = "audio2mouth-v3"
WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "audio_to_mouth.pt"
OUTPUTS = ("open", "width", "closure")
V2_CHANNELS, V2_HIDDEN = (16, 32, 48, 64), 64  # the sizes of v1/v2, whose checkpoints carry no "arch"


class AudioToMouth(nn.Module):
    """(B, 1, 80, 16) normalised mel window -> (B, 3) [open, width, closure]."""

    def __init__(self, channels: tuple[int, ...] = (24, 48, 72, 96), hidden: int = 96) -> None:
        super().__init__()
        self.arch = {"channels": [int(c) for c in channels], "hidden": int(hidden)}
        c1, c2, c3, c4 = channels
        self.features = nn.Sequential(
            nn.Conv2d(2, c1, kernel_size=(5, 3), stride=(2, 1), padding=(2, 1)), nn.ReLU(),  # 40x16
            nn.Conv2d(c1, c2, kernel_size=3, stride=2, padding=1), nn.ReLU(),  # 20x8
            nn.Conv2d(c2, c3, kernel_size=3, stride=2, padding=1), nn.ReLU(),  # 10x4
            nn.Conv2d(c3, c4, kernel_size=3, stride=2, padding=1), nn.ReLU(),  # 5x2
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c4 * 5 * 2, hidden), nn.ReLU(),
                                  nn.Linear(hidden, 3))

    def logits(self, mel: torch.Tensor) -> torch.Tensor:
        """Pre-activation outputs (B, 3); training uses them for a numerically stable BCE."""
        peak = torch.amax(mel, dim=(2, 3), keepdim=True)
        x = torch.cat([(mel + 4.0) * 0.25, (mel - peak) * 0.25], dim=1)
        return self.head(self.features(x))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        z = self.logits(mel)
        return torch.cat([torch.sigmoid(z[:, 0:1]), torch.tanh(z[:, 1:2]), torch.sigmoid(z[:, 2:3])], dim=1)


def save(model: AudioToMouth, path: Path = WEIGHTS_PATH, train_info: dict[str, Any] | None = None,
         lookahead_s: float = LOOKAHEAD_S) -> Path:
    """Write the weights with the metadata the server needs (lookahead, version, output order).

    ``arch`` records the layer sizes so a wider variant loads without guessing them from shapes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "lookahead_s": float(lookahead_s), "version": VERSION, "outputs": list(OUTPUTS),
                "input_shape": [1, 80, 16], "arch": model.arch, "train_info": train_info or {}}, path)
    return path


def load_checkpoint(path: Path = WEIGHTS_PATH, map_location: str = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict (state_dict + metadata)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_default(map_location: str = "cpu", path: Path = WEIGHTS_PATH) -> AudioToMouth:
    """The committed model, in eval mode."""
    ck = load_checkpoint(path, map_location)
    arch = ck.get("arch") or {}  # checkpoints before v3 carry no arch: v1/v2's sizes
    model = AudioToMouth(tuple(arch.get("channels", V2_CHANNELS)), arch.get("hidden", V2_HIDDEN))
    model.load_state_dict(ck["state_dict"])
    return model.eval()
