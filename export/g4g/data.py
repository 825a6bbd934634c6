"""G4G training data: a folder of talking videos -> cached face crops, landmark priors and mel windows.

Layout of ``DATA_DIR`` (any container PyAV decodes: .mp4 .mov .mkv .webm .avi .mpg ...):

- ``DATA_DIR/<speaker>/<clip>.mp4``: the first sub-folder names the speaker; or
- ``DATA_DIR/<speaker>_<anything>.mp4``: flat, the file stem up to the first ``_`` or ``-``;
  a stem without either is its own speaker (the GRID samples: four files, four speakers).

Per clip (prepared once, cached as ``CACHE/<speaker>__<stem>-<hash>.npz``, re-used while the
video's size, mtime and the preparation settings stay the same): frames resampled to 25 fps
(nearest source frame), face-mesh landmarks (mediapipe), the square face crop at the model's
size (``export.g4g.faces``), the crop landmarks and the landmark prior, the whole clip's mel
(``engines.mel``) and one 16-frame window per video frame (``engines.windows``) at
``LOOKAHEAD_S``: the window is centred on the frame, so the window of the middle frame of five
consecutive frames is also the sync expert's window for those five.  The sync expert's mouth
crop is the lower half of the face crop (rows ``S/2`` down), so the same expert scores the
generator's output.

Split by speaker (``split_by_speaker``): the last ``val_fraction`` of the sorted speakers (at
least one) is validation.  With a single speaker the last ``SINGLE_SPEAKER_VAL`` of every clip's
frames is validation instead (a time split; a ``WINDOW``-frame gap keeps windows apart).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.mel import melspectrogram
from engines.windows import frame_windows
from export.g4g import faces

log = logging.getLogger(__name__)

DATA_VERSION = 1  # bump when what a cache file holds changes
FPS = 25.0
LOOKAHEAD_S = 0.1  # the mel window is centred on its frame (100 ms of future audio)
WINDOW = 5  # consecutive frames per training item (the 5-frame GAN window and the sync expert)
SINGLE_SPEAKER_VAL = 0.2
MIN_FACE_SHARE = 0.5  # a clip needs a face in at least this share of its frames
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".m4v", ".flv", ".ts"}

Progress = Callable[[int, int], None]


class DataError(ValueError):
    """A video that cannot be used for training; the message names the file and the fix."""


@dataclass
class ClipData:
    """One prepared clip: everything the dataset reads, frame-aligned (F frames at 25 fps)."""

    name: str
    speaker: str
    faces: np.ndarray  # (F, 3, S, S) uint8 RGB
    prior: np.ndarray  # (F, 3, S, S) uint8
    windows: np.ndarray  # (F, 1, 80, 16) float32
    crop_lms: np.ndarray  # (F, 478, 2) float32, crop pixels
    wav: np.ndarray  # (samples,) float32 16 kHz

    @property
    def n_frames(self) -> int:
        return len(self.faces)


def speaker_of(path: Path, data_dir: Path) -> str:
    """The speaker name rule: first sub-folder under ``data_dir``, else the stem before ``_``/``-``."""
    rel = path.relative_to(data_dir)
    if len(rel.parts) > 1:
        return rel.parts[0]
    stem = path.stem
    for sep in ("_", "-"):
        if sep in stem:
            stem = stem.split(sep, 1)[0]
    return stem or path.stem


def find_videos(data_dir: Path) -> list[Path]:
    """The video files under ``data_dir`` (recursively, hidden folders skipped), sorted."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir} is not a folder; give a folder of talking videos (docs/g4g-training.md)")
    vids = sorted(p for p in data_dir.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(data_dir).parts))
    if not vids:
        raise DataError(f"no videos in {data_dir} (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
    return vids


def read_video(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames (F, H, W, 3) uint8 at 25 fps, wav 16 kHz) of a talking video; DataError if unusable."""
    from export.real_clips import load_clip

    try:
        clip = load_clip(path)
    except IndexError:
        raise DataError(f"{path} has no audio or no video stream; training needs talking videos with "
                        "their speech") from None
    except Exception as exc:  # PyAV raises its own FFmpeg error types
        raise DataError(f"cannot read {path} as a video ({type(exc).__name__}: {exc}); use a common "
                        "video file (MP4, MOV, MKV, WebM, MPG)") from None
    if len(clip.frames) < WINDOW + 1:
        raise DataError(f"{path} has only {len(clip.frames)} frames; each clip needs at least {WINDOW + 1}")
    fps = clip.fps if clip.fps > 0 else FPS
    n_out = int(np.floor(len(clip.frames) / fps * FPS + 1e-6))
    idx = np.minimum(np.round(np.arange(n_out) * fps / FPS).astype(np.int64), len(clip.frames) - 1)
    return clip.frames[idx], clip.wav


def detect_faces(frames: np.ndarray, path: Path) -> np.ndarray:
    """(F, 478, 2) landmarks; frames without a face are interpolated, a clip mostly without is refused."""
    from export.landmarks import FaceMesh

    n = len(frames)
    out = np.full((n, 478, 2), np.nan, np.float32)
    with FaceMesh(video=True, max_faces=1) as mesh:
        for i, frame in enumerate(frames):
            lm = mesh.detect(np.ascontiguousarray(frame))
            if lm is not None:
                out[i] = lm
    found = ~np.isnan(out[:, 0, 0])
    if found.sum() < max(1, MIN_FACE_SHARE * n):
        raise DataError(f"{path}: a face was found in only {found.sum()} of {n} frames; training needs "
                        "videos of one frontal, visible talking face (remove or re-cut this clip)")
    if not found.all():
        idx = np.flatnonzero(found)
        flat = out.reshape(n, -1)
        for j in range(flat.shape[1]):
            flat[:, j] = np.interp(np.arange(n), idx, flat[idx, j])
    return out


def _cache_key(path: Path, size: int) -> dict:
    st = path.stat()
    return {"format": DATA_VERSION, "size": int(size), "fps": FPS, "lookahead_s": LOOKAHEAD_S,
            "source": path.name, "bytes": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _cache_path(path: Path, data_dir: Path, speaker: str, cache_dir: Path) -> Path:
    h = hashlib.sha1(str(path.resolve().relative_to(data_dir.resolve())).encode()).hexdigest()[:8]
    return cache_dir / f"{speaker}__{path.stem}-{h}.npz"


def prepare_clip(path: Path, size: int, speaker: str) -> ClipData:
    """Decode, detect, crop and window one clip (no cache)."""
    frames, wav = read_video(path)
    lms = detect_faces(frames, path)
    boxes = faces.crop_boxes(lms, frames.shape[1:3])
    crops = faces.crop_faces(frames, boxes, size)
    cl = faces.crop_landmarks(lms, boxes, size)
    prior = faces.landmark_prior(cl, size)
    mel = melspectrogram(wav)
    windows = frame_windows(mel, np.arange(len(frames)), FPS, LOOKAHEAD_S)
    to8 = lambda x: np.round(x * 255).astype(np.uint8)  # noqa: E731
    return ClipData(path.stem, speaker, to8(crops), to8(prior), windows.astype(np.float32), cl, wav)


def load_or_prepare(path: Path, data_dir: Path, size: int, cache_dir: Path) -> tuple[ClipData, bool]:
    """A clip from the cache when its key matches, else prepared and cached -> (clip, from_cache)."""
    speaker = speaker_of(path, data_dir)
    cfile = _cache_path(path, data_dir, speaker, cache_dir)
    key = _cache_key(path, size)
    if cfile.is_file():
        try:
            with np.load(cfile) as z:
                if json.loads(str(z["key"])) == key:
                    return ClipData(path.stem, speaker, z["faces"], z["prior"], z["windows"], z["crop_lms"],
                                    z["wav"]), True
        except (OSError, ValueError, KeyError):
            log.warning("cache file %s is unreadable; preparing %s again", cfile, path)
    clip = prepare_clip(path, size, speaker)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cfile.with_suffix(".tmp.npz")
    np.savez(tmp, key=json.dumps(key), faces=clip.faces, prior=clip.prior, windows=clip.windows,
             crop_lms=clip.crop_lms, wav=clip.wav)
    tmp.replace(cfile)
    return clip, False


def prepare_dataset(data_dir: Path, size: int, cache_dir: Path, progress: Progress | None = None) -> list[ClipData]:
    """Every clip under ``data_dir`` prepared (or read from ``cache_dir``), in sorted order."""
    data_dir = Path(data_dir)
    vids = find_videos(data_dir)
    clips, cached = [], 0
    for i, path in enumerate(vids):
        clip, hit = load_or_prepare(path, data_dir, size, Path(cache_dir))
        clips.append(clip)
        cached += hit
        if progress is not None:
            progress(i + 1, len(vids))
    log.info("G4G data: %d clips, %d speakers, %d frames (%d clips from the cache %s)", len(clips),
             len({c.speaker for c in clips}), sum(c.n_frames for c in clips), cached, cache_dir)
    return clips


Ranges = list[tuple[int, int, int]]  # (clip index, first frame, end frame)


def split_by_speaker(clips: list[ClipData], val_fraction: float = 0.25) -> tuple[Ranges, Ranges, str]:
    """(train ranges, validation ranges, a sentence saying how it split)."""
    speakers = sorted({c.speaker for c in clips})
    if len(speakers) >= 2:
        n_val = min(len(speakers) - 1, max(1, int(round(len(speakers) * val_fraction))))
        val_sp = set(speakers[-n_val:])
        train = [(i, 0, c.n_frames) for i, c in enumerate(clips) if c.speaker not in val_sp]
        val = [(i, 0, c.n_frames) for i, c in enumerate(clips) if c.speaker in val_sp]
        return train, val, f"by speaker: validation {sorted(val_sp)}, training the other {len(speakers) - n_val}"
    train, val = [], []
    for i, c in enumerate(clips):
        cut = int(c.n_frames * (1 - SINGLE_SPEAKER_VAL))
        if cut - WINDOW < WINDOW or c.n_frames - cut < WINDOW:
            raise DataError(f"clip {c.name} is too short ({c.n_frames} frames) for the single-speaker time split")
        train.append((i, 0, cut - WINDOW))
        val.append((i, cut, c.n_frames))
    return train, val, (f"one speaker ({speakers[0]}): validation is the last {SINGLE_SPEAKER_VAL:.0%} of "
                        "every clip's frames (a time split)")


class G4GDataset:
    """Items of ``WINDOW`` consecutive frames of one clip, as float32 numpy arrays.

    ``item = {"source": (5,3,S,S) lower half zeroed, "refs": (5,3*n_refs,S,S) the same references for
    the five frames, "prior": (5,3,S,S), "mel": (5,1,80,16), "target": (5,3,S,S)}``.  Map-style
    (``len`` / ``[i]``), so ``torch.utils.data.DataLoader`` batches it (numpy -> tensors); training
    here calls :meth:`batch` directly.  ``random_refs=False`` fixes each item's references (seeded
    by its index) so validation figures are repeatable.
    """

    def __init__(self, clips: list[ClipData], ranges: Ranges, n_refs: int, mask_from: float,
                 random_refs: bool = True, seed: int = 0) -> None:
        self.clips, self.ranges, self.n_refs, self.mask_from = clips, ranges, n_refs, mask_from
        self.random_refs = random_refs
        self._rng = np.random.default_rng(seed)
        self.index = [(r, s) for r, (_, lo, hi) in enumerate(ranges) for s in range(lo, hi - WINDOW + 1)]
        if not self.index:
            raise DataError("no training windows: the clips are shorter than 5 frames")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        r, start = self.index[i]
        ci, lo, hi = self.ranges[r]
        clip = self.clips[ci]
        rng = self._rng if self.random_refs else np.random.default_rng(i)
        refs = lo + faces.pick_references(hi - lo, self.n_refs, rng, exclude=range(start - lo, start - lo + WINDOW))
        sl = slice(start, start + WINDOW)
        target = clip.faces[sl].astype(np.float32) / 255.0
        ref_img = (clip.faces[refs].astype(np.float32) / 255.0).reshape(1, -1, *target.shape[-2:])
        return {"source": faces.mask_lower(target, self.mask_from),
                "refs": np.repeat(ref_img, WINDOW, 0),
                "prior": clip.prior[sl].astype(np.float32) / 255.0,
                "mel": clip.windows[sl],
                "target": target}

    def batch(self, indices: list[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Items stacked along a new first axis: (B, 5, ...) each."""
        items = [self[int(i)] for i in indices]
        return {k: np.stack([it[k] for it in items]) for k in items[0]}


def shifted_windows(clip: ClipData, centre: int, rng: np.random.Generator, min_shift: int = WINDOW) -> np.ndarray:
    """(1, 80, 16) the mel window of a frame at least ``min_shift`` frames away: an off-sync pair."""
    far = [j for j in range(clip.n_frames) if abs(j - centre) >= min_shift]
    return clip.windows[int(rng.choice(far)) if far else (centre + clip.n_frames // 2) % clip.n_frames]
