"""A still portrait should not look frozen: a slow, tiny sway and breathing of the whole frame.

Video avatars loop their own footage (``avatar_frame_for``); a single image gets this instead —
one small affine warp per frame (rotation about a pivot low in the frame, like a head on a neck,
plus a breathing scale and lift), a millimetre of motion, periods of several seconds, so it reads
as alive without drawing the eye.  It is a pure function of time: every session at the same
instant gets the same pose, and a test can reproduce any frame.  Cost: one ``cv2.warpAffine``
(about 1 ms at 512x512).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["IdleMotion"]


class IdleMotion:
    def __init__(self, height: int, width: int, *, sway_deg: float = 0.6, sway_period_s: float = 7.0,
                 breath_scale: float = 0.005, breath_lift_px: float = 1.2, breath_period_s: float = 4.3) -> None:
        self.size = (int(width), int(height))
        self.pivot = (width / 2.0, height * 0.85)
        self.sway_deg = sway_deg
        self.sway_period_s = sway_period_s
        self.breath_scale = breath_scale
        self.breath_lift_px = breath_lift_px
        self.breath_period_s = breath_period_s
        self._out = np.empty((height, width, 3), np.uint8)

    def matrix(self, t: float) -> np.ndarray:
        """The 2x3 affine pose at time ``t`` seconds."""
        breath = math.sin(2 * math.pi * t / self.breath_period_s)
        angle = self.sway_deg * math.sin(2 * math.pi * t / self.sway_period_s)
        m = cv2.getRotationMatrix2D(self.pivot, angle, 1.0 + self.breath_scale * breath)
        m[1, 2] -= self.breath_lift_px * breath
        return m

    def apply(self, rgb: np.ndarray, t: float) -> np.ndarray:
        """The warped frame (a view of an internal buffer the next call overwrites)."""
        cv2.warpAffine(rgb, self.matrix(t), self.size, dst=self._out, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REFLECT101)
        return self._out
