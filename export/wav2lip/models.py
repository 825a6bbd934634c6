"""PyTorch definitions of the Wav2Lip-family generators, laid out so public checkpoints load unchanged.

The parameter names follow the public ``state_dict`` layout: ``face_encoder_blocks.<level>.<i>``,
``audio_encoder.<i>``, ``face_decoder_blocks.<level>.<i>``, ``output_block.{0,1}``; every
conv unit holds ``conv_block.0`` (the convolution) and ``conv_block.1`` (its BatchNorm).  The
layer tables themselves live in ``spec.py``.

Besides the full generator (``Wav2LipGenerator``) there are its two halves for streaming:

* ``Wav2LipPrepare``: face encoder only, ``face6 (B, 6, S, S) -> skip0 .. skipN-1``; depends only on
  avatar pixels, run once per avatar frame and cached.
* ``Wav2LipStep``: ``mel (B, 1, 80, 16), skip0 .. skipN-1 -> face (B, 3, S, S)`` in [0, 1], BGR;
  the audio encoder, the decoder and the output block.

``step(mel, *prepare(face6)) == generator(mel, face6)`` exactly (same ops in the same order).
"""

from __future__ import annotations

import torch
from torch import nn

from export.wav2lip.spec import KIND_96, Layer, TLayer, Variant, variant as get_variant


class ConvUnit(nn.Module):
    """Conv2d + BatchNorm2d + ReLU, optionally adding its input before the ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride, padding: int, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.residual = bool(residual)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_block(x)
        if self.residual:
            y = y + x
        return self.act(y)


class ConvTransposeUnit(nn.Module):
    """ConvTranspose2d + BatchNorm2d + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding),
                                        nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _units(layers: tuple[Layer, ...] | list[Layer]) -> list[nn.Module]:
    return [ConvUnit(*layer) for layer in layers]


def _decoder_level(lead: tuple[Layer, ...], up: TLayer | None, res: tuple[Layer, ...]) -> nn.Sequential:
    mods = _units(lead)
    if up is not None:
        mods.append(ConvTransposeUnit(*up))
    return nn.Sequential(*mods, *_units(res))


class Wav2LipGenerator(nn.Module):
    """The whole generator: ``forward(mel (B,1,80,16), face6 (B,6,S,S)) -> (B,3,S,S)`` in [0, 1].

    ``face6`` is ``[lower-half-masked face, reference face]`` (BGR each, scaled /255) along the
    channel axis; the output is the regenerated face crop, BGR.
    """

    def __init__(self, kind: str = KIND_96):
        super().__init__()
        self.spec: Variant = get_variant(kind)
        self.kind = self.spec.kind
        self.face_encoder_blocks = nn.ModuleList(nn.Sequential(*_units(level)) for level in self.spec.encoder)
        self.audio_encoder = nn.Sequential(*_units(self.spec.audio))
        self.face_decoder_blocks = nn.ModuleList(_decoder_level(*lvl) for lvl in self.spec.decoder)
        self.output_block = nn.Sequential(ConvUnit(self.spec.output_in, 32, 3, 1, 1),
                                          nn.Conv2d(32, 3, kernel_size=1, stride=1, padding=0),
                                          nn.Sigmoid())

    # The two halves, shared by the full forward and by the split modules.
    def encode_face(self, face6: torch.Tensor) -> list[torch.Tensor]:
        skips, x = [], face6
        for level in self.face_encoder_blocks:
            x = level(x)
            skips.append(x)
        return skips

    def decode(self, mel: torch.Tensor, skips: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
        if len(skips) != len(self.face_decoder_blocks):
            raise ValueError(f"{self.kind} decoder needs {len(self.face_decoder_blocks)} skip features, got {len(skips)}")
        x = self.audio_encoder(mel)
        for level, skip in zip(self.face_decoder_blocks, reversed(list(skips))):
            x = torch.cat((level(x), skip), dim=1)
        return self.output_block(x)

    def forward(self, mel: torch.Tensor, face6: torch.Tensor) -> torch.Tensor:
        return self.decode(mel, self.encode_face(face6))


class Wav2LipPrepare(nn.Module):
    """Face encoder alone: ``face6 -> (skip0, ..., skipN-1)``, shallowest (largest) first."""

    def __init__(self, gen: Wav2LipGenerator):
        super().__init__()
        self.gen = gen

    def forward(self, face6: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.gen.encode_face(face6))


class Wav2LipStep(nn.Module):
    """Audio encoder + decoder + output block: ``(mel, skip0, ..., skipN-1) -> face (B,3,S,S)``."""

    def __init__(self, gen: Wav2LipGenerator):
        super().__init__()
        self.gen = gen

    def forward(self, mel: torch.Tensor, *skips: torch.Tensor) -> torch.Tensor:
        return self.gen.decode(mel, skips)


def expected_state_shapes(kind: str) -> dict[str, tuple[int, ...]]:
    """Every ``state_dict`` key of ``kind`` with its shape (what a public checkpoint holds)."""
    with torch.device("meta"):
        gen = Wav2LipGenerator(kind)
    return {k: tuple(v.shape) for k, v in gen.state_dict().items()}


@torch.no_grad()
def calibrated_random(kind: str, seed: int = 0, batch: int = 4) -> Wav2LipGenerator:
    """A randomly initialised generator whose BatchNorm statistics fit its own activations.

    Plain random init with BatchNorm's default statistics (mean 0, var 1) blows activations up
    through the residual stacks and saturates the sigmoid, which would make every parity test
    trivially pass.  Here the running statistics are set from one random batch (cumulative
    average, as in training), floored at half the layer's mean variance (a small batch at the
    1x1 levels would otherwise leave near-zero variances), and the affine parameters are
    jittered, so outputs spread over (0, 1).  For tests and benchmarks: real use loads a checkpoint.
    """
    torch.manual_seed(seed)
    gen = Wav2LipGenerator(kind)
    for m in gen.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.3, 0.3)
    size = gen.spec.face_size
    mel = torch.rand(batch, 1, 80, 16) * 8 - 4
    face6 = torch.rand(batch, 6, size, size)
    face6[:, :3, size // 2:] = 0
    gen.train()
    gen(mel, face6)
    gen.eval()
    for m in gen.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
            m.running_var.clamp_(min=0.5 * float(m.running_var.mean()))
    return gen
