"""G4G building blocks: conv units, the three encoders (Es, Er, Ea), the decoder and the blend net.

Every part is a small ``nn.Module`` with one job so it can be unit-tested for shape and gradient
flow alone.  Only ops that export at ONNX opset 17 and that TensorRT imports natively are used
(Conv, ConvTranspose, LeakyRelu, Add, Mul, Concat, Sigmoid, ReduceMean, MatMul): no normalisation
layers (batch statistics would differ between a training batch and a served batch of one), the one
normalisation being AdaIN (``align.py``), which uses the feature's own statistics.
"""

from __future__ import annotations

import torch
from torch import nn

from export.g4g.config import G4GConfig

SLOPE = 0.2  # LeakyReLU slope everywhere: no dead units, so every weight keeps a gradient


def init_weights(module: nn.Module) -> None:
    """He-normal init for LeakyReLU (fan-in) on every conv/linear, zero biases; the last conv of a
    residual branch at half gain.  PyTorch's default init shrinks activations ~2x per layer, which
    leaves an untrained G4G almost blind to its audio input (and to training signal)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=SLOPE, mode="fan_in" if not isinstance(m, nn.ConvTranspose2d)
                                    else "fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, ResBlock):
            with torch.no_grad():
                m.body[2].weight.mul_(0.5)


def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv + LeakyReLU with 'same' padding (``stride`` 2 halves the side)."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2), nn.LeakyReLU(SLOPE))


class ResBlock(nn.Module):
    """Two 3x3 convs with an identity skip: depth without losing the input's detail."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(SLOPE), nn.Conv2d(ch, ch, 3, 1, 1))
        self.act = nn.LeakyReLU(SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class Up(nn.Module):
    """x2 upsampling by a learnt transposed conv (k4 s2 p1: no checkerboard from uneven overlap)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.LeakyReLU(SLOPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class ImageEncoder(nn.Module):
    """Three stride-2 levels: (B, cin, S, S) -> [(w0, S/2), (w1, S/4), (w2, S/8)] feature maps.

    Es (the masked source frame, and the landmark prior through the same weights) and Er (the
    stacked reference frames) are both this shape of network with their own widths.
    """

    def __init__(self, cin: int, widths: tuple[int, int, int]) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.stem = conv(cin, w0, 5)
        self.down0 = nn.Sequential(conv(w0, w0, 3, 2), ResBlock(w0))
        self.down1 = nn.Sequential(conv(w0, w1, 3, 2), ResBlock(w1))
        self.down2 = nn.Sequential(conv(w1, w2, 3, 2), ResBlock(w2))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f2 = self.down0(self.stem(x))
        f4 = self.down1(f2)
        f8 = self.down2(f4)
        return [f2, f4, f8]


def source_widths(cfg: G4GConfig) -> tuple[int, int, int]:
    """Es widths at S/2, S/4, S/8: C/4, C/2, C."""
    c = cfg.channels
    return max(8, c // 4), max(8, c // 2), c


def reference_widths(cfg: G4GConfig) -> tuple[int, int, int]:
    """Er widths at S/2, S/4, S/8: C/4, C (the deformed feature), C."""
    c = cfg.channels
    return max(8, c // 4), c, c


class AudioEncoder(nn.Module):
    """Ea: the (B, 1, 80, 16) mel window -> (B, D) audio feature (four stride-2 levels, then a
    conv over the whole remaining 5x1 map, so every mel band and frame reaches the output)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        w = (max(8, dim // 4), max(8, dim // 2), dim, dim)
        self.net = nn.Sequential(
            conv(1, w[0], 3, 1),
            conv(w[0], w[0], 3, 2), ResBlock(w[0]),   # 40 x 8
            conv(w[0], w[1], 3, 2), ResBlock(w[1]),   # 20 x 4
            conv(w[1], w[2], 3, 2), ResBlock(w[2]),   # 10 x 2
            conv(w[2], w[3], 3, 2),                   # 5 x 1
            nn.Conv2d(w[3], dim, (5, 1)),             # 1 x 1
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.net(mel * 0.25).flatten(1)  # Wav2Lip mel is in [-4, 4]: unit scale in


class Decoder(nn.Module):
    """Deformed reference + source features -> the face (B, 3, S, S) in [0, 1].

    At S/4 the deformed reference feature (gated by the S/4 mask: it may only write the mouth
    region), the source frame's S/4 feature and the landmark-aligned visual map (S/8, upsampled)
    are fused; two learnt x2 upsamplings follow, each seeing that scale's mask as an extra channel.
    """

    def __init__(self, cfg: G4GConfig) -> None:
        super().__init__()
        c = cfg.channels
        c_src = source_widths(cfg)[1]
        c2, c1 = max(8, c // 4), max(8, c // 8)
        self.vis_up = Up(c, c)
        self.fuse = nn.Sequential(conv(c + c_src + c + 1, c, 1), ResBlock(c))  # 1x1 mix, then 3x3 context
        self.up2 = Up(c, c2)
        self.refine2 = nn.Sequential(conv(c2 + 1, c2), ResBlock(c2))
        self.up1 = Up(c2, c1)
        self.refine1 = conv(c1 + 1, c1)
        self.head = nn.Conv2d(c1, 3, 3, 1, 1)

    def forward(self, deformed: torch.Tensor, src: torch.Tensor, visual: torch.Tensor,
                masks: list[torch.Tensor]) -> torch.Tensor:
        m4, m2, m1 = masks
        x = self.fuse(torch.cat([deformed * m4, src, self.vis_up(visual), m4], 1))
        x = self.refine2(torch.cat([self.up2(x), m2], 1))
        x = self.refine1(torch.cat([self.up1(x), m1], 1))
        return torch.sigmoid(self.head(x))


class BlendNet(nn.Module):
    """Fuses the composite with the decoded face and the masked source frame and amends the seam:
    a small encoder-decoder whose output IS the face (a sigmoid image, not composite + residual),
    so it can repaint colour and edges the hard paste leaves wrong."""

    def __init__(self, cfg: G4GConfig) -> None:
        super().__init__()
        w = max(8, cfg.channels // 8)
        self.inp = conv(3 + 3 + 3 + 1, w)
        self.down = nn.Sequential(conv(w, 2 * w, 3, 2), ResBlock(2 * w))
        self.up = Up(2 * w, w)
        self.out = nn.Sequential(conv(2 * w, w), nn.Conv2d(w, 3, 3, 1, 1))

    def forward(self, composite: torch.Tensor, decoded: torch.Tensor, source: torch.Tensor,
                face_mask: torch.Tensor) -> torch.Tensor:
        x = self.inp(torch.cat([composite, decoded, source, face_mask], 1))
        y = self.up(self.down(x))
        return torch.sigmoid(self.out(torch.cat([x, y], 1)))
