"""G4G training side: face crops and the landmark prior, data preparation, losses, the sync expert,
resumable training, the CPU smoke run on the GRID clips and its export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.g4g import faces
from export.landmarks import CHIN, LOWER_INNER, LOWER_OUTER, UPPER_INNER, UPPER_OUTER

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "tests" / "data" / "grid"


def _fake_landmarks(n: int, rng: np.random.Generator, hw=(288, 360)) -> np.ndarray:
    """A face-sized point cloud drifting across the frame (478 points, pixels)."""
    base = rng.uniform([130, 100], [230, 230], size=(478, 2))
    drift = np.linspace(0, 20, n)[:, None, None] * np.array([1.0, 0.5])
    return (base[None] + drift + rng.normal(0, 0.5, (n, 478, 2))).astype(np.float32)


def test_crop_boxes_are_square_steady_and_inside_the_frame():
    rng = np.random.default_rng(0)
    lms = _fake_landmarks(40, rng)
    boxes = faces.crop_boxes(lms, (288, 360))
    sides = boxes[:, 2] - boxes[:, 0]
    assert boxes.shape == (40, 4) and boxes.dtype == np.int32
    assert (sides == boxes[:, 3] - boxes[:, 1]).all() and len(set(sides.tolist())) == 1
    assert sides[0] >= 130 * faces.PAD - 2  # padded beyond the mesh's bounds
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 360).all() and (boxes[:, 3] <= 288).all()
    assert np.abs(np.diff(boxes[:, 0])).max() <= 2  # smoothed: no jumps between frames
    centre = lms.mean((0, 1))
    big = (lms - centre) * 3 + centre  # larger than the frame: capped, still inside
    b = faces.crop_boxes(big, (288, 360))
    assert (b[:, 2] - b[:, 0] <= 288).all() and (b[:, 2] <= 360).all()


def test_crops_landmarks_and_mask_agree():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (3, 288, 360, 3), dtype=np.uint8)
    lms = _fake_landmarks(3, rng)
    boxes = faces.crop_boxes(lms, (288, 360))
    crops = faces.crop_faces(frames, boxes, 64)
    assert crops.shape == (3, 3, 64, 64) and crops.dtype == np.float32
    assert 0.0 <= crops.min() and crops.max() <= 1.0
    cl = faces.crop_landmarks(lms, boxes, 64)
    inside = (cl >= 0) & (cl <= 64)
    assert inside.all()  # the crop holds the whole mesh
    x0, y0, x1, y1 = boxes[0]
    ratio = (lms[0, 5] - [x0, y0]) * 64 / (x1 - x0)
    np.testing.assert_allclose(cl[0, 5], ratio, atol=1e-3)
    masked = faces.mask_lower(crops, 0.5)
    assert (masked[..., 32:, :] == 0).all() and np.array_equal(masked[..., :32, :], crops[..., :32, :])
    assert crops[..., 32:, :].any()  # a copy: the input is untouched


def test_landmark_prior_does_not_leak_the_mouth_or_jaw():
    rng = np.random.default_rng(2)
    cl = rng.uniform(8, 56, (1, 478, 2)).astype(np.float32)
    prior = faces.landmark_prior(cl, 64)
    assert prior.shape == (1, 3, 64, 64) and prior.max() == pytest.approx(1.0, abs=0.01)
    assert all(prior[0, c].any() for c in range(3))
    mouth = set(UPPER_OUTER + LOWER_OUTER + UPPER_INNER + LOWER_INNER) | {CHIN}
    assert not mouth & faces.PRIOR_INDICES  # no lip or chin point is ever read
    moved = cl.copy()
    others = [i for i in range(478) if i not in faces.PRIOR_INDICES]
    moved[0, others] = rng.uniform(0, 64, (len(others), 2))  # open the mouth, drop the jaw, anything
    np.testing.assert_array_equal(faces.landmark_prior(moved, 64), prior)
    eye = cl.copy()
    eye[0, 159] += 6  # an eyelid moves: the prior does change
    assert not np.array_equal(faces.landmark_prior(eye, 64), prior)


def test_pick_references():
    rng = np.random.default_rng(3)
    for _ in range(20):
        refs = faces.pick_references(75, 5, rng, exclude=10)
        assert refs.shape == (5,) and 10 not in refs and len(set(refs.tolist())) == 5
        assert refs.min() >= 0 and refs.max() < 75
    spread = faces.pick_references(75, 5)
    assert np.array_equal(spread, faces.pick_references(75, 5)) and len(set(spread.tolist())) == 5
    assert spread.min() > 0 and spread.max() < 74 and (np.diff(spread) > 10).all()
    assert faces.pick_references(1, 5).tolist() == [0] * 5  # a still image
    assert len(faces.pick_references(3, 5, rng, exclude=0)) == 5  # too few: repeats allowed
