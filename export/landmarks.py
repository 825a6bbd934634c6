"""Face landmarks for avatar preparation: mediapipe's face mesh (478 points) in pixel units.

mediapipe 0.10.14 is the last release that ships the face-mesh model inside the wheel (DESIGN.md),
so the legacy ``mp.solutions.face_mesh`` API is used.  mediapipe is imported lazily: the index
constants below are needed by torch-free code that never detects anything.

Only the mouth, nose base and chin points matter to lipstream; the index sets are named here so the
rest of the code never spells a raw mesh index.
"""

from __future__ import annotations

import logging
from types import TracebackType

import numpy as np

log = logging.getLogger(__name__)

N_LANDMARKS = 478
MIN_FACE_HEIGHT_PX = 60  # forehead (10) to chin (152); below this the mouth is a few pixels wide

# Mesh indices (canonical mediapipe face mesh topology), each lip contour from the image-left
# mouth corner to the image-right one.
MOUTH_CORNERS = (61, 291)  # outer corners
UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
INNER_LIP_MID = (13, 14)  # the upper / lower inner-lip midpoints: the "lip gap" pair
SUBNASALE = 2  # base of the nose, between the nostrils
CHIN = 152
FOREHEAD = 10


class FaceDetectionError(ValueError):
    """No usable face in an image (the message says why)."""


def face_height(landmarks: np.ndarray) -> float:
    """Forehead-to-chin distance in pixels: the size measure used for the minimum-size check."""
    return float(np.linalg.norm(landmarks[CHIN] - landmarks[FOREHEAD]))


def check_face_size(landmarks: np.ndarray, min_height_px: float = MIN_FACE_HEIGHT_PX) -> None:
    """Raise if the face is too small to give a mouth crop with any detail."""
    h = face_height(landmarks)
    if h < min_height_px:
        raise FaceDetectionError(
            f"the face is too small: {h:.0f} px from forehead to chin, the minimum is "
            f"{min_height_px:.0f} px; use a larger image or crop closer to the face")


class FaceMesh:
    """A reusable mediapipe face-mesh detector returning the largest face's landmarks in pixels.

    ``video=True`` lets mediapipe track between consecutive frames (steadier and faster than
    re-detecting every frame); use one instance per video.  Use as a context manager or call
    :meth:`close`, which frees mediapipe's graph.
    """

    def __init__(self, *, video: bool = False, max_faces: int = 4, min_confidence: float = 0.5) -> None:
        import mediapipe as mp  # lazy: heavy import, only needed when detecting

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not video, max_num_faces=max_faces, refine_landmarks=True,
            min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)
        self._warned_many = False

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """(478, 2) float32 pixel (x, y) of the largest face in an RGB uint8 image, or None."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        faces = result.multi_face_landmarks
        if not faces:
            return None
        arrays = [np.array([(p.x * w, p.y * h) for p in f.landmark], np.float32) for f in faces]
        if len(arrays) > 1:
            if not self._warned_many:
                log.warning("%d faces found; using the largest", len(arrays))
                self._warned_many = True
            areas = [np.prod(a.max(0) - a.min(0)) for a in arrays]
            return arrays[int(np.argmax(areas))]
        return arrays[0]

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceMesh:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def detect_landmarks(rgb: np.ndarray, *, min_height_px: float = MIN_FACE_HEIGHT_PX) -> np.ndarray:
    """Landmarks of the largest face in one still image; raises FaceDetectionError if none/too small."""
    with FaceMesh() as mesh:
        lm = mesh.detect(rgb)
    if lm is None:
        raise FaceDetectionError("no face found in the image; use a frontal, well-lit portrait")
    check_face_size(lm, min_height_px)
    return lm
