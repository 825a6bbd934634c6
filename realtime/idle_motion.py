"""A still portrait should not look frozen: blinks, breathing and a little head motion.

Video avatars loop their own footage (``avatar_frame_for``); a single image gets this instead,
applied after the mouth is composited (so it runs the same way during speech and in silence —
there is no speak/idle switch, hence no jump between them):

1. **Blinks** (needs the eyes, a :class:`FaceGeometry`): at natural, irregular intervals (about
   every 4 s, 1.4 s at least, now and then a double blink), each ~0.26 s (close 70 ms, hold
   40 ms, open 150 ms).  The upper lid is drawn down over the eye: inside a small box per eye
   the lid skin above is stretched down and the eye squashed beneath it, with a faint darkening
   along the lid line (lashes).  The map is the identity on the box's rim, so there is no seam.
2. **Head motion** (needs the face): a slow roll about the neck and a drift of a few pixels
   (sums of incommensurate sines, so it never visibly repeats), weighted by a soft ellipse
   round the head: the head moves, the background and shoulders stay.
3. **Breathing and sway** of the whole frame: one small affine warp (rotation about a pivot low
   in the frame, plus a breathing scale and lift), periods of several seconds.

Everything is a pure function of time: every session at the same instant gets the same pose,
and a test can reproduce any frame.  The blink schedule is drawn once from a fixed seed (it
repeats every ``schedule_s``).  Cost at 512x512: the warpAffine (~1 ms) plus the head remap
over the head's box and, while blinking, two remaps of ~30x30 px.

:func:`face_geometry` finds the eyes and head of an avatar: from mediapipe's face mesh on its
first frame when mediapipe is installed (it is a serving dependency), else estimated from the
avatar's mouth box (eyes sit about 0.85 mouth widths above the mouth corners, half a mouth width
either side of its centre).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["IdleMotion", "Eye", "FaceGeometry", "face_geometry", "BlinkSchedule"]

# mediapipe face-mesh indices of the eyes (canonical topology): outer corner, inner corner,
# upper-lid middle, lower-lid middle; image-left eye first.
EYE_POINTS = ((33, 133, 159, 145), (362, 263, 386, 374))
_FOREHEAD, _CHIN, _CHEEKS = 10, 152, (234, 454)


@dataclass(frozen=True)
class Eye:
    cx: float
    cy: float
    half_w: float  # corner to corner / 2, px
    half_h: float  # upper lid to lower lid / 2, px (open eye)


@dataclass(frozen=True)
class FaceGeometry:
    """Where the eyes and the head are in the avatar frame (pixels)."""

    eyes: tuple[Eye, ...]
    center: tuple[float, float]  # middle of the head (forehead-chin midpoint)
    face_h: float  # forehead to chin, px
    face_w: float  # cheek to cheek, px
    neck: tuple[float, float]  # the head rolls about this point
    source: str = "face mesh"

    @classmethod
    def from_landmarks(cls, lm: np.ndarray) -> FaceGeometry:
        """From (478, 2) face-mesh pixel landmarks."""
        lm = np.asarray(lm, np.float64)
        eyes = []
        for a, b, up, lo in EYE_POINTS:
            cx, cy = (lm[a] + lm[b] + lm[up] + lm[lo]) / 4.0
            half_w = float(np.linalg.norm(lm[b] - lm[a])) / 2.0
            half_h = max(1.0, float(np.linalg.norm(lm[lo] - lm[up])) / 2.0)
            eyes.append(Eye(float(cx), float(cy), half_w, half_h))
        top, chin = lm[_FOREHEAD], lm[_CHIN]
        face_h = float(np.linalg.norm(chin - top))
        face_w = float(np.linalg.norm(lm[_CHEEKS[1]] - lm[_CHEEKS[0]]))
        center = (top + chin) / 2.0
        neck = chin + (chin - top) * 0.25
        return cls(tuple(eyes), (float(center[0]), float(center[1])), face_h, face_w,
                   (float(neck[0]), float(neck[1])), "face mesh")

    @classmethod
    def from_mouth_box(cls, box: np.ndarray | tuple[int, int, int, int]) -> FaceGeometry:
        """Estimated from a mouth box (``Avatar.mouth_boxes[i]``: the lips plus 15 % of the mouth's
        half width either side and twice that above) with average face proportions."""
        x0, y0, x1, _ = (float(v) for v in box)
        w = max(4.0, (x1 - x0) / 1.15)  # mouth-corner distance
        mx, my = (x0 + x1) / 2.0, y0 + 0.19 * w  # the mouth corners' height
        eye_y = my - 0.85 * w
        eyes = (Eye(mx - 0.5 * w, eye_y, 0.21 * w, 0.08 * w), Eye(mx + 0.5 * w, eye_y, 0.21 * w, 0.08 * w))
        face_h = 2.45 * w
        chin_y = my + 0.85 * w
        return cls(eyes, (mx, chin_y - face_h / 2.0), face_h, 2.1 * w, (mx, chin_y + 0.25 * face_h), "mouth box")

    def eye_boxes(self) -> list[tuple[int, int, int, int]]:
        """x0, y0, x1, y1 around each eye (what a blink touches), for tests and overlays."""
        return [(int(e.cx - 1.6 * e.half_w), int(e.cy - e.half_h - 1.2 * e.half_w),
                 int(math.ceil(e.cx + 1.6 * e.half_w)), int(math.ceil(e.cy + e.half_h + 0.4 * e.half_w)))
                for e in self.eyes]


def face_geometry(avatar) -> FaceGeometry:  # noqa: ANN001 - engines.avatar.Avatar
    """The avatar's eyes and head: its face mesh from preparation (``landmarks.npy``), else an
    estimate from its mouth box (avatars prepared before the landmarks were kept)."""
    lm = getattr(avatar, "landmarks", None)
    if lm is not None:
        return FaceGeometry.from_landmarks(np.asarray(lm, np.float32))
    log.info("avatar %r has no face landmarks (prepare it again for exact eyes); estimating them from its "
             "mouth box", getattr(avatar, "name", "?"))
    return FaceGeometry.from_mouth_box(avatar.mouth_boxes[0])


class BlinkSchedule:
    """Blink start times drawn once from a fixed seed; ``closure(t)`` in [0, 1] (1 = shut).

    Intervals are 1.4 s plus a gamma(2.2, 1.2 s) draw (mean ~4 s, the spontaneous blink rate of
    a calm adult); 12 % of blinks are followed by a second one ~0.35 s later.  The schedule
    repeats every ``period_s`` seconds.
    """

    CLOSE_S, HOLD_S, OPEN_S = 0.07, 0.04, 0.15

    def __init__(self, seed: int = 7, period_s: float = 600.0) -> None:
        rng = np.random.default_rng(seed)
        self.period_s = float(period_s)
        starts, t = [], float(rng.uniform(0.8, 3.0))
        while t < period_s - 8.0:
            starts.append(t)
            if rng.random() < 0.12:
                starts.append(t + 0.32 + float(rng.uniform(0.0, 0.08)))
            t += 1.4 + float(rng.gamma(2.2, 1.2))
        self.starts = np.array(starts, np.float64)
        self.duration_s = self.CLOSE_S + self.HOLD_S + self.OPEN_S

    def closure(self, t: float) -> float:
        u = t % self.period_s
        i = int(np.searchsorted(self.starts, u, side="right")) - 1
        if i < 0:
            return 0.0
        d = u - float(self.starts[i])
        if d >= self.duration_s:
            return 0.0
        if d < self.CLOSE_S:
            return _smooth(d / self.CLOSE_S)
        d -= self.CLOSE_S
        if d < self.HOLD_S:
            return 1.0
        return 1.0 - _smooth((d - self.HOLD_S) / self.OPEN_S)


def _smooth(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3.0 - 2.0 * x)


class _EyeBlink:
    """The lid-closing remap of one eye's box, precomputed up to the closure amount."""

    def __init__(self, eye: Eye, height: int, width: int) -> None:
        a, b = eye.half_w, eye.half_h
        self.y_u, self.y_l = eye.cy - b, eye.cy + b
        x0, x1 = max(0, int(eye.cx - 1.6 * a)), min(width, int(math.ceil(eye.cx + 1.6 * a)))
        y0 = max(0, int(self.y_u - 1.2 * a))
        y1 = min(height, int(math.ceil(self.y_l + 0.4 * a)))
        self.box = (x0, y0, x1, y1)
        self.ok = x1 - x0 >= 4 and y1 - y0 >= 4 and self.y_u > y0
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        self._x_local = xs - x0
        self._y = ys
        self._y0 = float(y0)
        u = np.clip((xs - eye.cx) / (1.35 * a), -1.0, 1.0)
        self._profile = (0.5 * (1.0 + np.cos(np.pi * u))).astype(np.float32)  # 1 mid-eye, 0 at the sides
        self._lash = max(0.8, 0.5 * b)
        self._src = np.empty((y1 - y0, x1 - x0, 3), np.uint8)

    def apply(self, rgb: np.ndarray, c: float) -> None:
        if not self.ok:
            return
        x0, y0, x1, y1 = self.box
        y, y_top, y_u, y_l = self._y, self._y0, self.y_u, self.y_l
        lid = y_u + self._profile * (0.92 * c * (y_l - y_u))  # where the upper lid is now
        above = y_top + (y - y_top) * ((y_u - y_top) / np.maximum(lid - y_top, 1e-3))  # lid skin, stretched
        below = y_u + (y - lid) * ((y_l - y_u) / np.maximum(y_l - lid, 1e-3))  # the eye, squashed
        src_y = np.where(y <= lid, above, np.where(y <= y_l, below, y)) - y_top
        region = rgb[y0:y1, x0:x1]
        np.copyto(self._src, region)
        cv2.remap(self._src, self._x_local, src_y.astype(np.float32), cv2.INTER_LINEAR, dst=region,
                  borderMode=cv2.BORDER_REPLICATE)
        shade = 1.0 - (0.35 * c) * self._profile * np.exp(-(((y - lid) / self._lash) ** 2))
        region[...] = (region * shade[..., None] + 0.5).astype(np.uint8)


class _HeadMotion:
    """A soft-edged remap of the head's box: roll about the neck plus a small drift."""

    def __init__(self, face: FaceGeometry, height: int, width: int, *, drift: float, roll_deg: float) -> None:
        cx, cy = face.center
        rx, ry = 0.75 * max(face.face_w, 0.8 * face.face_h), 0.8 * face.face_h  # the head with its hair
        reach = 1.6  # the weight falls from 1 (inside the head) to 0 at 1.6 head radii
        x0, x1 = max(0, int(cx - reach * rx)), min(width, int(math.ceil(cx + reach * rx)))
        y0, y1 = max(0, int(cy - reach * ry)), min(height, int(math.ceil(cy + reach * ry)))
        self.box = (x0, y0, x1, y1)
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        r = np.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
        t = np.clip((r - 1.0) / (reach - 1.0), 0.0, 1.0)
        w = (1.0 - t * t * (3.0 - 2.0 * t)).astype(np.float32)
        w[0, :] = w[-1, :] = w[:, 0] = w[:, -1] = 0.0  # the box's rim never moves (clipped boxes too)
        self._w = w
        rel_x, rel_y = xs - face.neck[0], ys - face.neck[1]
        self._a = (w * rel_x).astype(np.float32)  # the displacement is linear in these three
        self._b = (w * rel_y).astype(np.float32)
        self._x = (xs - x0).astype(np.float32)
        self._y = (ys - y0).astype(np.float32)
        self.drift_x, self.drift_y = drift * face.face_h, 0.5 * drift * face.face_h
        self.roll = math.radians(roll_deg)
        self._src = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        self._mx = np.empty_like(self._x)
        self._my = np.empty_like(self._y)

    def pose(self, t: float) -> tuple[float, float, float]:
        """(dx px, dy px, roll rad) at ``t``: two sines per axis, periods 2.9-11.3 s."""
        tau = 2.0 * math.pi
        dx = self.drift_x * (0.6 * math.sin(tau * t / 9.3 + 0.4) + 0.4 * math.sin(tau * t / 3.7 + 1.9))
        dy = self.drift_y * (0.6 * math.sin(tau * t / 6.1 + 2.3) + 0.4 * math.sin(tau * t / 2.9 + 0.7))
        roll = self.roll * (0.7 * math.sin(tau * t / 11.3 + 1.1) + 0.3 * math.sin(tau * t / 4.1 + 2.9))
        return dx, dy, roll

    def apply(self, rgb: np.ndarray, t: float) -> None:
        dx, dy, roll = self.pose(t)
        c1, s = math.cos(roll) - 1.0, math.sin(roll)
        # displacement d(p) = w(p) * (R p' + T - p'), p' = p - neck, sampled at p - d(p) (small
        # motion): d_x = c1 * w x' - s * w y' + dx * w,  d_y = s * w x' + c1 * w y' + dy * w
        mx, my = self._mx, self._my
        cv2.scaleAdd(self._a, -c1, self._x, mx)
        cv2.scaleAdd(self._b, s, mx, mx)
        cv2.scaleAdd(self._w, -dx, mx, mx)
        cv2.scaleAdd(self._a, -s, self._y, my)
        cv2.scaleAdd(self._b, -c1, my, my)
        cv2.scaleAdd(self._w, -dy, my, my)
        x0, y0, x1, y1 = self.box
        region = rgb[y0:y1, x0:x1]
        np.copyto(self._src, region)
        cv2.remap(self._src, self._mx, self._my, cv2.INTER_LINEAR, dst=region, borderMode=cv2.BORDER_REPLICATE)


class IdleMotion:
    """The idle pose of a still avatar as a function of time.

    ``IdleMotion(h, w)`` is breathing and sway alone; with ``face`` (:func:`face_geometry`) it
    blinks and moves its head too (:meth:`for_avatar` builds that).  :meth:`apply` modifies the
    eye and head regions of ``rgb`` in place and returns the warped frame in an internal buffer.
    """

    def __init__(self, height: int, width: int, *, sway_deg: float = 0.6, sway_period_s: float = 7.0,
                 breath_scale: float = 0.005, breath_lift_px: float = 1.2, breath_period_s: float = 4.3,
                 face: FaceGeometry | None = None, blink: bool = True, head_drift: float = 0.022,
                 head_roll_deg: float = 1.2, seed: int = 7) -> None:
        self.size = (int(width), int(height))
        self.pivot = (width / 2.0, height * 0.85)
        self.sway_deg = sway_deg
        self.sway_period_s = sway_period_s
        self.breath_scale = breath_scale
        self.breath_lift_px = breath_lift_px
        self.breath_period_s = breath_period_s
        self.face = face
        self.blinks = BlinkSchedule(seed) if face is not None and blink else None
        self._eyes = [_EyeBlink(e, height, width) for e in face.eyes] if self.blinks is not None else []
        self._head = (_HeadMotion(face, height, width, drift=head_drift, roll_deg=head_roll_deg)
                      if face is not None and (head_drift > 0 or head_roll_deg > 0) else None)
        self._out = np.empty((height, width, 3), np.uint8)

    @classmethod
    def for_avatar(cls, avatar, detect: bool = True, **kwargs) -> IdleMotion:  # noqa: ANN001 - Avatar
        """Blinks and head motion for a still avatar (eyes from its prepared face mesh, or, with
        ``detect=False`` or none kept, estimated from its mouth box)."""
        h, w = avatar.frames.shape[1:3]
        face = face_geometry(avatar) if detect else FaceGeometry.from_mouth_box(avatar.mouth_boxes[0])
        return cls(h, w, face=face, **kwargs)

    def matrix(self, t: float) -> np.ndarray:
        """The 2x3 affine pose of the whole frame (breathing, sway) at time ``t`` seconds."""
        breath = math.sin(2 * math.pi * t / self.breath_period_s)
        angle = self.sway_deg * math.sin(2 * math.pi * t / self.sway_period_s)
        m = cv2.getRotationMatrix2D(self.pivot, angle, 1.0 + self.breath_scale * breath)
        m[1, 2] -= self.breath_lift_px * breath
        return m

    def closure(self, t: float) -> float:
        """How shut the eyes are at ``t`` (0 open, 1 shut); 0 without a face."""
        return self.blinks.closure(t) if self.blinks is not None else 0.0

    def head_pose(self, t: float) -> tuple[float, float, float]:
        """The head's (dx px, dy px, roll rad) at ``t``; zeros without a face."""
        return self._head.pose(t) if self._head is not None else (0.0, 0.0, 0.0)

    def apply(self, rgb: np.ndarray, t: float) -> np.ndarray:
        """The frame at ``t`` (a view of an internal buffer the next call overwrites)."""
        c = self.closure(t)
        if c > 0.01:
            for eye in self._eyes:
                eye.apply(rgb, c)
        if self._head is not None:
            self._head.apply(rgb, t)
        cv2.warpAffine(rgb, self.matrix(t), self.size, dst=self._out, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT101)
        return self._out
