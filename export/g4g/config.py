"""G4G generator configuration: the few numbers that fix every tensor shape.

A checkpoint stores ``G4GConfig.to_dict()`` next to the weights, so a run directory alone says
which network it holds; ``from_dict`` rejects unknown or invalid fields instead of guessing.
Torch-free: the TRAIN side's argparse and the export's error messages read it without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class G4GConfig:
    """Shapes of one G4G generator (paper arXiv 2402.18122, §3).

    ``size`` is the square face crop side (divisible by 16: four stride-2 levels); ``channels`` is C
    of the reference feature that the per-channel affine deformation warps (paper: 256);
    ``n_refs`` reference frames are stacked into ``3 * n_refs`` input channels; ``audio_dim`` is the
    audio and aligned-embedding width; rows from ``int(size * mask_from)`` down are zeroed in the
    source frame; ``temperature`` scales the inter-modal contrastive scores.
    """

    size: int = 128
    channels: int = 256
    n_refs: int = 5
    audio_dim: int = 256
    mask_from: float = 0.5
    temperature: float = 0.07

    def __post_init__(self) -> None:
        if self.size < 32 or self.size % 16:
            raise ValueError(f"G4GConfig.size must be a multiple of 16 and >= 32, got {self.size}")
        if self.channels < 8 or self.channels % 8:
            raise ValueError(f"G4GConfig.channels must be a multiple of 8 and >= 8, got {self.channels}")
        if self.n_refs < 1:
            raise ValueError(f"G4GConfig.n_refs must be >= 1, got {self.n_refs}")
        if self.audio_dim < 8:
            raise ValueError(f"G4GConfig.audio_dim must be >= 8, got {self.audio_dim}")
        if not 0.0 < self.mask_from < 1.0:
            raise ValueError(f"G4GConfig.mask_from must be in (0, 1), got {self.mask_from}")
        if self.temperature <= 0.0:
            raise ValueError(f"G4GConfig.temperature must be > 0, got {self.temperature}")

    @property
    def mask_row(self) -> int:
        """First zeroed row of the masked source frame."""
        return int(self.size * self.mask_from)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (what a checkpoint and a manifest store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "G4GConfig":
        """Rebuild from ``to_dict`` output; unknown keys are an error (a foreign or newer file)."""
        if not isinstance(d, dict):
            raise ValueError(f"G4G config must be a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown G4G config keys {unknown}; expected a subset of {sorted(known)}")
        return cls(**d)


PRESETS: dict[str, G4GConfig] = {
    "tiny": G4GConfig(size=64, channels=32, audio_dim=64),  # trains in minutes on a CPU
    "base": G4GConfig(),
}


def preset(name: str) -> G4GConfig:
    """The named preset; a clear error listing the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown G4G preset {name!r}; choose one of {sorted(PRESETS)}") from None
