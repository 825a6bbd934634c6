"""G4G's fine-grained alignment (paper §3.1): intra-modal (visual) and inter-modal (audio-visual).

Intra-modality: the masked source frame's and the reference frames' top features are fused by a
1-D convolution over their spatial tokens, then AdaIN moves the fused feature's per-channel
statistics onto those of the landmark prior's feature (the prior says where eyes, nose and face
oval sit in this frame), and a residual block follows.  Its output depends on the avatar pixels
only, so serving caches it per avatar frame.

Inter-modality: the aligned visual feature and the audio feature are projected to L2-normalised
embeddings; their (B, B) cosine score matrix divided by the temperature is trained with the
diagonal-target two-way loss (row-wise and column-wise cross-entropy towards the identity matrix):
matched pairs on the diagonal are pulled together, every off-diagonal pair is pushed apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from export.g4g.parts import SLOPE, ResBlock

EPS = 1e-5


def adain(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y), statistics per sample and channel
    over the spatial axes (ReduceMean only: exports and imports into TensorRT as plain ops)."""
    mu_x = content.mean((2, 3), keepdim=True)
    mu_y = style.mean((2, 3), keepdim=True)
    sd_x = ((content - mu_x) ** 2).mean((2, 3), keepdim=True).add(EPS).sqrt()
    sd_y = ((style - mu_y) ** 2).mean((2, 3), keepdim=True).add(EPS).sqrt()
    return sd_y * (content - mu_x) / sd_x + mu_y


class Conv1dFusion(nn.Module):
    """Fuse two (B, C, H, W) maps with a 1-D convolution over their H*W spatial tokens (channels of
    both stacked: 2C -> C, kernel 3 along the raster order), back to (B, C, H, W)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2 * ch, ch, 3, 1, 1)
        self.act = nn.LeakyReLU(SLOPE)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n, c, h, w = a.shape
        tokens = torch.cat([a, b], 1).reshape(n, 2 * c, h * w)
        return self.act(self.conv(tokens)).reshape(n, c, h, w)


class IntraAlign(nn.Module):
    """Source (S/8) + reference (S/8) -> fused -> AdaIN to the landmark feature -> residual block:
    the aligned visual map V (B, C, S/8, S/8) and its pooled projection v (B, D)."""

    def __init__(self, ch: int, dim: int) -> None:
        super().__init__()
        self.fuse = Conv1dFusion(ch)
        self.res = ResBlock(ch)
        self.proj = nn.Linear(ch, dim)

    def forward(self, src: torch.Tensor, ref: torch.Tensor, landmark: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        visual = self.res(adain(self.fuse(src, ref), landmark))
        return visual, self.proj(visual.mean((2, 3)))


class InterAlign(nn.Module):
    """Aligned visual (B, D) and audio (B, D) features -> L2-normalised embeddings (B, D) each."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.visual = nn.Sequential(nn.LeakyReLU(SLOPE), nn.Linear(dim, dim))
        self.audio = nn.Sequential(nn.LeakyReLU(SLOPE), nn.Linear(dim, dim))

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.visual(v), dim=1), F.normalize(self.audio(a), dim=1)


def contrastive_loss(visual_emb: torch.Tensor, audio_emb: torch.Tensor, temperature: float) -> torch.Tensor:
    """The two-way diagonal-matrix loss: scores = V A^T / t; cross-entropy of each row towards its
    diagonal entry (visual -> audio) and of each column (audio -> visual), averaged."""
    scores = visual_emb @ audio_emb.t() / temperature
    target = torch.arange(scores.shape[0], device=scores.device)
    return 0.5 * (F.cross_entropy(scores, target) + F.cross_entropy(scores.t(), target))
