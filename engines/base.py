"""The one inference interface the scheduler and ``render`` use, whatever the backend.

A generator graph takes a batch of mel windows plus, for every batch item, a *row* into tables
of cached avatar features (one row per prepared avatar frame), and returns mouth crops and the
mouth parameters.  Avatar features are uploaded once (``add_avatar``); a call then only moves
the mel windows and row indices, so sessions on different avatars share one batched call.
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.manifest import DEFAULT_MODEL_DIR, ModelArtifactError, ModelManifest


@dataclass(frozen=True)
class EngineOutput:
    crops: np.ndarray  # (B, 3, S, S) float32 in [0, 1]
    params: np.ndarray  # (B, P) float32 mouth parameters, names in manifest.params


class Engine(abc.ABC):
    """Backend-independent part: the avatar feature tables and their row bookkeeping."""

    name: str = "base"

    def __init__(self, model_dir: Path | str = DEFAULT_MODEL_DIR) -> None:
        self.model_dir = Path(model_dir)
        self.manifest = ModelManifest.load(self.model_dir)
        self._tables: dict[str, np.ndarray] = {}
        self._avatar_rows: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def add_avatar(self, avatar_id: str, features: dict[str, np.ndarray]) -> np.ndarray:
        """Append an avatar's feature rows to the tables; returns its row indices (one per frame).

        Adding the same id again returns the rows it already has.
        """
        with self._lock:
            if avatar_id in self._avatar_rows:
                return self._avatar_rows[avatar_id]
            missing = [k for k in self.manifest.feature_keys if k not in features]
            if missing:
                raise ValueError(f"avatar {avatar_id!r} lacks features {missing}: prepare it again "
                                 f"with `lipstream prepare` for model {self.manifest.name}")
            crop = int(features["ref"].shape[-1]) if "ref" in features else self.manifest.crop_size
            if crop != self.manifest.crop_size:
                raise ModelArtifactError(
                    f"avatar {avatar_id!r} was prepared with a {crop}px mouth crop, model "
                    f"{self.manifest.name} renders {self.manifest.crop_size}px: prepare it again with "
                    f"`lipstream prepare SOURCE --name {avatar_id} --crop-size {self.manifest.crop_size}`")
            n = {int(features[k].shape[0]) for k in self.manifest.feature_keys}
            if len(n) != 1:
                raise ValueError(f"avatar {avatar_id!r} features disagree on frame count: {sorted(n)}")
            start = next(iter(self._tables.values())).shape[0] if self._tables else 0
            for k in self.manifest.feature_keys:
                arr = np.ascontiguousarray(features[k], dtype=np.float32)
                self._tables[k] = arr if k not in self._tables else np.concatenate([self._tables[k], arr])
            rows = np.arange(start, start + n.pop(), dtype=np.int64)
            self._avatar_rows[avatar_id] = rows
            self._tables_changed()
            return rows

    def avatar_rows(self, avatar_id: str) -> np.ndarray:
        return self._avatar_rows[avatar_id]

    @property
    def tables(self) -> dict[str, np.ndarray]:
        return self._tables

    def _tables_changed(self) -> None:
        """Hook: device backends re-upload the tables here."""

    @abc.abstractmethod
    def run(self, mel: np.ndarray, rows: np.ndarray, gate: np.ndarray) -> EngineOutput:
        """Run one batch.

        ``mel`` (B, 1, 80, 16) float32 windows, ``rows`` (B,) int64 rows of the feature tables,
        ``gate`` (B,) float32 voice activity in [0, 1] (0 closes the mouth).
        """

    def warmup_batches(self, max_batch: int) -> tuple[int, ...]:
        """Batch sizes to run once at start-up so no session pays for a first-call setup."""
        return (1, 2)

    def warmup(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        if not self._tables:
            return
        for b in batch_sizes:
            self.run(np.full((b, 1, *self.manifest.window), -4.0, np.float32), np.zeros(b, np.int64),
                     np.zeros(b, np.float32))
