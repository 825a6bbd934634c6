"""A model artifact's manifest: what the server reads instead of guessing a model's convention.

An artifact is a directory holding ``manifest.json`` and the ONNX file(s) it names.  The
manifest records the audio convention and lookahead the model was trained with, the tensor
shapes, the mouth-parameter names and the avatar-feature keys the graph consumes, and a content
hash so an engine cache (TensorRT) can be keyed on it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engines.audio_convention import AudioConvention

MANIFEST_NAME = "manifest.json"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "models" / "default"


class ModelArtifactError(ValueError):
    """A model directory that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class ModelManifest:
    name: str
    version: str
    onnx: dict[str, str]  # precision ("fp32", "fp16") -> file name inside the artifact directory
    onnx_sha256: dict[str, str]  # precision -> sha256 of that file
    opset: int
    fps: float  # video frame rate the windows are laid out for
    lookahead_s: float  # window end relative to the frame time (engines.windows)
    window: tuple[int, int]  # (mel bands, mel frames) of one model input
    audio: dict[str, Any]  # engines.mel.MelConvention as a dict
    crop_size: int  # side of the square mouth crop the graph outputs
    params: tuple[str, ...]  # names of the mouth parameters (second output)
    feature_keys: tuple[str, ...]  # avatar feature tables the graph takes, in input order
    features_version: int  # avatar features layout the renderer expects
    inputs: dict[str, list[Any]] = field(default_factory=dict)  # name -> shape (str = dynamic)
    outputs: dict[str, list[Any]] = field(default_factory=dict)
    # The PyTorch form for the torch engine: {"builder": "module:function", "weights": file, "sha256"}
    torch: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # training info, scores, ...
    # "deform": the built-in audio net + warp renderer; "wav2lip" / "wav2lip-livetalking": an image
    # generator converted from a user's checkpoint, whose avatar features come from ``prepare``
    kind: str = "deform"
    # precision -> the graph that turns avatar pixels into the cached features (image generators)
    prepare: dict[str, str] = field(default_factory=dict)
    # the image generator's face convention: size, colour order, scaling, mask, box padding, ...
    face: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def save(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST_NAME
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, directory: Path | str) -> "ModelManifest":
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        if not path.is_file():
            raise ModelArtifactError(
                f"{directory} is not a lipstream model: {MANIFEST_NAME} is missing. "
                "Create one with `lipstream export --out DIR`, or omit --model to use the built-in model.")
        try:
            data = json.loads(path.read_text())
            data["window"] = tuple(data["window"])
            data["params"] = tuple(data["params"])
            data["feature_keys"] = tuple(data["feature_keys"])
            return cls(**data)
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ModelArtifactError(f"{path} is not a valid lipstream manifest ({exc}); re-export the model.") from exc

    @property
    def convention(self) -> AudioConvention:
        """The audio convention to feed this model (raises UnsupportedConvention if not servable)."""
        return AudioConvention.from_manifest(self)

    @property
    def is_image_generator(self) -> bool:
        """The avatar features are the model's own (its prepare graph), not the built-in renderer's."""
        return self.kind != "deform"

    def prepare_path(self, directory: Path | str, precision: str = "fp32") -> Path:
        if precision not in self.prepare:
            raise ModelArtifactError(f"model {self.name} has no {precision} prepare graph (has {sorted(self.prepare)})")
        return Path(directory) / self.prepare[precision]

    def onnx_path(self, directory: Path | str, precision: str = "fp32") -> Path:
        if precision not in self.onnx:
            raise ModelArtifactError(
                f"model {self.name} has no {precision} ONNX (has {sorted(self.onnx)}); "
                f"re-export with `lipstream export{' --fp16' if precision == 'fp16' else ''}`.")
        return Path(directory) / self.onnx[precision]


def sha256_file(path: Path | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
