"""Avatar preparation for an image generator (Wav2Lip family, G4G): face boxes, crops, its prepare graph.

Per avatar frame, once: the face box (face-mesh bounds plus the generator's own padding, smoothed
over time for a video), the face cut out at the generator's size in its colour order and scale,
the 6-channel [lower half zeroed, reference] input, and the outputs of the model's ``prepare``
graph (every skip level of the face encoder), which become the avatar's cached features.  The
server then runs only the step (audio encoder + decoder) per live frame.

G4G (``kind="g4g"``) cuts its faces with its own training code (``export.g4g.faces``: square
face-mesh crop, lower half zeroed, the landmark prior, reference frames spread over the avatar),
so an avatar frame reaches the prepare graph exactly as a training frame did.

Torch-free: ONNX Runtime runs the prepare graph, so the serving install can prepare avatars.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from engines.manifest import ModelManifest

log = logging.getLogger(__name__)

__all__ = ["face_boxes", "face_inputs", "face_blend_mask", "run_prepare", "run_prepare_batches", "g4g_inputs"]

BatchInputs = Callable[[int, int], dict[str, np.ndarray]]  # (start, stop) -> prepare-graph feeds


def face_boxes(landmarks: np.ndarray, frame_hw: tuple[int, int], pads: list[int],
               smooth: Callable[[np.ndarray, float], np.ndarray] | None = None) -> np.ndarray:
    """(F, 4) int32 x0, y0, x1, y1: the face mesh's bounds padded like the generator's own inference
    (``pads`` = top, bottom, left, right in pixels), kept inside the frame."""
    lo, hi = landmarks.min(1), landmarks.max(1)  # (F, 2)
    top, bottom, left, right = pads
    box = np.stack([lo[:, 0] - left, lo[:, 1] - top, hi[:, 0] + right, hi[:, 1] + bottom], 1).astype(np.float64)
    if smooth is not None and len(box) > 1:
        box = smooth(box, 2.0)
    h, w = frame_hw
    box = np.round(box)
    box[:, [0, 2]] = np.clip(box[:, [0, 2]], 0, w)
    box[:, [1, 3]] = np.clip(box[:, [1, 3]], 0, h)
    if ((box[:, 2] - box[:, 0]) < 16).any() or ((box[:, 3] - box[:, 1]) < 16).any():
        raise ValueError("the face is too small for the generator (under 16 px)")
    return box.astype(np.int32)


def face_inputs(frames: np.ndarray, boxes: np.ndarray, face: dict) -> np.ndarray:
    """(F, 6, S, S) float32: each frame's face as the generator takes it, lower half zeroed, then
    the same face as its reference (Wav2Lip's inference uses the frame itself as reference)."""
    s = int(face["size"])
    mask_from = int(face.get("mask", {}).get("zero_rows_from", s // 2))
    out = np.empty((len(frames), 6, s, s), np.float32)
    for i, (frame, (x0, y0, x1, y1)) in enumerate(zip(frames, boxes)):
        crop = cv2.resize(np.ascontiguousarray(frame[y0:y1, x0:x1]), (s, s), interpolation=cv2.INTER_LINEAR)
        if face.get("colour_order", "BGR") == "BGR":
            crop = crop[..., ::-1]
        chw = crop.transpose(2, 0, 1).astype(np.float32) * float(face.get("scale", 1 / 255))
        out[i, 3:] = chw
        out[i, :3] = chw
        out[i, :3, mask_from:] = 0.0
    return out


def face_blend_mask(size: int) -> np.ndarray:
    """(S, S) float32 in [0, 1]: the lower face (mouth, jaw), feathered to exactly 0 at the rim, so
    the generated face blends into the avatar without a seam; the eyes stay the avatar's own."""
    y = (np.arange(size) + 0.5) / size
    x = (np.arange(size) + 0.5) / size
    rows = np.clip((y - 0.42) / 0.12, 0, 1) * np.clip((0.97 - y) / 0.08, 0, 1)
    cols = np.clip((x - 0.06) / 0.14, 0, 1) * np.clip((0.94 - x) / 0.14, 0, 1)
    m = np.outer(rows, cols).astype(np.float32)
    m = m * m * (3 - 2 * m)  # smoothstep: no visible edge where the ramp ends
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = 0.0
    return m


def g4g_inputs(frames: np.ndarray, landmarks: np.ndarray, face: dict) -> tuple[np.ndarray, BatchInputs]:
    """G4G's crop boxes (F, 4) and a function giving the prepare graph's feeds for frames
    [start, stop): ``source_masked`` (lower half zeroed), ``refs`` (the avatar's ``n_refs``
    reference crops stacked on channels, the same for every frame) and ``prior`` (the frame's
    landmark prior).  Built per batch: a long avatar's inputs would not fit in memory at once."""
    from export.g4g import faces

    size, n_refs = int(face["size"]), int(face["n_refs"])
    mask_from = float(face.get("mask_from", 0.5))
    boxes = faces.crop_boxes(landmarks, frames.shape[1:3])
    crops = faces.crop_faces(frames, boxes, size)
    crop_lms = faces.crop_landmarks(landmarks, boxes, size)
    refs = crops[faces.pick_references(len(frames), n_refs)].reshape(1, 3 * n_refs, size, size)

    def feeds(start: int, stop: int) -> dict[str, np.ndarray]:
        return {"source_masked": faces.mask_lower(crops[start:stop], mask_from),
                "refs": np.ascontiguousarray(np.repeat(refs, stop - start, 0)),
                "prior": faces.landmark_prior(crop_lms[start:stop], size)}

    return boxes, feeds


def run_prepare(model_dir: Path, manifest: ModelManifest, inputs: np.ndarray, batch: int = 8,
                progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """The model's prepare graph over (F, 6, S, S) inputs -> {feature key: (F, C, H, W) float32}."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(manifest.prepare_path(model_dir)), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return run_prepare_batches(model_dir, manifest, len(inputs), lambda a, b: {name: inputs[a:b]}, batch, progress,
                               session=sess)


def run_prepare_batches(model_dir: Path, manifest: ModelManifest, n_frames: int, inputs: BatchInputs,
                        batch: int = 8, progress: Callable[[int, int], None] | None = None,
                        session: object | None = None) -> dict[str, np.ndarray]:
    """The model's prepare graph over ``n_frames`` frames whose feeds ``inputs(start, stop)`` makes
    -> {feature key: (F, C, H, W) float32}."""
    import onnxruntime as ort

    sess = session
    if sess is None:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(manifest.prepare_path(model_dir)), opts, providers=["CPUExecutionProvider"])
    out_names = [o.name for o in sess.get_outputs()]
    missing = [k for k in manifest.feature_keys if k not in out_names]
    if missing:
        raise ValueError(f"{manifest.prepare_path(model_dir)} has no outputs {missing} (has {out_names}); "
                         "re-export the model")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in manifest.feature_keys}
    for start in range(0, n_frames, batch):
        stop = min(start + batch, n_frames)
        outs = sess.run(list(manifest.feature_keys), inputs(start, stop))
        for k, v in zip(manifest.feature_keys, outs):
            parts[k].append(np.asarray(v, np.float32))
        if progress is not None:
            progress(stop, n_frames)
    return {k: np.concatenate(v) for k, v in parts.items()}
