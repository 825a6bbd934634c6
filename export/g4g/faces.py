"""G4G face crops, the lower-half mask, the landmark prior and reference picking (numpy, torch-free).

Training (``export.g4g.data``) and avatar preparation share these functions, so a generator sees
at serving time exactly the crop convention it was trained on:

- the crop is a square around the face mesh (forehead to chin, cheek to cheek), ``PAD`` times the
  larger side of the mesh's bounds, shifted ``DROP`` of the side downwards so a dropped jaw stays
  inside; one side for the whole clip and its centres smoothed over time (no jitter);
- the source frame has its rows from ``int(S * mask_from)`` down zeroed (paper §3: "lower-half
  occluded");
- the landmark prior is an image of the frame's own eyes, irises, brows, nose and upper face
  contour, drawn from the face mesh: head pose, scale and gaze, but nothing of the lips, the chin
  or the lower jaw line, so it cannot leak the mouth opening the generator has to predict.

Torch-free: the serving install prepares avatars with it.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from export.face_features import face_boxes

PAD = 1.2  # crop side / larger side of the face mesh's bounds
DROP = 0.04  # crop centre below the bounds' centre, as a fraction of the side
SMOOTH_SIGMA = 2.0  # frames: Gaussian smoothing of the crop centres

# Face-mesh indices drawn into the prior (canonical mediapipe topology), each a polyline.
_LEFT_EYE = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7, 33)
_RIGHT_EYE = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249, 263)
_LEFT_BROW = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107)
_RIGHT_BROW = (276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
_NOSE = (168, 6, 197, 195, 5, 4, 1, 19, 94, 2)
_NOSTRILS = (98, 97, 2, 326, 327)
_IRISES = (468, 473)  # centres (refine_landmarks=True)
# The face oval from the right cheek over the forehead to the left cheek, stopping at nose level:
# its lower part (jaw line, chin) moves with the mouth and is left out.
_UPPER_OVAL = (323, 454, 356, 389, 251, 284, 332, 297, 338, 10, 109, 67, 103, 54, 21, 162, 127, 234, 93)

PRIOR_CHANNELS = {0: (_LEFT_EYE, _RIGHT_EYE), 1: (_LEFT_BROW, _RIGHT_BROW, _NOSE, _NOSTRILS), 2: (_UPPER_OVAL,)}
PRIOR_INDICES = frozenset(i for lines in PRIOR_CHANNELS.values() for line in lines for i in line) | set(_IRISES)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along time (axis 0), edges held: the crop must not jitter."""
    n = len(x)
    if sigma <= 0 or n < 2:
        return x
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.concatenate([np.repeat(x[:1], r, 0), x, np.repeat(x[-1:], r, 0)])
    return np.stack([np.convolve(padded[:, j], k, mode="valid") for j in range(x.shape[1])], 1)


def crop_boxes(landmarks: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """(F, 4) int32 x0, y0, x1, y1: square crops, one side per clip, centres smoothed, inside the frame.

    The mesh's bounds come from ``export.face_features.face_boxes`` (no padding); the side is the
    clip's median of ``PAD`` x their larger side, capped by the frame.
    """
    lms = np.asarray(landmarks, np.float64)
    if lms.ndim != 3 or lms.shape[2] != 2:
        raise ValueError(f"expected (F, 478, 2) landmarks, got {lms.shape}")
    bounds = face_boxes(lms, frame_hw, [0, 0, 0, 0]).astype(np.float64)
    h, w = frame_hw
    side = float(np.median(np.maximum(bounds[:, 2] - bounds[:, 0], bounds[:, 3] - bounds[:, 1]))) * PAD
    side = int(round(min(side, h, w)))
    centres = np.stack([(bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2 + DROP * side], 1)
    centres = _smooth(centres, SMOOTH_SIGMA)
    x0 = np.clip(np.round(centres[:, 0] - side / 2), 0, w - side)
    y0 = np.clip(np.round(centres[:, 1] - side / 2), 0, h - side)
    return np.stack([x0, y0, x0 + side, y0 + side], 1).astype(np.int32)


def crop_faces(frames: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(F, 3, S, S) float32 RGB in [0, 1]: each frame's box resized to ``size`` (area-averaged down)."""
    out = np.empty((len(frames), 3, size, size), np.float32)
    for i, (frame, (x0, y0, x1, y1)) in enumerate(zip(frames, np.asarray(boxes))):
        region = np.ascontiguousarray(frame[y0:y1, x0:x1])
        interp = cv2.INTER_AREA if (x1 - x0) > size else cv2.INTER_CUBIC
        crop = cv2.resize(region, (size, size), interpolation=interp)
        out[i] = crop.transpose(2, 0, 1).astype(np.float32) / 255.0
    return np.clip(out, 0.0, 1.0)


def crop_landmarks(landmarks: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(F, 478, 2) float32: the landmarks in crop pixels (0..size) of their frame's box."""
    boxes = np.asarray(boxes, np.float64)
    origin = boxes[:, None, :2]
    scale = size / (boxes[:, 2] - boxes[:, 0])[:, None, None]
    return ((np.asarray(landmarks, np.float64) - origin) * scale).astype(np.float32)


def mask_lower(faces: np.ndarray, mask_from: float = 0.5) -> np.ndarray:
    """A copy of (F, 3, S, S) faces with rows ``int(S * mask_from)`` and below set to 0."""
    out = np.array(faces, dtype=np.float32, copy=True)
    out[..., int(out.shape[-2] * mask_from):, :] = 0.0
    return out


def landmark_prior(crop_lms: np.ndarray, size: int) -> np.ndarray:
    """(F, 3, S, S) float32 in [0, 1]: the landmark prior image of each frame.

    Channel 0: both eye contours and the iris centres; channel 1: the brows, the nose ridge and the
    nostrils; channel 2: the upper face contour (cheek to cheek over the forehead, down to nose
    level).  Lines are anti-aliased, about ``size / 64`` pixels wide.  It holds the frame's pose,
    scale and gaze and *no* lip, chin or lower-jaw point (``PRIOR_INDICES`` lists the points
    read), so the mouth opening to predict never leaks into it.
    """
    lms = np.asarray(crop_lms, np.float32)
    if lms.ndim != 3 or lms.shape[1] < 478:
        raise ValueError(f"expected (F, 478, 2) crop landmarks, got {lms.shape}")
    thick = max(1, int(round(size / 64)))
    shift = 4  # sub-pixel precision for cv2's drawing
    out = np.zeros((len(lms), 3, size, size), np.float32)
    for f, lm in enumerate(lms):
        fixed = np.round(lm * (1 << shift)).astype(np.int32)
        for ch, lines in PRIOR_CHANNELS.items():
            canvas = np.zeros((size, size), np.uint8)
            pts = [fixed[list(line)].reshape(-1, 1, 2) for line in lines]
            cv2.polylines(canvas, pts, False, 255, thick, cv2.LINE_AA, shift)
            if ch == 0:
                for i in _IRISES:
                    cv2.circle(canvas, tuple(int(v) for v in fixed[i]), (thick + 1) << shift, 255, -1,
                               cv2.LINE_AA, shift)
            out[f, ch] = canvas.astype(np.float32) / 255.0
    return out


def pick_references(n_frames: int, n_refs: int, rng: np.random.Generator | None = None,
                    exclude: int | Iterable[int] | None = None) -> np.ndarray:
    """(n_refs,) int64 frame indices of the reference frames.

    With ``rng`` (training): random distinct frames of the same clip other than ``exclude`` (the
    target), drawn with replacement only when the clip has too few.  Without (an avatar): frames
    spread evenly over the clip, the same for every avatar frame; a still image repeats frame 0.
    """
    if n_frames < 1 or n_refs < 1:
        raise ValueError(f"need at least one frame and one reference, got {n_frames} and {n_refs}")
    if rng is None:
        return np.round(np.linspace(0, n_frames - 1, n_refs + 2)[1:-1] if n_frames > n_refs
                        else np.arange(n_refs) % n_frames).astype(np.int64)
    banned = set() if exclude is None else {int(exclude)} if np.isscalar(exclude) else {int(e) for e in exclude}
    pool = np.array([i for i in range(n_frames) if i not in banned], np.int64)
    if pool.size == 0:
        pool = np.arange(n_frames, dtype=np.int64)
    return rng.choice(pool, size=n_refs, replace=pool.size < n_refs).astype(np.int64)


def mouth_region(size: int) -> tuple[slice, slice]:
    """(rows, cols) of the mouth region in a crop: the lower half, the middle half of the columns.

    Used by evaluation and the smoke test to score the part of the face that has to be generated.
    """
    return slice(size // 2, size - size // 16), slice(size // 4, size - size // 4)
