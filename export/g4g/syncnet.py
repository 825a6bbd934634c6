"""The project's own lip-sync expert for G4G (SyncNet-style), trained by ``lipstream train-sync``.

No pretrained SyncNet weights can be fetched here, so the expert is trained on the same talking
videos as the generator.  It embeds the lower half of five consecutive face crops (the mouth and
jaw, 15 channels) and the 16x80 mel window of the middle frame (centred, so it spans the five
frames) into unit vectors after a ReLU; their cosine, in [0, 1], is the in-sync probability.
Trained with BCE on in-sync pairs (label 1) and pairs whose audio is shifted by at least five
frames (label 0).  A frozen expert then scores the generator's output (``losses.sync_loss``) and
evaluation reports its mean score on held-out frames.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SYNC_FORMAT = "lipstream-g4g-sync"
SYNC_VERSION = 1
FRAMES = 5


def _block(cin: int, cout: int, stride: int | tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SyncExpert(nn.Module):
    """Mouth (B, 5, 3, S, S) + mel window (B, 1, 80, 16) -> in-sync probability (B,).

    ``size`` is the face crop side it was trained at (the lower half, S/2 x S, is what it reads);
    other sizes are resized to it.
    """

    def __init__(self, size: int = 64, width: int = 32, dim: int = 128) -> None:
        super().__init__()
        self.size, self.width, self.dim = int(size), int(width), int(dim)
        w = width
        self.face = nn.Sequential(_block(3 * FRAMES, w, 1), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2),
                                  _block(4 * w, 4 * w, 2), _block(4 * w, 8 * w, 2), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(8 * w, dim))
        self.audio = nn.Sequential(_block(1, w, 1), _block(w, 2 * w, (2, 1)), _block(2 * w, 4 * w, 2),
                                   _block(4 * w, 4 * w, 2), _block(4 * w, 8 * w, 2), nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten(), nn.Linear(8 * w, dim))

    def config(self) -> dict:
        return {"size": self.size, "width": self.width, "dim": self.dim}

    def mouth(self, faces5: torch.Tensor) -> torch.Tensor:
        """(B, 5, 3, S', S') faces -> (B, 15, S/2, S): the lower halves at the expert's size."""
        b, t, c, h, w = faces5.shape
        x = faces5.reshape(b * t, c, h, w)
        if h != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return x[:, :, self.size // 2:].reshape(b, t * c, self.size - self.size // 2, self.size)

    def embed(self, faces5: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit (B, dim) face and audio embeddings (ReLU first, so their cosine is in [0, 1])."""
        v = F.normalize(F.relu(self.face(self.mouth(faces5) * 2 - 1)), dim=1)
        a = F.normalize(F.relu(self.audio(mel / 4.0)), dim=1)
        return v, a

    def sync_probability(self, faces5: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        v, a = self.embed(faces5, mel)
        return (v * a).sum(1).clamp(0.0, 1.0)

    def forward(self, faces5: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        return self.sync_probability(faces5, mel)


def load_expert(path: Path, device: str | torch.device = "cpu") -> SyncExpert:
    """A frozen, eval-mode expert from ``RUN_SYNC/checkpoint.pt``; a clear error for another file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no sync expert checkpoint; train one with `lipstream train-sync DATA --out RUN`")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ck, dict) or ck.get("format") != SYNC_FORMAT:
        raise ValueError(f"{path} is not a lipstream G4G sync expert (made by `lipstream train-sync`)")
    if int(ck.get("version", 0)) > SYNC_VERSION:
        raise ValueError(f"{path} is a newer sync expert format ({ck['version']}); update lipstream")
    expert = SyncExpert(**ck["config"])
    expert.load_state_dict(ck["expert"])
    return expert.to(device).eval().requires_grad_(False)
