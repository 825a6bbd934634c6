"""Paste the rendered mouth crop back into the avatar frame, feathered, and convert for the encoder.

Per frame only the crop box is touched: the avatar frame is copied into a preallocated output,
the crop is resized to the box and blended with the avatar's feathered mask, whose rim is exactly
0, so the seam is invisible.  The resized mask is cached per box size (constant for a prepared
avatar), and all scratch buffers are allocated once.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np


def avatar_frame_for(k: int, n_frames: int) -> int:
    """Avatar frame to show at output frame ``k``: ping-pong through the video so it never jumps."""
    if n_frames <= 1:
        return 0
    period = 2 * (n_frames - 1)
    i = k % period
    return i if i < n_frames else period - i


def to_i420(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H * 3 / 2, W) uint8 I420 planes (H and W must be even)."""
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"I420 needs even frame sizes, got {w}x{h}")
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)


class _AvatarLike(Protocol):
    frames: np.ndarray
    boxes: np.ndarray
    mask: np.ndarray


class Compositor:
    """Blends mouth crops into avatar frames.

    Built from a prepared avatar (``Compositor(avatar)``) or its arrays: ``frames`` (F, H, W, 3)
    uint8, ``boxes`` (F, 4) int x0, y0, x1, y1 inside the frame, ``mask`` (S, S) float in [0, 1].
    :meth:`compose` returns a view of an internal buffer that the next call overwrites: copy it if
    it must outlive the call.
    """

    def __init__(self, frames: np.ndarray | _AvatarLike, boxes: np.ndarray | None = None,
                 mask: np.ndarray | None = None) -> None:
        if boxes is None or mask is None:
            frames, boxes, mask = frames.frames, frames.boxes, frames.mask
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        if len(boxes) != len(frames):
            raise ValueError(f"{len(boxes)} boxes for {len(frames)} frames")
        self.frames = frames
        self.boxes = np.asarray(boxes, np.int64)
        self.mask = np.asarray(mask, np.float32)
        self.crop_size = int(self.mask.shape[0])
        h, w = frames.shape[1:3]
        if (self.boxes[:, :2] < 0).any() or (self.boxes[:, 2] > w).any() or (self.boxes[:, 3] > h).any():
            raise ValueError("crop boxes must lie inside the frame")
        self._out = np.empty((h, w, 3), np.uint8)
        self._fcrop = np.empty((self.crop_size, self.crop_size, 3), np.float32)
        self._masks: dict[tuple[int, int], np.ndarray] = {}
        self._scratch: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def n_frames(self) -> int:
        return int(len(self.frames))

    def _mask_for(self, bw: int, bh: int) -> np.ndarray:
        m = self._masks.get((bw, bh))
        if m is None:
            m = cv2.resize(self.mask, (bw, bh), interpolation=cv2.INTER_LINEAR)[..., None]
            m = np.clip(m, 0.0, 1.0).astype(np.float32)
            self._masks[(bw, bh)] = m
            self._scratch[(bw, bh)] = (np.empty((bh, bw, 3), np.float32), np.empty((bh, bw, 3), np.float32))
        return m

    def _crop_hwc(self, crop: np.ndarray) -> np.ndarray:
        """Renderer output (3, S, S) float [0, 1] -> (S, S, 3) float32 [0, 255]; uint8 HWC passes."""
        if crop.dtype == np.uint8 and crop.ndim == 3 and crop.shape[2] == 3:
            return crop
        if crop.ndim != 3 or crop.shape[0] != 3:
            raise ValueError(f"crop must be (3, S, S) float or (S, S, 3) uint8, "
                             f"got {crop.shape} {crop.dtype}")
        shape = (crop.shape[1], crop.shape[2], 3)
        if self._fcrop.shape != shape:
            self._fcrop = np.empty(shape, np.float32)
        np.multiply(crop.transpose(1, 2, 0), 255.0, out=self._fcrop, casting="unsafe")
        return np.clip(self._fcrop, 0.0, 255.0, out=self._fcrop)

    def compose(self, frame_index: int, crop: np.ndarray) -> np.ndarray:
        """Full RGB uint8 frame (H, W, 3): avatar frame ``frame_index`` with ``crop`` blended in."""
        i = int(frame_index) % self.n_frames
        x0, y0, x1, y1 = (int(v) for v in self.boxes[i])
        bw, bh = x1 - x0, y1 - y0
        out = self._out
        np.copyto(out, self.frames[i])
        mask = self._mask_for(bw, bh)
        resized, base = self._scratch[(bw, bh)]
        src = self._crop_hwc(crop)
        interp = cv2.INTER_AREA if bw < src.shape[1] else cv2.INTER_LINEAR
        region = out[y0:y1, x0:x1]
        # out = base + mask * (crop - base), in float32 over the box only.
        if src.dtype == np.float32:
            cv2.resize(src, (bw, bh), dst=resized, interpolation=interp)
        else:
            resized[...] = cv2.resize(src, (bw, bh), interpolation=interp)
        base[...] = region
        np.subtract(resized, base, out=resized)
        np.multiply(resized, mask, out=resized)
        np.add(resized, base, out=resized)
        np.add(resized, 0.5, out=resized)
        np.clip(resized, 0.0, 255.0, out=resized)  # bilinear/area resizing cannot overshoot, cubic could
        region[...] = resized  # truncation after +0.5 rounds
        return out
