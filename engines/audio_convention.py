"""A model's audio convention, read from its manifest: what the server and ``render`` feed it.

The manifest records the mel front end the model was trained with (``audio``), the video frame
rate its windows are laid out for (``fps``), the window shape (``window``) and where the window
sits relative to the frame time (``lookahead_s``).  The serving path never assumes any of these:
it builds one :class:`AudioConvention` from the manifest, and a convention it cannot compute
(another mel, another window length) is refused with a message that names the difference,
instead of being served with features the model never saw.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from engines.mel import MelConvention
from engines.windows import WINDOW

__all__ = ["AudioConvention", "UnsupportedConvention", "SERVED_MEL"]

SERVED_MEL = MelConvention()  # the one mel engines.mel computes


class UnsupportedConvention(ValueError):
    """A model's manifest asks for audio features this lipstream cannot produce."""


@dataclass(frozen=True)
class AudioConvention:
    mel: MelConvention
    fps: float  # video frames per second the windows are laid out for
    window: tuple[int, int]  # (mel bands, mel frames) of one model input
    lookahead_s: float  # window end relative to the frame's instant (engines.windows)

    @property
    def silence_value(self) -> float:
        """What a window holds where there is no audio (before the first sample, after a reset)."""
        return self.mel.silence_value

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    @property
    def samples_per_frame(self) -> int:
        return int(round(self.mel.sample_rate / self.fps))

    @classmethod
    def wav2lip(cls, lookahead_s: float, fps: float = 25.0) -> "AudioConvention":
        """The Wav2Lip mel with a 16-frame window at ``lookahead_s`` (tests, tools without a model)."""
        return cls(SERVED_MEL, float(fps), (SERVED_MEL.n_mels, WINDOW), float(lookahead_s))

    @classmethod
    def from_manifest(cls, manifest: Any) -> "AudioConvention":
        """The convention of ``manifest`` (an ``engines.manifest.ModelManifest``), checked servable."""
        audio = dict(manifest.audio or {})
        known = {f.name for f in fields(MelConvention)}
        unknown = sorted(set(audio) - known)
        if unknown:
            raise UnsupportedConvention(
                f"model {manifest.name}: its audio convention has fields this lipstream does not know "
                f"({', '.join(unknown)}); upgrade lipstream or re-export the model")
        conv = cls(MelConvention(**audio), float(manifest.fps), tuple(manifest.window), float(manifest.lookahead_s))
        conv.check_servable(manifest.name)
        return conv

    def check_servable(self, model: str = "this model") -> None:
        """Raise UnsupportedConvention unless the streaming front end computes exactly this."""
        diffs = [f"{f.name} {getattr(self.mel, f.name)!r} (served: {getattr(SERVED_MEL, f.name)!r})"
                 for f in fields(MelConvention) if getattr(self.mel, f.name) != getattr(SERVED_MEL, f.name)]
        if self.window != (SERVED_MEL.n_mels, WINDOW):
            diffs.append(f"window {self.window} (served: {(SERVED_MEL.n_mels, WINDOW)})")
        if not self.fps > 0:
            diffs.append(f"fps {self.fps}")
        if not -1.0 <= self.lookahead_s <= 1.0:
            diffs.append(f"lookahead_s {self.lookahead_s} (served: -1..1 s)")
        if diffs:
            raise UnsupportedConvention(
                f"model {model} needs audio features lipstream cannot compute: {'; '.join(diffs)}. "
                "Re-export it with the Wav2Lip mel convention (DESIGN.md, 'Audio conventions').")
