"""The mouth deformation renderer: mouth parameters + cached avatar features -> mouth crop.

Nothing is painted from scratch: the neutral (closed-mouth) reference crop is warped with the
avatar's precomputed displacement fields, and where the lips part a mouth interior is drawn: a dark
cavity with a soft vertical gradient, upper teeth under the upper lip, a tongue hint low.

The warp is composed in two steps so the opening stays consistent with a width change:

1. ``g1 = id + width * basis[1] + closure * basis[2]``  (smooth fields)
2. the opening field of the side of the lip line that ``g1`` lands on is resampled at ``g1``
   (``basis[0]`` below the line, ``upper_open`` above) and added: ``g2 = g1 + open_eff * field``,
   with ``open_eff = open * (1 - closure)``.

A pixel belongs to the parted gap when its source ``g2`` lies on the other side of the lip line
than ``g1`` -- so the interior's edges follow the warped lips exactly, anti-aliased over about one
pixel.  Only elementwise ops, ``cat`` and gathers (a bilinear, border-padded sampler written out,
:func:`_sample`): the module exports to ONNX opset 17 and to TensorRT.
"""

from __future__ import annotations

import torch
from torch import nn

from export.deform_fields import FEATURE_KEYS
from export.features_version import FEATURES_VERSION

__all__ = ["MouthRenderer", "FEATURES_VERSION", "FEATURE_KEYS"]

_AA = 0.04  # anti-aliasing ramp in half-mouth-widths (~1 px at crop 128)
_TEETH_EDGE = 0.07  # upper incisors' edge below the closed lip line (half widths)
_TEETH_CURVE = 0.12  # how much the teeth edge rises towards the corners
_TONGUE_TINT = (2.1, 1.75, 1.8)  # tongue colour as a multiple of the cavity colour (both from the lips)


def _sample(img: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample(img, grid, "bilinear", "border", align_corners=False)`` from four gathers.

    Same result (to float rounding, ``tests/test_renderer.py``), but ONNX Runtime's CPU GridSample
    kernel took 2.7 of the graph's 4.1 ms per frame (its profiler, one thread, 128 px crops),
    where GatherElements and elementwise ops take a fraction of that; TensorRT runs both.
    """
    b, c, h, w = img.shape
    ho, wo = grid.shape[1], grid.shape[2]
    n = ho * wo
    # Unnormalise (align_corners=False), then clamp: that is what border padding does.  All in
    # fp32, even in an fp16 graph: fp16 steps are 1/16 px at x = 100, and the sampled lip-line
    # coordinate decides a pixel's side of the gap (an fp16 sampler moved crops by up to 0.19).
    g = grid.to(torch.float32)
    x = torch.clamp(((g[..., 0] + 1.0) * w - 1.0) * 0.5, 0.0, w - 1.0).reshape(b, 1, n)
    y = torch.clamp(((g[..., 1] + 1.0) * h - 1.0) * 0.5, 0.0, h - 1.0).reshape(b, 1, n)
    x0, y0 = torch.floor(x), torch.floor(y)
    wx, wy = x - x0, y - y0
    x0i, y0i = x0.to(torch.int64), y0.to(torch.int64)
    x1i, y1i = torch.clamp(x0i + 1, max=w - 1), torch.clamp(y0i + 1, max=h - 1)
    flat = img.to(torch.float32).reshape(b, c, h * w)

    def at(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        return torch.gather(flat, 2, (yi * w + xi).expand(b, c, n))

    v00, v01, v10, v11 = at(y0i, x0i), at(y0i, x1i), at(y1i, x0i), at(y1i, x1i)
    top = v00 + wx * (v01 - v00)
    bottom = v10 + wx * (v11 - v10)
    return (top + wy * (bottom - top)).reshape(b, c, ho, wo).to(img.dtype)


def _ramp(x: torch.Tensor, width: float) -> torch.Tensor:
    """0 for x <= 0, 1 for x >= width, linear between: a cheap anti-aliased step."""
    return torch.clamp(x * (1.0 / width), 0.0, 1.0)


class MouthRenderer(nn.Module):
    """``forward(params, ref, basis, upper_open, mouth_uv, lip_v, colors) -> (B, 3, S, S)`` in [0, 1].

    ``params`` (B, 3) = (open [0, 1], width [-1, 1], closure [0, 1]); the other arguments are the
    avatar features of ``export.deform_fields`` (same names), each with a leading batch dim.
    """

    def forward(self, params: torch.Tensor, ref: torch.Tensor, basis: torch.Tensor,
                upper_open: torch.Tensor, mouth_uv: torch.Tensor, lip_v: torch.Tensor,
                colors: torch.Tensor) -> torch.Tensor:
        b, _, s, _ = ref.shape
        p = params.reshape(b, 3, 1, 1)
        open_ = torch.clamp(p[:, 0:1], 0.0, 1.0)
        width = torch.clamp(p[:, 1:2], -1.0, 1.0)
        # Rounding narrows a mouth further than spreading widens it: negative width counts 1.5x.
        width = width + 0.5 * torch.clamp(width, max=0.0)
        closure = torch.clamp(p[:, 2:3], 0.0, 1.0)
        open_eff = open_ * (1.0 - closure)

        # Pixel-centre coordinates; arange in int64 then cast (ONNX Range has no float16).
        lin = (torch.arange(s, device=ref.device).to(ref.dtype) * 2.0 + 1.0) / s - 1.0
        ident = torch.stack([lin.reshape(1, s).expand(s, s), lin.reshape(s, 1).expand(s, s)], 0)

        # Step 1: width and closure (smooth).  Step 2: the opening of the side g1 lands on.
        g1 = ident.unsqueeze(0) + width * basis[:, 1] + closure * basis[:, 2]  # (B, 2, S, S)
        mid = _sample(torch.cat([basis[:, 0], upper_open, lip_v], 1), g1.permute(0, 2, 3, 1))
        below = (mid[:, 4:5] >= 0.0).to(ref.dtype)  # 1 on the lower lip's side of the line
        field = below * mid[:, 0:2] + (1.0 - below) * mid[:, 2:4]
        g2 = g1 + open_eff * field
        warped = _sample(torch.cat([ref, lip_v], 1), g2.permute(0, 2, 3, 1))
        rgb, src_v = warped[:, 0:3], warped[:, 3:4]

        # Parted gap: the source lies across the lip line from where this pixel sits.
        side = 2.0 * below - 1.0
        gap = _ramp(-side * src_v, _AA)

        # Interior, in the skull's (unwarped) frame: teeth hang from the upper jaw.
        u, t = mouth_uv[:, 0:1], lip_v
        cavity = colors[:, 0].reshape(b, 3, 1, 1)
        teeth = colors[:, 1].reshape(b, 3, 1, 1)
        au = torch.abs(u)
        # Deep shadow under the teeth and towards the corners; the tongue catches some light low
        # in the middle, just inside the lower lip, once the jaw has dropped a little.
        inner = cavity * (0.75 + 0.35 * _ramp(t - 0.1, 0.4)) * (1.0 - 0.45 * _ramp(au - 0.45, 0.45))
        tongue = 0.8 * _ramp(src_v + 0.3, 0.15) * _ramp(-src_v - 0.05, 0.1) * below \
            * _ramp(0.6 - au, 0.35) * _ramp(open_eff - 0.15, 0.35)
        inner = inner + tongue * (cavity * cavity.new_tensor(_TONGUE_TINT).reshape(1, 3, 1, 1) - inner)
        edge = _TEETH_EDGE - _TEETH_CURVE * u * u
        tooth = _ramp(edge - t, 1.5 * _AA) * _ramp(0.85 - au, 0.3)
        shade = (0.6 + 0.4 * _ramp(open_eff, 0.6)) * (1.0 - 0.4 * u * u) * (0.8 + 0.2 * _ramp(edge - t, 0.12))
        inner = inner + tooth * (teeth * shade - inner)

        # Pressed lips: the seam between them darkens.
        seam = closure * _ramp(0.06 - torch.abs(t), 0.06) * _ramp(0.9 - au, 0.3)
        rgb = rgb * (1.0 - 0.35 * seam)

        out = rgb + gap * (inner - rgb)
        return torch.clamp(out, 0.0, 1.0)
