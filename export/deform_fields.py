"""Per-avatar-frame renderer features: everything about the mouth that does not depend on audio.

Given one lower-face crop (S x S, RGB uint8) and its face-mesh landmarks in crop pixels, this
computes, once at preparation time, what :class:`export.renderer.MouthRenderer` needs per frame:

``ref`` (3,S,S)
    The crop with the lips pressed together (a smiling or talking source frame has them apart):
    the renderer's rest state, so that params = 0 renders a closed mouth.
``basis`` (3,2,S,S)
    Backward-warp displacement fields in ``grid_sample`` units (x then y), one per mouth parameter
    (open, width, closure).  ``basis[0]`` is the *lower lip and jaw* opening field; it applies
    below the closed lip line, ``upper_open`` above it (see below).  Width and closure fields are
    smooth everywhere.
``upper_open`` (2,S,S)
    The opening field of the upper lip.  Opening tears the image along the lip line, so one field
    cannot hold both sides once it is resampled; each side is kept smooth over the whole crop and
    the renderer picks per pixel by the sign of ``lip_v``.
``mouth_uv`` (2,S,S)
    Each pixel's mouth-frame coordinates: u along the corner-to-corner line, v perpendicular and
    positive downwards, in half-mouth-widths, origin midway between the mouth corners.
``lip_v`` (1,S,S)
    Signed distance (v units, + below) from the closed lip line: where the lips meet in ``ref``.
    The renderer finds the parted region as the pixels whose warped source lies on the other side
    of this line.
``colors`` (2,3)
    Mouth-cavity colour (a dark shade of the lips) and teeth colour (sampled when teeth show).

All displacement fields vanish on the nose and well inside the blend mask's feather
(:func:`field_support`), so the composited crop meets the untouched frame without a seam.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from export.features_version import FEATURES_VERSION
from export.landmarks import (CHIN, LOWER_INNER, LOWER_OUTER, MOUTH_CORNERS, SUBNASALE, UPPER_INNER,
                              UPPER_OUTER)

__all__ = ["FEATURES_VERSION", "FEATURE_KEYS", "MouthFrame", "blend_mask", "crop_box", "field_support",
           "frame_features", "stack_features"]
FEATURE_KEYS = ("ref", "basis", "upper_open", "mouth_uv", "lip_v", "colors")

# Motion amplitudes in half-mouth-widths at parameter value 1 (an "ah", a grin, pressed lips).
LOWER_DROP = 0.62  # lower lip drop at open = 1
UPPER_RISE = 0.10  # upper lip rise at open = 1
OPEN_NARROW = 0.06  # the corners move in this much as the jaw drops
WIDTH_STRETCH = 0.13  # corners move out (+1) / in (-1)
WIDTH_THIN = 0.20  # lips thin when spread, thicken when rounded
WIDTH_LIFT = 0.05  # corners rise a little in a spread (smile-like) mouth
CLOSURE_PRESS = 0.30  # pressed lips look this much thinner

CROP_SCALE = 2.2  # crop side / mouth-corner distance
CROP_DROP = 0.3  # crop centre below the mouth centre, in mouth-corner distances

DEFAULT_TEETH = np.array([0.86, 0.83, 0.76], np.float32)
_MASK_INNER, _MASK_OUTER = 0.72, 0.97  # blend mask: 1 inside, Gaussian feather to 0 at the rim
_SUPPORT_INNER, _SUPPORT_OUTER = 0.60, 0.70  # displacement fields fade out inside the mask's 1 region


@dataclass(frozen=True)
class MouthFrame:
    """A mouth-aligned frame in crop pixels: origin between the corners, unit = half mouth width."""

    center: np.ndarray  # (2,) x, y
    u_axis: np.ndarray  # (2,) unit vector, left corner -> right corner
    v_axis: np.ndarray  # (2,) unit vector, perpendicular, pointing down the face
    half_width: float  # pixels

    @classmethod
    def from_landmarks(cls, lm: np.ndarray) -> MouthFrame:
        left, right = lm[MOUTH_CORNERS[0]].astype(np.float64), lm[MOUTH_CORNERS[1]].astype(np.float64)
        d = right - left
        half = float(np.linalg.norm(d)) / 2
        u = d / (2 * half)
        return cls((left + right) / 2, u, np.array([-u[1], u[0]]), half)

    def to_uv(self, xy: np.ndarray) -> np.ndarray:
        """Pixel coordinates (..., 2) -> mouth coordinates (..., 2)."""
        rel = xy - self.center
        return np.stack([rel @ self.u_axis, rel @ self.v_axis], -1) / self.half_width

    def pixel_uv(self, size: int) -> np.ndarray:
        """(2, S, S) mouth coordinates of the crop's pixel centres."""
        c = np.arange(size, dtype=np.float64) + 0.5
        xy = np.stack(np.meshgrid(c, c, indexing="xy"), -1)
        return np.moveaxis(self.to_uv(xy), -1, 0)

    def to_grid(self, du: np.ndarray, dv: np.ndarray, size: int) -> np.ndarray:
        """Mouth-frame displacements (half widths) -> (2, S, S) grid_sample units (x, y)."""
        scale = self.half_width * 2.0 / size
        dx = (du * self.u_axis[0] + dv * self.v_axis[0]) * scale
        dy = (du * self.u_axis[1] + dv * self.v_axis[1]) * scale
        return np.stack([dx, dy]).astype(np.float32)


def crop_box(lm: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (x, y) and side of the lower-face crop for frame landmarks.

    The side is ``CROP_SCALE`` mouth widths, centred ``CROP_DROP`` mouth widths below the mouth
    centre, so the chin and the room the jaw needs to drop fit, and the nose base sits near the top.
    """
    mf = MouthFrame.from_landmarks(lm)
    width = 2 * mf.half_width
    return mf.center + CROP_DROP * width * mf.v_axis, CROP_SCALE * width


def _smoothstep(x: np.ndarray, edge0: float, edge1: float) -> np.ndarray:
    """0 at edge0, 1 at edge1 (either order), C1-smooth in between."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _fade(x: np.ndarray, start: float, stop: float) -> np.ndarray:
    """1 for x <= start, 0 for x >= stop (stop is kept at least a little past start)."""
    return 1 - _smoothstep(x, start, max(stop, start + 0.05))


def _curve(uv: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Interpolate a lip contour's v at ``u`` (contours run corner to corner, ends held flat)."""
    order = np.argsort(uv[:, 0], kind="stable")
    return np.interp(u, uv[order, 0], uv[order, 1])


def _rim_radius(size: int) -> np.ndarray:
    """Superellipse radius of each pixel centre, 1 at the crop's edge midpoints."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2 - 1
    x, y = np.meshgrid(c, c, indexing="xy")
    return (x ** 4 + y ** 4) ** 0.25


def blend_mask(size: int) -> np.ndarray:
    """(S, S) float32 compositing mask: 1 over the mouth and chin, a Gaussian feather, 0 at the rim."""
    r = _rim_radius(size)
    feather = np.exp(-((np.maximum(r - _MASK_INNER, 0) / (0.4 * (_MASK_OUTER - _MASK_INNER))) ** 2))
    return (feather * (1 - _smoothstep(r, _MASK_OUTER - 0.04, _MASK_OUTER))).astype(np.float32)


def field_support(size: int) -> np.ndarray:
    """(S, S) window the displacement fields are multiplied by: 0 wherever the mask is below ~1."""
    return 1 - _smoothstep(_rim_radius(size), _SUPPORT_INNER, _SUPPORT_OUTER)


@dataclass(frozen=True)
class _Lips:
    """Lip landmarks in mouth coordinates plus the derived closed-mouth geometry."""

    upper_inner: np.ndarray  # (11, 2)
    lower_inner: np.ndarray
    upper_outer: np.ndarray
    lower_outer: np.ndarray
    t_nose: float  # nose base, v relative to the closed lip line at u = 0 (negative)
    t_chin: float  # chin, same (positive)

    @property
    def inner_corners(self) -> tuple[float, float]:
        return float(self.upper_inner[0, 0]), float(self.upper_inner[-1, 0])

    def meet_line(self, u: np.ndarray) -> np.ndarray:
        return _meet_line(self.upper_inner, self.lower_inner, u)


def _meet_line(upper_inner: np.ndarray, lower_inner: np.ndarray, u: np.ndarray) -> np.ndarray:
    """v where the lips meet once closed: the upper lip covers 45 % of the gap, the lower 55 %."""
    up, low = _curve(upper_inner, u), _curve(lower_inner, u)
    return up + 0.45 * np.maximum(low - up, 0)


def _lips(mf: MouthFrame, lm: np.ndarray) -> _Lips:
    def uv(idx: tuple[int, ...] | int) -> np.ndarray:
        return mf.to_uv(lm[np.atleast_1d(idx)].astype(np.float64))

    ui, li = uv(UPPER_INNER), uv(LOWER_INNER)
    m0 = float(_meet_line(ui, li, np.zeros(1))[0])
    t_nose = float(uv(SUBNASALE)[0, 1]) - m0
    t_chin = float(uv(CHIN)[0, 1]) - m0
    return _Lips(ui, li, uv(UPPER_OUTER), uv(LOWER_OUTER), min(t_nose, -0.25), max(t_chin, 0.8))


def _lens(u: np.ndarray, lips: _Lips, power: float) -> np.ndarray:
    """Opening profile along the mouth: 1 in the middle, 0 at and beyond the inner corners."""
    ul, ur = lips.inner_corners
    mid, half = (ul + ur) / 2, max((ur - ul) / 2, 0.3)
    return np.clip(1 - ((u - mid) / half) ** 2, 0, 1) ** power


def _thickness(lips: _Lips) -> tuple[float, float]:
    """Upper and lower lip thickness at the middle (half widths), floors for thin lips."""
    z = np.zeros(1)
    up = float(_curve(lips.upper_inner, z)[0] - _curve(lips.upper_outer, z)[0])
    low = float(_curve(lips.lower_outer, z)[0] - _curve(lips.lower_inner, z)[0])
    return max(up, 0.08), max(low, 0.12)


def close_lips(crop: np.ndarray, mf: MouthFrame, lips: _Lips) -> np.ndarray:
    """Warp parted lips together (upper inner lip down, lower up) so the rest state is a closed mouth.

    The teeth between them are skipped over; the shift fades out towards the nose and chin.
    """
    size = crop.shape[0]
    u, v = mf.pixel_uv(size)
    up, low = _curve(lips.upper_inner, u), _curve(lips.lower_inner, u)
    gap = np.maximum(low - up, 0)
    ul, ur = lips.inner_corners
    inside = _smoothstep(u, ul - 0.02, ul + 0.06) * _smoothstep(u, ur + 0.02, ur - 0.06)
    overlap = np.minimum(gap, 0.8 / mf.half_width) * 0.4  # eat the anti-aliased edge of the teeth
    shift_up = (0.45 * gap + overlap) * inside  # how far the upper inner lip moves down
    shift_low = (0.55 * gap + overlap) * inside
    t = v - (up + 0.45 * gap)
    th_up, th_low = _thickness(lips)
    fade_up = _fade(-t, min(th_up, -0.6 * lips.t_nose), -0.85 * lips.t_nose)
    fade_low = _fade(t, min(th_low + 0.1, 0.5 * lips.t_chin), 0.8 * lips.t_chin)
    dv = np.where(t < 0, -shift_up * fade_up, shift_low * fade_low) * mf.half_width  # backward, px
    if not np.any(dv):
        return crop.copy()
    c = np.arange(size, dtype=np.float32)
    mx, my = np.meshgrid(c, c, indexing="xy")
    map_x = (mx + dv * mf.v_axis[0]).astype(np.float32)
    map_y = (my + dv * mf.v_axis[1]).astype(np.float32)
    return cv2.remap(crop, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def mouth_colors(crop: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(2, 3) float32 [cavity, teeth] colours from the (unclosed) crop.

    The cavity is a dark shade of the median lip colour; teeth are the bright, unsaturated pixels
    between parted lips when there are enough of them, else a neutral off-white.
    """
    outer = np.concatenate([lm[list(UPPER_OUTER)], lm[list(LOWER_OUTER)][::-1]])
    inner = np.concatenate([lm[list(UPPER_INNER)], lm[list(LOWER_INNER)][::-1]])
    size = crop.shape[:2]
    m_outer = np.zeros(size, np.uint8)
    m_inner = np.zeros(size, np.uint8)
    cv2.fillPoly(m_outer, [np.round(outer * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
    cv2.fillPoly(m_inner, [np.round(inner * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
    rgb = crop.astype(np.float32) / 255
    lip_px = rgb[(m_outer > 0) & (m_inner == 0)]
    lip = np.median(lip_px, 0) if len(lip_px) >= 8 else np.array([0.62, 0.36, 0.36], np.float32)
    cavity = np.clip(lip * np.array([0.30, 0.16, 0.16]), 0.02, 0.35)
    teeth = DEFAULT_TEETH
    gap_px = rgb[cv2.erode(m_inner, np.ones((3, 3), np.uint8)) > 0]
    if len(gap_px) >= 12:
        bright = gap_px.max(1)
        sat = bright - gap_px.min(1)
        cand = gap_px[(bright > np.quantile(bright, 0.5)) & (sat < 0.35) & (bright > 0.45)]
        if len(cand) >= 6:
            teeth = np.clip(0.5 * np.median(cand, 0) + 0.5 * DEFAULT_TEETH, 0.5, 0.95)
    return np.stack([cavity, teeth]).astype(np.float32)


def _fields(mf: MouthFrame, lips: _Lips, size: int) -> dict[str, np.ndarray]:
    """Displacement fields, mouth coordinates and lip-line distance for one closed crop."""
    u, v = mf.pixel_uv(size)
    t = v - lips.meet_line(u)  # distance from the closed lip line (+ below)
    th_up, th_low = _thickness(lips)
    lens = _lens(u, lips, 0.85)  # the lower lip's drop tapers towards the corners
    au = np.abs(u)
    support = field_support(size)

    # Lower lip and jaw: the lip follows the lens profile; deeper down the whole jaw width drops.
    tz = np.maximum(t, 0)
    jaw = 1 - _smoothstep(au, 0.7, 1.5)
    depth = _smoothstep(tz, 0, 0.8)
    chin_hold = 0.55 * lips.t_chin
    fade_low = _fade(tz, chin_hold, max(min(lips.t_chin + 0.5, 2.0), chin_hold + 0.4))
    drop = LOWER_DROP * (lens + (jaw - lens) * depth) * fade_low
    du_open = OPEN_NARROW * u * _fade(au, 1.0, 1.6) * _fade(np.abs(t), 0.4, 1.0)
    # Each side's field is only used on its own side of the line; past it, it just needs to stay
    # smooth for a pixel or two (bilinear resampling), then fades to 0.
    beyond_up = _fade(-t, 0.1, 0.3)
    lower = mf.to_grid(du_open * beyond_up, -drop * beyond_up, size)

    # Upper lip: rises a little, fading out before the nose.
    fade_up = _fade(-np.minimum(t, 0), min(th_up, -0.55 * lips.t_nose), -0.85 * lips.t_nose)
    beyond_low = _fade(t, 0.1, 0.3)
    rise = UPPER_RISE * _lens(u, lips, 0.6)
    upper = mf.to_grid(du_open * fade_up * beyond_low, rise * fade_up * beyond_low, size)

    # Width: corners out (spread) or in (rounded); lips thin / thicken; corners lift a little.
    lat = 1 - _smoothstep(au, 1.1, 1.8)
    vert = _fade(-t, min(th_up + 0.05, -0.55 * lips.t_nose), -0.85 * lips.t_nose) * \
        _fade(t, th_low + 0.2, th_low + 0.9)
    band = _smoothstep(t, -th_up - 0.3, -th_up) * (1 - _smoothstep(t, th_low, th_low + 0.3))
    lat_lips = 1 - _smoothstep(au, 0.9, 1.4)
    width = mf.to_grid(-WIDTH_STRETCH * u * lat * vert,
                       (WIDTH_THIN * t * band + WIDTH_LIFT * np.minimum(u * u, 1.0)) * lat_lips * vert, size)

    # Closure: lips pressed and rolled in, i.e. thinner around the line.
    closure = mf.to_grid(np.zeros_like(u), CLOSURE_PRESS * t * band * lat_lips, size)

    basis = np.stack([lower, width, closure]) * support.astype(np.float32)
    return {
        "basis": basis.astype(np.float32),
        "upper_open": (upper * support).astype(np.float32),
        "mouth_uv": np.stack([u, v]).astype(np.float32),
        "lip_v": t[None].astype(np.float32),
    }


def frame_features(crop: np.ndarray, lm: np.ndarray) -> dict[str, np.ndarray]:
    """All renderer features for one crop (S, S, 3) uint8 RGB with landmarks ``lm`` in crop pixels."""
    size = crop.shape[0]
    if crop.shape != (size, size, 3) or crop.dtype != np.uint8:
        raise ValueError(f"expected a square (S, S, 3) uint8 crop, got {crop.shape} {crop.dtype}")
    mf = MouthFrame.from_landmarks(lm)
    lips = _lips(mf, lm)
    closed = close_lips(crop, mf, lips)
    out = _fields(mf, lips, size)
    out["ref"] = np.ascontiguousarray(closed.transpose(2, 0, 1), dtype=np.float32) / 255
    out["colors"] = mouth_colors(crop, lm)
    return out


def stack_features(per_frame: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack per-frame feature dicts into arrays with a leading frame dimension F."""
    return {k: np.stack([f[k] for f in per_frame]) for k in FEATURE_KEYS}
