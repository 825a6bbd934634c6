"""G4G's deformation (paper §3.2): a per-channel affine warp of the reference feature, and its masks.

For each of the C channels of the reference feature the aligned audio and visual features predict
a rotation theta, a scale s and a translation (tx, ty).  The warp is one 4-D bilinear
``grid_sample`` with the channels folded into the batch ((B, C, H, W) -> (B*C, 1, H, W)), the grid
built by a MatMul of a constant pixel-centre grid with the per-channel 2x3 matrices: ONNX opset 17
has only 4-D GridSample, and TensorRT imports it only in bilinear mode (DESIGN.md), so no
AffineGrid (opset 20) and no 5-D sampling.  The predictor's last layer starts at zero, so a new
network warps nothing (the identity transform) and learns to move features from there.

The multi-scale masks (S/4, S/2, S) mark the region the deformed reference may write (the lower
face that the source frame lacks); the decoder sees them and the masked L1 loss weights by them.
The face mask for compositing is the same region, Gaussian-smoothed at full resolution.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from export.g4g.parts import SLOPE

MAX_ROTATION = math.pi / 6  # rad: bounded by tanh, so an untrained net cannot flip features
MAX_LOG_SCALE = 0.5  # scale within [e^-0.5, e^0.5]
MAX_SHIFT = 0.5  # of the half side (grid units are [-1, 1])


class DeformParams(nn.Module):
    """cat(audio (B, D), visual (B, D)) -> raw per-channel parameters (B, C, 4), zero at init."""

    def __init__(self, dim: int, ch: int) -> None:
        super().__init__()
        self.ch = ch
        self.hidden = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.LeakyReLU(SLOPE),
                                    nn.Linear(2 * dim, 2 * dim), nn.LeakyReLU(SLOPE))
        self.out = nn.Linear(2 * dim, 4 * ch)
        self.reset_identity()

    def reset_identity(self) -> None:
        """Zero the last layer: every channel's transform is the identity until training moves it."""
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(torch.cat([audio, visual], 1))).view(-1, self.ch, 4)


def affine_matrices(raw: torch.Tensor) -> torch.Tensor:
    """Raw (B, C, 4) -> (B, C, 2, 3) matrices [[s cos t, -s sin t, tx], [s sin t, s cos t, ty]];
    raw 0 gives the identity."""
    theta = MAX_ROTATION * torch.tanh(raw[..., 0])
    scale = torch.exp(MAX_LOG_SCALE * torch.tanh(raw[..., 1]))
    tx, ty = MAX_SHIFT * torch.tanh(raw[..., 2]), MAX_SHIFT * torch.tanh(raw[..., 3])
    cos, sin = scale * torch.cos(theta), scale * torch.sin(theta)
    row0 = torch.stack([cos, -sin, tx], -1)
    row1 = torch.stack([sin, cos, ty], -1)
    return torch.stack([row0, row1], -2)


def base_grid(h: int, w: int) -> torch.Tensor:
    """(H*W, 3) homogeneous pixel-centre coordinates in grid_sample's [-1, 1] (align_corners=False)."""
    ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1), torch.ones(h * w)], 1)


class ChannelAffineWarp(nn.Module):
    """Warp each channel of (B, C, H, W) by its own 2x3 matrix: 4-D bilinear grid_sample over
    (B*C, 1, H, W).  Border padding: a feature moved off the edge repeats the edge, never zeros."""

    def __init__(self, h: int, w: int) -> None:
        super().__init__()
        self.h, self.w = h, w
        self.register_buffer("grid", base_grid(h, w), persistent=False)

    def forward(self, feat: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
        b, c, h, w = feat.shape
        grid = torch.matmul(self.grid, mats.reshape(b * c, 2, 3).transpose(1, 2))  # (B*C, H*W, 2)
        out = F.grid_sample(feat.reshape(b * c, 1, h, w), grid.reshape(b * c, h, w, 2), mode="bilinear",
                            padding_mode="border", align_corners=False)
        return out.reshape(b, c, h, w)


def region_mask(side: int, mask_from: float, ramp: float = 0.08) -> np.ndarray:
    """(side, side) float32: 0 above the masked rows, rising smoothly to 1 just above row
    ``mask_from * side``, so the whole zeroed part of the source is covered."""
    y = (np.arange(side) + 0.5) / side
    t = np.clip((y - (mask_from - 1.5 * ramp)) / ramp, 0.0, 1.0)
    rows = t * t * (3 - 2 * t)
    return np.repeat(rows[:, None], side, 1).astype(np.float32)


def gaussian_face_mask(side: int, mask_from: float, sigma_frac: float = 1 / 20) -> np.ndarray:
    """(side, side) float32 compositing mask: the lower face (from a little above the masked row)
    convolved with a Gaussian (sigma = side * sigma_frac), edges held, so the paste has no seam."""
    sigma = max(0.5, side * sigma_frac)
    start = int(round(mask_from * side - 2.5 * sigma))
    hard = np.zeros(side + 1, np.float64)
    hard[max(0, start):] = 1.0
    r = int(math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.concatenate([np.zeros(r), hard[:side], np.ones(r)])
    rows = np.convolve(padded, k, mode="valid")[:side]
    return np.repeat(rows[:, None], side, 1).astype(np.float32)


class Masks(nn.Module):
    """Constant masks: multi-scale (S/4, S/2, S) region masks and the Gaussian face mask (B, 1, *)."""

    def __init__(self, size: int, mask_from: float) -> None:
        super().__init__()
        for name, side in (("m4", size // 4), ("m2", size // 2), ("m1", size)):
            self.register_buffer(name, torch.from_numpy(region_mask(side, mask_from))[None, None], persistent=False)
        self.register_buffer("face", torch.from_numpy(gaussian_face_mask(size, mask_from))[None, None],
                             persistent=False)

    def forward(self, batch: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The masks expanded to ``batch`` samples: ([(B,1,S/4,S/4), (B,1,S/2,S/2), (B,1,S,S)], (B,1,S,S))."""
        return ([m.expand(batch, -1, -1, -1) for m in (self.m4, self.m2, self.m1)],
                self.face.expand(batch, -1, -1, -1))
