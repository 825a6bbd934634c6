"""Avatar preparation: a portrait or a short video -> everything the renderer reuses.

Preparation runs once per avatar (seconds for a still, about a minute for a 10 s video): face mesh
landmarks, smoothed crop boxes, the blend mask and the model features, written as the on-disk
format of ``engines.avatar`` (which the serving path loads without this package).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from engines.manifest import ModelManifest
from engines.avatar import AVATAR_FORMAT_VERSION, Avatar, AvatarError, default_avatars_dir, load_avatar, \
    write_avatar
from export.deform_fields import FEATURE_KEYS, FEATURES_VERSION, LOWER_DROP, MouthFrame, blend_mask, \
    crop_box, frame_features, stack_features
from export.landmarks import LOWER_OUTER, UPPER_OUTER, FaceDetectionError, FaceMesh, check_face_size

log = logging.getLogger(__name__)

AVATAR_FPS = 25.0  # video avatars are resampled to the server's frame rate
DEFAULT_AVATAR = "default"
DEFAULT_SOURCE = Path(__file__).resolve().parent / "assets" / "astronaut.png"
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}

Progress = Callable[[int, int], None]  # (frames done, frames total)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_image(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_video(path: Path, max_frames: int) -> tuple[list[np.ndarray], float]:
    """Decode up to ``max_frames`` frames resampled to AVATAR_FPS (nearest source frame)."""
    import av  # only videos need PyAV

    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise AvatarError(f"{path} has no video stream; give a portrait image or a video")
            stream = container.streams.video[0]
            src_fps = float(stream.average_rate or AVATAR_FPS)
            next_t = 0.0
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else i / src_fps
                if t + 0.5 / src_fps < next_t:
                    continue  # drop: source faster than 25 fps
                while t + 0.5 / src_fps >= next_t and len(frames) < max_frames:
                    frames.append(frame.to_ndarray(format="rgb24"))  # repeat: source slower
                    next_t += 1 / AVATAR_FPS
                if len(frames) >= max_frames:
                    break
    except av.error.FFmpegError as e:
        raise AvatarError(f"cannot read {path} as an image or a video ({e}); "
                          "use a PNG/JPG portrait or a common video file (MP4, WebM, MOV)") from e
    return frames, src_fps


def read_source(path: Path, max_frames: int = 250) -> tuple[np.ndarray, float, str]:
    """Frames (F, H, W, 3) uint8 RGB, their fps and the kind ("image" or "video") of a source file."""
    path = Path(path)
    if not path.is_file():
        raise AvatarError(f"{path} does not exist or is not a file")
    img = _read_image(path) if path.suffix.lower() in _IMAGE_SUFFIXES else None
    if img is not None:
        return img[None], AVATAR_FPS, "image"
    img = _read_image(path)  # an image with an unusual name
    if img is not None:
        return img[None], AVATAR_FPS, "image"
    frames, _ = _read_video(path, max_frames)
    if not frames:
        raise AvatarError(f"{path} has no decodable frames; use a PNG/JPG portrait or a video")
    return np.stack(frames), AVATAR_FPS, "video"


def _gaussian_smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth along axis 0 (time) with a Gaussian, edges held; offline, so non-causal is fine."""
    n = len(x)
    if sigma <= 0 or n < 2:
        return x
    r = int(np.ceil(3 * sigma))
    offsets = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (offsets / sigma) ** 2)
    k /= k.sum()
    weights = np.zeros((n, n))  # row i: how much each frame contributes to frame i
    rows = np.repeat(np.arange(n), len(offsets))
    cols = np.clip(np.arange(n)[:, None] + offsets[None], 0, n - 1).ravel()
    np.add.at(weights, (rows, cols), np.tile(k, n))
    return (weights @ x.reshape(n, -1)).reshape(x.shape).astype(x.dtype)


def track_landmarks(frames: np.ndarray, progress: Progress | None = None) -> np.ndarray:
    """(F, 478, 2) landmarks; frames without a face take their nearest neighbours' (interpolated)."""
    n = len(frames)
    out = np.full((n, 478, 2), np.nan, np.float32)
    with FaceMesh(video=n > 1) as mesh:
        for i, frame in enumerate(frames):
            lm = mesh.detect(frame)
            if lm is not None:
                out[i] = lm
            if progress is not None:
                progress(i + 1, n)
    found = ~np.isnan(out[:, 0, 0])
    if not found.any():
        what = "the image" if n == 1 else "any frame of the video"
        raise AvatarError(f"no face found in {what}; use a frontal, well-lit portrait "
                          "with the whole face visible")
    if not found.all():
        log.warning("no face in %d of %d frames; interpolating their landmarks", n - found.sum(), n)
        idx = np.flatnonzero(found)
        flat = out.reshape(n, -1)
        for j in range(flat.shape[1]):
            flat[:, j] = np.interp(np.arange(n), idx, flat[idx, j])
    return out


def choose_boxes(landmarks: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """(F, 4) int32 square crops: one side for the whole video, centres smoothed, kept in frame."""
    centers, sides = zip(*(crop_box(lm) for lm in landmarks))
    h, w = frame_hw
    side = int(round(min(float(np.median(sides)), h, w)))
    c = _gaussian_smooth(np.asarray(centers, np.float64), sigma=3.0)
    x0 = np.clip(np.round(c[:, 0] - side / 2), 0, w - side).astype(np.int32)
    y0 = np.clip(np.round(c[:, 1] - side / 2), 0, h - side).astype(np.int32)
    return np.stack([x0, y0, x0 + side, y0 + side], 1).astype(np.int32)


def mouth_boxes(landmarks: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """(F, 4) int32 box around the lips plus the room a fully dropped jaw needs (frame coords)."""
    lips = landmarks[:, list(UPPER_OUTER) + list(LOWER_OUTER)]
    half = np.array([MouthFrame.from_landmarks(lm).half_width for lm in landmarks])
    lo, hi = lips.min(1), lips.max(1)
    pad = 0.15 * half
    drop = (LOWER_DROP + 0.1) * half
    box = np.stack([lo[:, 0] - pad, lo[:, 1] - 2 * pad, hi[:, 0] + pad, hi[:, 1] + drop], 1)
    h, w = frame_hw
    return np.clip(np.round(box), 0, [w, h, w, h]).astype(np.int32)


def extract_crop(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The box region resized to (size, size, 3), area-averaged when shrinking."""
    x0, y0, x1, y1 = (int(v) for v in box)
    region = frame[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if (x1 - x0) > size else cv2.INTER_CUBIC
    return cv2.resize(region, (size, size), interpolation=interp)


def prepare_avatar(source: Path, name: str, avatars_dir: Path, *, crop_size: int = 128,
                   progress: Progress | None = None, max_frames: int = 250, model_dir: Path | None = None) -> Path:
    """Prepare ``source`` (portrait image or video) as avatar ``name``; returns its directory.

    ``model_dir``: prepare it for that model instead of the built-in one — an image generator
    (Wav2Lip family) gets its own face boxes, mask and prepare-graph features.
    """
    source = Path(source)
    if not name or "/" in name or name.startswith("."):
        raise AvatarError(f"invalid avatar name {name!r}: use letters, digits, '-' or '_'")
    frames, fps, kind = read_source(source, max_frames)
    lms = track_landmarks(frames, progress)
    try:
        check_face_size(lms[len(lms) // 2])
    except FaceDetectionError as e:
        raise AvatarError(str(e)) from e
    if kind == "video":
        lms = _gaussian_smooth(lms, sigma=1.0)
    hw = frames.shape[1:3]
    model = ModelManifest.load(model_dir) if model_dir is not None else None
    if model is not None and model.is_image_generator:
        return _prepare_for_generator(source, name, avatars_dir, frames, lms, kind, fps, model, Path(model_dir),
                                      progress)
    boxes = choose_boxes(lms, hw)
    per_frame = []
    for frame, box, lm in zip(frames, boxes, lms):
        scale = crop_size / float(box[2] - box[0])
        crop = extract_crop(frame, box, crop_size)
        per_frame.append(frame_features(crop, (lm - box[:2]) * scale))
    features = stack_features(per_frame)
    manifest = _avatar_manifest(name, source, kind, frames, fps, crop_size, FEATURES_VERSION, FEATURE_KEYS)
    dest = Path(avatars_dir) / name
    arrays = {"frames": frames, "boxes": boxes, "mask": blend_mask(crop_size),
              "mouth_boxes": mouth_boxes(lms, hw),
              "landmarks": np.asarray(lms[0], np.float32)}
    write_avatar(dest, arrays, features, manifest)
    log.info("prepared avatar %r: %d frame(s) at %s", name, len(frames), dest)
    return dest


def _avatar_manifest(name: str, source: Path, kind: str, frames: np.ndarray, fps: float, crop_size: int,
                     features_version: int, feature_keys: tuple[str, ...] | list[str], **more: object) -> dict:
    hw = frames.shape[1:3]
    return {
        "name": name,
        "version": AVATAR_FORMAT_VERSION,
        "source": str(source.resolve()),
        "source_sha256": _sha256(source),
        "kind": kind,
        "frame_size": [int(hw[1]), int(hw[0])],  # width, height
        "n_frames": int(len(frames)),
        "fps": fps,
        "crop_size": int(crop_size),
        "features_version": int(features_version),
        "feature_keys": list(feature_keys),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **more,
    }


def _prepare_for_generator(source: Path, name: str, avatars_dir: Path, frames: np.ndarray, lms: np.ndarray,
                           kind: str, fps: float, model: ModelManifest, model_dir: Path,
                           progress: Progress | None) -> Path:
    """An image generator's avatar: its face boxes and mask, and its prepare graph's features
    (Wav2Lip family: the 6-channel face input; G4G: masked source, references, landmark prior)."""
    from export.face_features import face_blend_mask, face_boxes, face_inputs, g4g_inputs, run_prepare, \
        run_prepare_batches

    hw = frames.shape[1:3]
    size = int(model.face["size"])
    try:
        if model.kind == "g4g":  # its own crop convention: the one it was trained on
            boxes, feeds = g4g_inputs(frames, lms, model.face)
        else:
            boxes = face_boxes(lms, hw, list(model.face.get("pads", [0, 10, 0, 0])),
                               smooth=lambda b, sigma: _gaussian_smooth(b, sigma))
    except ValueError as exc:
        raise AvatarError(f"{source}: {exc}; use a larger portrait") from exc
    if model.kind == "g4g":
        features = run_prepare_batches(model_dir, model, len(frames), feeds, progress=progress)
    else:
        features = run_prepare(model_dir, model, face_inputs(frames, boxes, model.face), progress=progress)
    manifest = _avatar_manifest(name, source, kind, frames, fps, size, model.features_version, model.feature_keys,
                                model=model.name, model_kind=model.kind)
    dest = Path(avatars_dir) / name
    arrays = {"frames": frames, "boxes": boxes, "mask": face_blend_mask(size), "mouth_boxes": mouth_boxes(lms, hw),
              "landmarks": np.asarray(lms[0], np.float32)}
    write_avatar(dest, arrays, features, manifest)
    log.info("prepared avatar %r for model %s: %d frame(s), %.1f MB of features", name, model.name, len(frames),
             sum(v.nbytes for v in features.values()) / 1e6)
    return dest


def default_avatar_name(model: ModelManifest | None = None) -> str:
    """The built-in avatar's name for a model: ``default``, or ``default-<model>`` for a model with
    features of its own (an avatar holds the features of exactly one model)."""
    return DEFAULT_AVATAR if model is None or not model.is_image_generator else f"{DEFAULT_AVATAR}-{model.name}"


def ensure_default_avatar(avatars_dir: Path | None = None, model_dir: Path | None = None) -> Avatar:
    """The built-in avatar (a NASA public-domain portrait), prepared on first use or when stale —
    for the built-in model, or for ``model_dir``'s model."""
    avatars_dir = Path(avatars_dir or default_avatars_dir())
    model = ModelManifest.load(model_dir) if model_dir is not None else None
    if model is not None and not model.is_image_generator:
        model, model_dir = None, None
    name = default_avatar_name(model)
    want = model.features_version if model is not None else FEATURES_VERSION
    try:
        avatar = load_avatar(name, avatars_dir)
        if avatar.features_version == want and avatar.landmarks is not None:
            return avatar
    except AvatarError:
        pass
    prepare_avatar(DEFAULT_SOURCE, name, avatars_dir, model_dir=model_dir)
    return load_avatar(name, avatars_dir)
