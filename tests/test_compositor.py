"""Compositor: the crop lands in its box, feathered, and nothing outside the box changes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from realtime.compositor import Compositor, avatar_frame_for, to_i420


def _avatar(n: int = 3, h: int = 240, w: int = 320, s: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    boxes = np.array([[100 + i, 60, 100 + i + 96, 156] for i in range(n)], np.int32)
    c = (np.arange(s) + 0.5) / s * 2 - 1
    r = np.maximum(np.abs(c)[None], np.abs(c)[:, None])
    mask = np.clip((0.9 - r) / 0.3, 0, 1).astype(np.float32)  # 1 in the middle, 0 at the rim
    return frames, boxes, mask


def test_outside_box_untouched_inside_blended() -> None:
    frames, boxes, mask = _avatar()
    comp = Compositor(frames, boxes, mask)
    crop = np.zeros((3, 32, 32), np.float32)  # black
    out = comp.compose(1, crop)
    assert out.shape == (240, 320, 3) and out.dtype == np.uint8
    x0, y0, x1, y1 = boxes[1]
    outside = np.ones(out.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], frames[1][outside])
    centre = out[y0 + 40:y1 - 40, x0 + 40:x1 - 40]
    assert centre.max() == 0  # full mask: the crop itself
    assert np.array_equal(out[y0, x0:x1], frames[1][y0, x0:x1])  # rim: mask 0
    ring = out[y0 + 8, x0 + 20:x1 - 20].astype(int)
    orig = frames[1][y0 + 8, x0 + 20:x1 - 20].astype(int)
    assert np.all(ring <= orig) and (ring < orig).mean() > 0.8  # feather: in between


def test_float_and_uint8_crops_agree() -> None:
    frames, boxes, mask = _avatar()
    comp = Compositor(frames, boxes, mask)
    rng = np.random.default_rng(1)
    crop = rng.random((3, 32, 32), dtype=np.float32)
    a = comp.compose(0, crop).copy()
    crop8 = (crop.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)
    b = comp.compose(0, crop8)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_out_of_range_crop_is_clipped() -> None:
    frames, boxes, mask = _avatar()
    comp = Compositor(frames, boxes, mask)
    out = comp.compose(0, np.full((3, 32, 32), 1.7, np.float32))
    x0, y0, x1, y1 = boxes[0]
    assert out[y0 + 48, x0 + 48].tolist() == [255, 255, 255]


def test_rejects_bad_input() -> None:
    frames, boxes, mask = _avatar()
    with pytest.raises(ValueError):
        Compositor(frames, boxes[:2], mask)
    bad = boxes.copy()
    bad[0, 2] = 400
    with pytest.raises(ValueError):
        Compositor(frames, bad, mask)
    with pytest.raises(ValueError):
        Compositor(frames, boxes, mask).compose(0, np.zeros((32, 32), np.float32))


def test_ping_pong_frame_index() -> None:
    assert [avatar_frame_for(k, 4) for k in range(9)] == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert [avatar_frame_for(k, 1) for k in range(3)] == [0, 0, 0]
    assert [avatar_frame_for(k, 2) for k in range(4)] == [0, 1, 0, 1]


def test_to_i420() -> None:
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[..., 0] = 255
    yuv = to_i420(rgb)
    assert yuv.shape == (360, 320) and yuv.dtype == np.uint8
    assert abs(int(yuv[0, 0]) - 82) <= 2  # BT.601 limited-range luma of pure red: 16 + 0.257 * 255
    with pytest.raises(ValueError):
        to_i420(np.zeros((241, 320, 3), np.uint8))


def test_compose_is_fast() -> None:
    """Budget: ~1 ms per 512x512 frame; allow slack for a loaded CI box."""
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (2, 512, 512, 3), dtype=np.uint8)
    boxes = np.array([[170, 100, 330, 260]] * 2, np.int32)
    mask = np.ones((128, 128), np.float32)
    comp = Compositor(frames, boxes, mask)
    crop = rng.random((3, 128, 128), dtype=np.float32)
    comp.compose(0, crop)
    t = time.perf_counter()
    for k in range(50):
        comp.compose(k, crop)
    per_frame = (time.perf_counter() - t) / 50
    assert per_frame < 0.01, f"{per_frame * 1e3:.2f} ms per frame"


def test_built_from_avatar_object() -> None:
    from types import SimpleNamespace

    frames, boxes, mask = _avatar()
    crop = np.full((3, 32, 32), 0.5, np.float32)
    a = Compositor(SimpleNamespace(frames=frames, boxes=boxes, mask=mask)).compose(2, crop).copy()
    assert np.array_equal(a, Compositor(frames, boxes, mask).compose(2, crop))
