"""G4G training losses (paper §3.3) and the two LS-GAN discriminators.

- ``attribute_loss``: 1 - cosine between the facial-attribute embeddings (``G4G.encode_attributes``,
  through Es) of the output and of the ground truth.
- ``Perceptual``: two-scale perceptual loss (full and half resolution).  With ``--vgg19 FILE``
  (a torchvision VGG-19 state dict, ``torch.load(weights_only=True)``) it is the L1 between VGG-19
  features after relu1_2, relu2_2, relu3_4 and relu4_4 (ImageNet-normalised input).  No VGG weights
  can be downloaded here, so without a file the stated substitute is used: a two-scale SSIM loss
  (1 - SSIM, 7x7 Gaussian window, at full and half resolution), which needs no weights.
- ``lsgan_g`` / ``lsgan_d``: least-squares GAN on single frames (``FrameDiscriminator``) and on
  windows of 5 consecutive frames stacked on the channels (``WindowDiscriminator``).
- ``masked_l1``: L1 over the whole face plus an L1 weighted by each of the model's
  ``deform_masks`` (S/4, S/2, S) on the output downsampled to that mask's size, and the same at
  full size on the decoder's output before compositing.
- ``sync_loss``: the project's own sync expert (``export.g4g.syncnet``) on the lower half of five
  generated frames and the mel window of the middle frame: BCE of its in-sync probability against 1.
- ``G4G.contrastive_loss`` (the inter-modal alignment) comes from the model.

``WEIGHTS`` holds the weights used; see docs/g4g-training.md for where they come from.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

WEIGHTS = {"l1": 1.0, "perceptual": 0.1, "attribute": 0.1, "gan_frame": 0.01, "gan_window": 0.01,
           "sync": 0.03, "contrastive": 0.1}

# torchvision's vgg19 ``features`` (configuration "E"): 3x3 conv widths, "M" = 2x2 max-pool.
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M")
_VGG_TAPS = (3, 8, 17, 26)  # indices of relu1_2, relu2_2, relu3_4, relu4_4 in ``features``
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_features() -> nn.Sequential:
    """torchvision's ``vgg19().features`` layer for layer (same state-dict keys ``features.N.*``),
    built here so training needs no torchvision."""
    layers: list[nn.Module] = []
    cin = 3
    for v in _VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            cin = int(v)
    return nn.Sequential(*layers)


def load_vgg19(path: Path) -> nn.Sequential:
    """The first 27 layers (to relu4_4) of VGG-19 with weights from a torchvision state dict file."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state dict (torch.save(torchvision.models.vgg19().state_dict()))")
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    net = vgg19_features()
    missing, _ = net.load_state_dict(feats, strict=False)
    if missing:
        raise ValueError(f"{path} is not a torchvision VGG-19 state dict: missing {missing[:4]}...")
    return net[:_VGG_TAPS[-1] + 1].eval().requires_grad_(False)


def _gaussian_window(size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM of (B, C, H, W) images in [0, 1] (Gaussian 7x7 window, valid region), per sample (B,)."""
    w = (window if window is not None else _gaussian_window()).to(a)
    c = a.shape[1]
    wk = w.expand(c, 1, -1, -1)
    mu_a, mu_b = F.conv2d(a, wk, groups=c), F.conv2d(b, wk, groups=c)
    saa = F.conv2d(a * a, wk, groups=c) - mu_a ** 2
    sbb = F.conv2d(b * b, wk, groups=c) - mu_b ** 2
    sab = F.conv2d(a * b, wk, groups=c) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return s.flatten(1).mean(1)


class Perceptual(nn.Module):
    """Two-scale perceptual loss: VGG-19 features with a weights file, else two-scale SSIM (stated)."""

    def __init__(self, vgg19: Path | None = None) -> None:
        super().__init__()
        self.vgg = load_vgg19(vgg19) if vgg19 is not None else None
        self.kind = "vgg19" if self.vgg is not None else "ssim-2scale"
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("window", _gaussian_window(), persistent=False)
        log.info("perceptual loss: %s", "VGG-19 features (relu1_2..relu4_4) from " + str(vgg19) if self.vgg
                 else "no --vgg19 weights: two-scale SSIM substitute (1 - SSIM at full and half size)")

    def _vgg_l1(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([a, b]).sub(self.mean).div(self.std)
        total = a.new_zeros(())
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in _VGG_TAPS:
                fa, fb = x.chunk(2)
                total = total + F.l1_loss(fa, fb.detach())
        return total / len(_VGG_TAPS)

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = out.new_zeros(())
        for scale in (1.0, 0.5):
            a = out if scale == 1.0 else F.interpolate(out, scale_factor=scale, mode="bilinear", align_corners=False)
            b = target if scale == 1.0 else F.interpolate(target, scale_factor=scale, mode="bilinear",
                                                          align_corners=False)
            total = total + (self._vgg_l1(a, b) if self.vgg is not None else (1 - ssim(a, b, self.window)).mean())
        return total / 2


def attribute_loss(model: nn.Module, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cos(Es-attributes of the output, of the ground truth); the ground truth's side is fixed."""
    with torch.no_grad():
        ref = model.encode_attributes(target)
    return (1 - F.cosine_similarity(model.encode_attributes(out), ref, dim=1)).mean()


def masked_l1(face: torch.Tensor, decoded: torch.Tensor, target: torch.Tensor,
              masks: list[torch.Tensor]) -> torch.Tensor:
    """Whole-face L1 + the L1 under each multi-scale mask (normalised by the mask's area)."""
    total = F.l1_loss(face, target)
    for m in masks:
        size = m.shape[-2:]
        a = face if face.shape[-2:] == size else F.interpolate(face, size=size, mode="area")
        b = target if target.shape[-2:] == size else F.interpolate(target, size=size, mode="area")
        total = total + ((a - b).abs() * m).sum() / (m.expand_as(a).sum() + 1e-6)
    full = masks[-1]
    total = total + ((decoded - target).abs() * full).sum() / (full.expand_as(decoded).sum() + 1e-6)
    return total


def _disc_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))


class FrameDiscriminator(nn.Module):
    """PatchGAN on one face (B, 3, S, S) -> (B, 1, S/16, S/16) realness scores."""

    def __init__(self, width: int = 32, cin: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(_disc_block(cin, width), _disc_block(width, 2 * width),
                                 _disc_block(2 * width, 4 * width), _disc_block(4 * width, 4 * width),
                                 nn.Conv2d(4 * width, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class WindowDiscriminator(FrameDiscriminator):
    """PatchGAN on 5 consecutive faces (B, 5, 3, S, S), stacked to 15 channels: temporal coherence."""

    def __init__(self, width: int = 32, frames: int = 5) -> None:
        super().__init__(width, 3 * frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1, 2))


def lsgan_g(fake_scores: torch.Tensor) -> torch.Tensor:
    """Generator side of LS-GAN: (D(fake) - 1)^2."""
    return ((fake_scores - 1) ** 2).mean()


def lsgan_d(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Discriminator side of LS-GAN: (D(real) - 1)^2 + D(fake)^2, halved."""
    return 0.5 * (((real_scores - 1) ** 2).mean() + (fake_scores ** 2).mean())


def sync_loss(expert: nn.Module, faces5: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
    """BCE(expert's in-sync probability of 5 generated faces (B,5,3,S,S) and the middle frame's
    window (B,1,80,16), 1): pushes the output's mouth to move with the audio.  The expert is frozen."""
    prob = expert.sync_probability(faces5, mel).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(prob, torch.ones_like(prob))
