"""G4G building blocks: conv units, the three encoders (Es, Er, Ea), the decoder and the blend net.

Every part is a small ``nn.Module`` with one job so it can be unit-tested for shape and gradient
flow alone.  Only ops that export at ONNX opset 17 and that TensorRT imports natively are used
(Conv, ConvTranspose, LeakyRelu, Add, Mul, Concat, Clip, ReduceMean, MatMul): no normalisation
layers (batch statistics would differ between a training batch and a served batch of one), the one
normalisation being AdaIN (``align.py``), which uses the feature's own statistics.

Copy first, amend later: the decoder's and the blend net's output convolutions see an image among
their inputs (the reference skip's RGB, the composite) and start as the identity on it (a Dirac
kernel, zero weights from every other channel, output clipped to [0, 1]), so an untrained G4G
already returns the masked source's upper face and the first reference's mouth exactly, and
training only has to learn what to change.  ``reset_copy`` sets this start; ``G4G`` calls it after
``init_weights``.  The zero weights receive gradient at once, and after one optimiser step every
parameter upstream of them does too.
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


def dirac_from(conv2d: nn.Conv2d, first: int) -> None:
    """Make ``conv2d`` (3 outputs, odd kernel) copy input channels ``first..first+2`` to its outputs:
    a centre tap of 1 on those, every other weight and the bias 0."""
    with torch.no_grad():
        conv2d.weight.zero_()
        k = conv2d.kernel_size[0] // 2
        for i in range(conv2d.out_channels):
            conv2d.weight[i, first + i, k, k] = 1.0
        if conv2d.bias is not None:
            conv2d.bias.zero_()


def unit(x: torch.Tensor) -> torch.Tensor:
    """An image output: the identity on [0, 1], clipped outside (ONNX Clip)."""
    return torch.clamp(x, 0.0, 1.0)


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

    def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All four levels: [(w0, S), (w0, S/2), (w1, S/4), (w2, S/8)] (the full-resolution stem too)."""
        f1 = self.stem(x)
        f2 = self.down0(f1)
        f4 = self.down1(f2)
        return [f1, f2, f4, self.down2(f4)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.levels(x)[1:]


def source_widths(cfg: G4GConfig) -> tuple[int, int, int]:
    """Es widths at S/2, S/4, S/8: C/4, C/2, C."""
    c = cfg.channels
    return max(8, c // 4), max(8, c // 2), c


def reference_widths(cfg: G4GConfig) -> tuple[int, int, int]:
    """Er widths at S/2, S/4, S/8: C/4, C (the deformed feature), C."""
    c = cfg.channels
    return max(8, c // 4), c, c


def skip_widths(cfg: G4GConfig) -> tuple[int, int]:
    """Channels of the reference skips at S/2 and S (cached per avatar frame): max(8, C/8) and 8.
    Both are <= C, so skip channel k is warped with the deformation's channel-k parameters."""
    return max(8, cfg.channels // 8), 8


class ReferenceSkips(nn.Module):
    """Er's higher-resolution levels -> the decoder's U-Net skips, by a 1x1 head per scale:
    S/2: Er's S/2 feature -> ``skip_widths[0]`` channels; S: Er's full-resolution stem feature and
    the first reference frame's RGB -> ``skip_widths[1]`` channels, the first three of which start
    as that RGB exactly (``reset_copy``), so the reference's texture can reach the face unchanged."""

    def __init__(self, cfg: G4GConfig) -> None:
        super().__init__()
        w0 = reference_widths(cfg)[0]
        k2, k1 = skip_widths(cfg)
        self.head2 = nn.Conv2d(w0, k2, 1)
        self.head1 = nn.Conv2d(w0 + 3, k1, 1)
        self.reset_copy()

    def reset_copy(self) -> None:
        """Skip channels 0-2 at S = the first reference's RGB (weights from the stem feature 0)."""
        w0 = self.head1.in_channels - 3
        with torch.no_grad():
            self.head1.weight[:3].zero_()
            self.head1.bias[:3].zero_()
            for i in range(3):
                self.head1.weight[i, w0 + i, 0, 0] = 1.0

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, first_ref: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head2(f2), self.head1(torch.cat([f1, first_ref], 1))


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
    are fused; two learnt x2 upsamplings follow, each seeing that scale's mask and that scale's
    deformed reference skip (U-Net style, ``ReferenceSkips``) as extra channels.  The output conv
    also sees the S skip's RGB channels and starts as the identity on them (``reset_copy``): an
    untrained decoder returns the (deformed) first reference, and learns to amend it.
    """

    def __init__(self, cfg: G4GConfig) -> None:
        super().__init__()
        c = cfg.channels
        c_src = source_widths(cfg)[1]
        c2, c1 = max(8, c // 4), max(8, c // 8)
        k2, k1 = skip_widths(cfg)
        self.vis_up = Up(c, c)
        self.fuse = nn.Sequential(conv(c + c_src + c + 1, c, 1), ResBlock(c))  # 1x1 mix, then 3x3 context
        self.up2 = Up(c, c2)
        self.refine2 = nn.Sequential(conv(c2 + 1 + k2, c2), ResBlock(c2))
        self.up1 = Up(c2, c1)
        self.refine1 = conv(c1 + 1 + k1, c1)
        self.head = nn.Conv2d(c1 + 3, 3, 3, 1, 1)
        self.reset_copy()

    def reset_copy(self) -> None:
        """Output = the S skip's RGB channels (identity), zero weights from the decoded features."""
        dirac_from(self.head, self.head.in_channels - 3)

    def forward(self, deformed: torch.Tensor, src: torch.Tensor, visual: torch.Tensor,
                masks: list[torch.Tensor], skip2: torch.Tensor, skip1: torch.Tensor) -> torch.Tensor:
        m4, m2, m1 = masks
        x = self.fuse(torch.cat([deformed * m4, src, self.vis_up(visual), m4], 1))
        x = self.refine2(torch.cat([self.up2(x), m2, skip2], 1))
        x = self.refine1(torch.cat([self.up1(x), m1, skip1], 1))
        return unit(self.head(torch.cat([x, skip1[:, :3]], 1)))


class BlendNet(nn.Module):
    """Fuses the composite with the decoded face and the masked source frame and amends the seam:
    a small encoder-decoder whose output IS the face (not composite + residual): its last conv sees
    the encoder-decoder's features and the composite, and its output, clipped to [0, 1], is the
    image.  It starts as the identity on the composite (``reset_copy``: Dirac kernel on the
    composite channels, zero weights from the features), so at step 0 the face is the composite
    and the upper half passes through sharp; training moves every weight from there, and can
    repaint colour and edges the paste leaves wrong anywhere in the frame."""

    def __init__(self, cfg: G4GConfig) -> None:
        super().__init__()
        w = max(8, cfg.channels // 8)
        self.inp = conv(3 + 3 + 3 + 1, w)
        self.down = nn.Sequential(conv(w, 2 * w, 3, 2), ResBlock(2 * w))
        self.up = Up(2 * w, w)
        self.mid = conv(2 * w, w)
        self.out = nn.Conv2d(w + 3, 3, 3, 1, 1)
        self.reset_copy()

    def reset_copy(self) -> None:
        """Output = the composite (identity), zero weights from the blend features."""
        dirac_from(self.out, self.out.in_channels - 3)

    def forward(self, composite: torch.Tensor, decoded: torch.Tensor, source: torch.Tensor,
                face_mask: torch.Tensor) -> torch.Tensor:
        x = self.inp(torch.cat([composite, decoded, source, face_mask], 1))
        y = self.up(self.down(x))
        return unit(self.out(torch.cat([self.mid(torch.cat([x, y], 1)), composite], 1)))
