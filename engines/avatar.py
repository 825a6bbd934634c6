"""A prepared avatar on disk: its format, loading and atomic writing (torch-free, no face mesh).

``export.avatar`` prepares avatars (face mesh, crops, model features); the server and ``render``
only load them, through this module, so the serving path does not import the ahead-of-time
package.  A directory ``<avatars_dir>/<name>/`` holds:

==================  =====================================================================
``manifest.json``   name, version, source path + sha256, frame size, n_frames, fps, crop size,
                    renderer features version, creation time
``frames.npy``      (F, H, W, 3) uint8 RGB avatar frames (F = 1 for a still image)
``boxes.npy``       (F, 4) int32 square lower-face crop per frame, x0, y0, x1, y1 (exclusive)
``mask.npy``        (S, S) float32 feathered blend mask in crop coordinates
``features.npz``    model features, each with leading dim F
``mouth_boxes.npy`` (F, 4) int32 box around the mouth incl. room for a fully open jaw, frame coords
``landmarks.npy``   (478, 2) float32 face-mesh landmarks of frame 0 (eyes for the idle blinks)
==================  =====================================================================

It is written to a temporary sibling directory and renamed into place, so a crash never leaves a
half-written avatar behind.  Whether an avatar's features suit a model is the caller's check
(``features_version`` against the model manifest's).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Avatar", "AvatarError", "AVATAR_FORMAT_VERSION", "default_avatars_dir", "load_avatar", "write_avatar"]

AVATAR_FORMAT_VERSION = 1


class AvatarError(ValueError):
    """The source cannot become an avatar; the message says what is wrong and what to do."""


@dataclass
class Avatar:
    """A prepared avatar, arrays as stored (``frames`` memory-mapped)."""

    name: str
    path: Path
    manifest: dict
    frames: np.ndarray  # (F, H, W, 3) uint8
    boxes: np.ndarray  # (F, 4) int32
    mask: np.ndarray  # (S, S) float32
    features: dict[str, np.ndarray]  # FEATURE_KEYS -> (F, ...)
    mouth_boxes: np.ndarray  # (F, 4) int32
    landmarks: np.ndarray | None = None  # (478, 2) float32 face mesh of frame 0 (idle motion's eyes); older avatars: None

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def crop_size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def fps(self) -> float:
        return float(self.manifest["fps"])

    @property
    def features_version(self) -> int:
        return int(self.manifest["features_version"])


def default_avatars_dir() -> Path:
    """``$LIPSTREAM_HOME/avatars``, else ``~/.cache/lipstream/avatars``."""
    home = os.environ.get("LIPSTREAM_HOME")
    return Path(home) / "avatars" if home else Path.home() / ".cache" / "lipstream" / "avatars"


def write_avatar(dest: Path, arrays: dict[str, np.ndarray], features: dict[str, np.ndarray],
                  manifest: dict) -> None:
    """Write into a temporary sibling and rename into place (replacing an older copy)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for key, arr in arrays.items():
            np.save(tmp / f"{key}.npy", arr)
        np.savez(tmp / "features.npz", **features)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            os.replace(dest, old / dest.name)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_avatar(name_or_path: str | Path, avatars_dir: Path | None = None) -> Avatar:
    """Load a prepared avatar by name (from ``avatars_dir``) or by directory path."""
    path = Path(name_or_path)
    if not (path / "manifest.json").is_file():
        path = Path(avatars_dir or default_avatars_dir()) / str(name_or_path)
    if not (path / "manifest.json").is_file():
        raise AvatarError(f"no prepared avatar {str(name_or_path)!r} (looked in {path}); "
                          f"prepare it first: `lipstream prepare PORTRAIT_OR_VIDEO --name {name_or_path}`")
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest.get("version") != AVATAR_FORMAT_VERSION:
        raise AvatarError(f"avatar {manifest.get('name')!r} is in format version {manifest.get('version')}, "
                          f"this lipstream reads {AVATAR_FORMAT_VERSION}; prepare it again from its source")
    with np.load(path / "features.npz") as npz:
        features = {k: npz[k] for k in npz.files}
    return Avatar(
        name=manifest["name"], path=path, manifest=manifest,
        frames=np.load(path / "frames.npy", mmap_mode="r"),
        boxes=np.load(path / "boxes.npy"), mask=np.load(path / "mask.npy"),
        features=features, mouth_boxes=np.load(path / "mouth_boxes.npy"),
        landmarks=np.load(path / "landmarks.npy") if (path / "landmarks.npy").is_file() else None)
