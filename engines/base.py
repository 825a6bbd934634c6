"""The one inference interface the scheduler and ``render`` use, whatever the backend.

A generator graph takes a batch of mel windows plus, for every batch item, a *row* into tables
of cached avatar features (one row per prepared avatar frame), and returns mouth crops and the
mouth parameters.  Avatar features are uploaded once (``add_avatar``); a call then only moves
the mel windows and row indices, so sessions on different avatars share one batched call.

Avatars come and go on a long-running server (``remove_avatar``), so the tables do not only grow:
every avatar owns one contiguous block of rows, a freed block is reused by the next avatar that
fits in it (first fit), and freeing the block at the end of the tables shrinks them.  The rows of
an avatar never move while it stays: live sessions hold them.
"""

from __future__ import annotations

import abc
import bisect
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.manifest import DEFAULT_MODEL_DIR, ModelArtifactError, ModelManifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOutput:
    crops: np.ndarray  # (B, 3, S, S) float32 in [0, 1]
    params: np.ndarray  # (B, P) float32 mouth parameters, names in manifest.params


class Engine(abc.ABC):
    """Backend-independent part: the avatar feature tables and their row bookkeeping.

    Attributes every backend sets:

    ``name``
        the backend as logged and reported (``"onnxruntime"``, ``"torch-cuda"``, ``"tensorrt-fp16"``).
    ``precision``
        the arithmetic the graph runs in: ``"fp32"`` or ``"fp16"``.  Set in the backend's
        ``__init__`` (it depends on the device and the artifact), so read it from an instance.
    ``convention``
        the model's audio convention (``engines.audio_convention.AudioConvention``); among others
        the value a window holds where there is no audio (``convention.silence_value``).

    Threading: ``add_avatar`` and ``remove_avatar`` take the engine's lock and may be called from
    any thread.  ``run`` does not take it; it must never be given rows of an avatar that is being
    removed (or has been): the caller removes an avatar only once no session uses its rows.
    Rows of the avatars that stay keep their indices and their features.
    """

    name: str = "base"
    precision: str  # "fp32" | "fp16", set by each backend
    PRECISIONS: tuple[str, ...] = ("fp32", "fp16")

    def __init__(self, model_dir: Path | str = DEFAULT_MODEL_DIR) -> None:
        self.model_dir = Path(model_dir)
        self.manifest = ModelManifest.load(self.model_dir)
        self.convention = self.manifest.convention  # refuses a model whose audio we cannot compute
        # Replaced, never written in place: a ``run`` on another thread keeps reading the arrays
        # it started with while an avatar is added or removed.
        self._tables: dict[str, np.ndarray] = {}
        self._n_rows = 0  # rows allocated in the tables (live blocks and the free holes between them)
        self._free: list[tuple[int, int]] = []  # (start, length) holes, by start; none touches the end
        self._avatar_rows: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _check_precision(precision: str) -> str:
        if precision not in Engine.PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(Engine.PRECISIONS)}, not {precision!r}")
        return precision

    # -- avatar tables ------------------------------------------------------------------------

    def add_avatar(self, avatar_id: str, features: dict[str, np.ndarray]) -> np.ndarray:
        """Put an avatar's feature rows into the tables; returns its row indices (one per frame).

        The rows are one contiguous block: the first freed block large enough (first fit), else
        new rows at the end of the tables.  Adding the same id again returns the rows it has.
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
            counts = {int(features[k].shape[0]) for k in self.manifest.feature_keys}
            if len(counts) != 1:
                raise ValueError(f"avatar {avatar_id!r} features disagree on frame count: {sorted(counts)}")
            n = counts.pop()
            if n < 1:
                raise ValueError(f"avatar {avatar_id!r} has no frames")
            feats = {k: np.ascontiguousarray(features[k], dtype=np.float32) for k in self.manifest.feature_keys}
            for k, arr in feats.items():
                if self._tables and arr.shape[1:] != self._tables[k].shape[1:]:
                    raise ValueError(f"avatar {avatar_id!r} feature {k!r} has frames of shape {arr.shape[1:]}, "
                                     f"the engine's table holds {self._tables[k].shape[1:]}: prepare it again "
                                     f"with `lipstream prepare` for model {self.manifest.name}")

            saved = self._save()
            i = next((j for j, (_, length) in enumerate(self._free) if length >= n), None)
            if i is None:  # append
                start = self._n_rows
                self._tables = {k: (np.concatenate([self._tables[k], arr]) if self._tables else arr.copy())
                                for k, arr in feats.items()}
                self._n_rows += n
            else:  # reuse a hole: copy the tables, write the block (running calls keep the old ones)
                start, length = self._free[i]
                if length == n:
                    del self._free[i]
                else:
                    self._free[i] = (start + n, length - n)
                tables = {}
                for k, arr in feats.items():
                    t = self._tables[k].copy()
                    t[start:start + n] = arr
                    tables[k] = t
                self._tables = tables
            rows = np.arange(start, start + n, dtype=np.int64)
            self._avatar_rows[avatar_id] = rows
            self._commit(saved)
            return rows

    def remove_avatar(self, avatar_id: str) -> None:
        """Free an avatar's rows for the next avatar; the tables shrink when its block was the last.

        Only once no session uses its rows: a ``run`` with them afterwards reads another avatar's
        features, or rows past the end.  The other avatars' rows do not change.
        """
        with self._lock:
            rows = self._avatar_rows.get(avatar_id)
            if rows is None:
                known = ", ".join(repr(a) for a in sorted(self._avatar_rows)) or "none"
                raise KeyError(f"no avatar {avatar_id!r} in this engine to remove (avatars: {known})")
            saved = self._save()
            del self._avatar_rows[avatar_id]
            start, length = int(rows[0]), int(rows.shape[0])
            # insert the hole, merged with the holes right before and after it
            i = bisect.bisect_left(self._free, (start, length))
            if i < len(self._free) and self._free[i][0] == start + length:
                length += self._free.pop(i)[1]
            if i > 0 and sum(self._free[i - 1]) == start:
                start, prev = self._free.pop(i - 1)
                length += prev
                i -= 1
            if start + length == self._n_rows:  # the last block: truncate (copies, to give the memory back)
                self._n_rows = start
                self._tables = ({k: v[:start].copy() for k, v in self._tables.items()} if start else {})
            else:
                self._free.insert(i, (start, length))
            self._commit(saved)

    def avatar_rows(self, avatar_id: str) -> np.ndarray:
        try:
            return self._avatar_rows[avatar_id]
        except KeyError:
            raise KeyError(f"no avatar {avatar_id!r} in this engine (add it with add_avatar)") from None

    @property
    def avatars(self) -> tuple[str, ...]:
        """Ids of the avatars in the tables."""
        return tuple(self._avatar_rows)

    @property
    def table_rows(self) -> int:
        """Rows allocated in the feature tables: the live avatars' rows plus the freed holes between them."""
        return self._n_rows

    @property
    def tables(self) -> dict[str, np.ndarray]:
        """The feature tables (``table_rows`` rows each; empty while no avatar is added)."""
        return self._tables

    def _save(self) -> tuple:
        return self._tables, self._n_rows, list(self._free), dict(self._avatar_rows)

    def _commit(self, saved: tuple) -> None:
        """Tell the backend; if it refuses the new tables (too many rows), go back to ``saved``."""
        try:
            self._tables_changed()
        except Exception:
            self._tables, self._n_rows, self._free, self._avatar_rows = saved
            try:
                self._tables_changed()  # the old tables: it took them before
            except Exception:  # noqa: BLE001 - the first error is the one to report
                log.exception("%s: could not restore the previous avatar tables", self.name)
            raise

    def _tables_changed(self) -> None:
        """Hook: device backends re-upload ``self.tables`` here (which may be empty, ``{}``)."""

    # -- inference ----------------------------------------------------------------------------

    def run_skipping_silence(self, mel: np.ndarray, rows: np.ndarray, gate: np.ndarray) -> EngineOutput:
        """``run``, but the silent items (gate 0) of the built-in model skip the graph.

        The built-in generator (``kind == "deform"``) multiplies its mouth parameters by the gate,
        and its renderer at zero parameters returns the avatar frame's reference crop, exactly
        (``tests/test_engines.py``).  So a silent item's output is known: parameters 0, the ``ref``
        row.  In a conversation the avatar listens about half the time, and the graph is about a
        quarter of a session's CPU per frame.  Image generators (Wav2Lip, G4G) draw a face even in
        silence: their batches always run whole.
        """
        silent = gate <= 0.0
        tables = self._tables
        if self.manifest.kind != "deform" or "ref" not in tables or not silent.any():
            return self.run(mel, rows, gate)
        b = len(rows)
        crops = np.empty((b, *tables["ref"].shape[1:]), np.float32)
        params = np.zeros((b, len(self.manifest.params)), np.float32)
        crops[silent] = tables["ref"][rows[silent]]
        voiced = ~silent
        if voiced.any():
            out = self.run(mel[voiced], rows[voiced], gate[voiced])
            crops[voiced], params[voiced] = out.crops, out.params
        return EngineOutput(crops, params)

    @abc.abstractmethod
    def run(self, mel: np.ndarray, rows: np.ndarray, gate: np.ndarray) -> EngineOutput:
        """Run one batch.

        ``mel`` (B, 1, 80, 16) float32 windows, ``rows`` (B,) int64 rows of the feature tables
        (rows of avatars that are added and not being removed), ``gate`` (B,) float32 voice
        activity in [0, 1] (0 closes the mouth).
        """

    def warmup_batches(self, max_batch: int) -> tuple[int, ...]:
        """Batch sizes to run once at start-up so no session pays for a first-call setup."""
        return (1, 2)

    def warmup(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        if not self._tables:
            return
        for b in batch_sizes:
            self.run(np.full((b, 1, *self.manifest.window), self.convention.silence_value, np.float32),
                     np.zeros(b, np.int64), np.zeros(b, np.float32))
