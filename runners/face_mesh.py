"""What MediaPipe's face mesh and iris models tell about one face: key points, pose, eyes.

Crops follow MediaPipe's own graphs: the mesh sees a 192 x 192 square of 1.5x the detection
box, rotated so the eyes lie level (face_detection_front_detection_to_roi); each eye is a 64 x 64
square of 2.3x its corner-to-corner width (iris_landmark_landmarks_to_roi), the image-right eye
mirrored because the iris model was trained on the other one.

Eye openness is the eye aspect ratio (Soukupova & Cech 2016) of the iris model's eye contour:
the mean lid gap over the middle three contour positions divided by the corner distance,
divided by `EAR_WIDE_OPEN` and clipped to 0-1. The iris model's contour, not the mesh's, because
the mesh keeps lowered lids looking open (t1.jpg: a woman looking down scores 0.31 on the mesh,
0.09-0.16 on the iris contour). `OPEN_THRESHOLD` is the midpoint, on a log scale, of the real
faces measured in benchmarks/FACES.md: eyes open at EAR 0.26-0.40, lids lowered or shut at
0.07-0.17.

Head pose comes from the mesh's own 3D points: the cheek-to-cheek line (234 -> 454) and the
forehead-to-chin line (10 -> 152) span the face plane, their cross product is its normal.
yaw > 0: the face turns towards the image's right; pitch > 0: it looks up; roll > 0: the head
leans clockwise as seen in the image. Degrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

MESH_SIZE = 192
IRIS_SIZE = 64
MESH_ROI_SCALE = 1.5
EYE_ROI_SCALE = 2.3

# Mesh indices (MediaPipe's canonical face model; "right" is the subject's right).
RIGHT_EYE_CORNERS = (33, 133)  # outer, inner: the eye on the image's left
LEFT_EYE_CORNERS = (263, 362)
NOSE_TIP = 1
MOUTH_RIGHT, MOUTH_LEFT = 61, 291
CHEEK_RIGHT, CHEEK_LEFT = 234, 454
FOREHEAD, CHIN = 10, 152
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip

# The iris model's 71 eye points start with the eye contour: 9 lower-lid points from the outer
# to the inner corner, then the 7 upper-lid points between them, in the same direction.
LOWER_LID = slice(0, 9)
UPPER_LID = slice(9, 16)
GAP_POSITIONS = (3, 4, 5)  # lower-lid positions under the iris (upper lid index = this - 1)

EAR_WIDE_OPEN = 0.35  # eye aspect ratio of a wide-open eye (astronaut: 0.36-0.39)
OPEN_THRESHOLD = 0.6  # openness: EAR 0.21, between 0.17 (lids down) and 0.26 (open)
MIN_EYE_WIDTH_PX = 8.0  # corner to corner at the analysis size; below, openness is a guess
MAX_EYES_YAW = 45.0  # beyond this the far eye is hidden and the near one foreshortened
# The mesh's own face score: real faces score 0.999+, the detector's false candidates up to
# 0.96 (a blurred background next to a face), most under 0.07.
MIN_PRESENCE = 0.98


def roi_matrix(centre: tuple[float, float], size: float, angle: float, out: int) -> np.ndarray:
    """2 x 3 affine from an out x out crop to image pixels: a square of `size` image pixels
    around `centre`, rotated by `angle` radians."""
    c, s = math.cos(angle), math.sin(angle)
    k = size / out
    matrix = np.array([[c * k, -s * k, 0.0], [s * k, c * k, 0.0]])
    matrix[:, 2] = np.asarray(centre) - matrix[:, :2] @ np.array([out / 2, out / 2])
    return matrix


def crop(image: np.ndarray, matrix: np.ndarray, out: int) -> np.ndarray:
    """The out x out crop `matrix` describes; outside the image is black, as in MediaPipe."""
    return cv2.warpAffine(
        image,
        matrix,
        (out, out),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
    )


def to_image(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points[:, :2] @ matrix[:, :2].T + matrix[:, 2]


def face_roi(box: np.ndarray, eyes: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """The mesh crop of a detected face: `eyes` = (image-left eye, image-right eye) centres,
    or None (upright)."""
    angle = 0.0
    if eyes is not None:
        (x0, y0), (x1, y1) = eyes
        angle = math.atan2(y1 - y0, x1 - x0)
    centre = (box[0] + box[2] / 2, box[1] + box[3] / 2)
    return roi_matrix(centre, max(box[2], box[3]) * MESH_ROI_SCALE, angle, MESH_SIZE)


def mesh_points(raw: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The mesh's 468 x 3 output (crop pixels) in image pixels; z scaled like x and y."""
    points = raw.reshape(468, 3)
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    return np.column_stack([to_image(matrix, points), points[:, 2] * scale])


def eye_rois(points: np.ndarray) -> list[np.ndarray]:
    """Crops of the image-left eye, then the image-right eye (to be mirrored)."""
    rois = []
    for outer, inner in (RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS):
        a, b = points[outer, :2], points[inner, :2]
        if outer == LEFT_EYE_CORNERS[0]:
            a, b = b, a  # left to right in the image for both eyes before mirroring
        centre = (a + b) / 2
        width = float(np.linalg.norm(b - a))
        angle = math.atan2(b[1] - a[1], b[0] - a[0])
        rois.append(roi_matrix(tuple(centre), width * EYE_ROI_SCALE, angle, IRIS_SIZE))
    return rois


def eye_crops(image: np.ndarray, rois: list[np.ndarray]) -> list[np.ndarray]:
    left, right = (crop(image, m, IRIS_SIZE) for m in rois)
    return [left, right[:, ::-1]]


def eye_aspect_ratio(contour: np.ndarray) -> float:
    """EAR of one eye from the iris model's 71 x 3 output (crop pixels; a ratio, so the same
    in the mirrored crop)."""
    points = contour.reshape(-1, 3)[:, :2]
    lower, upper = points[LOWER_LID], points[UPPER_LID]
    width = float(np.linalg.norm(lower[-1] - lower[0]))
    if width <= 0:
        return 0.0
    gaps = [float(np.linalg.norm(upper[i - 1] - lower[i])) for i in GAP_POSITIONS]
    return float(np.mean(gaps)) / width


@dataclass(frozen=True)
class Pose:
    yaw: float
    pitch: float
    roll: float


def head_pose(points: np.ndarray) -> Pose:
    across = points[CHEEK_LEFT] - points[CHEEK_RIGHT]
    down = points[CHIN] - points[FOREHEAD]
    ex = across / (np.linalg.norm(across) or 1.0)
    ey = down - ex * float(down @ ex)
    ey /= np.linalg.norm(ey) or 1.0
    ez = np.cross(ex, ey)  # into the image for a frontal face (x right, y down, z away)
    return Pose(
        yaw=round(math.degrees(math.atan2(-ez[0], ez[2])), 1),
        pitch=round(math.degrees(math.atan2(ez[1], ez[2])), 1),
        roll=round(math.degrees(math.atan2(ex[1], ex[0])), 1),
    )


def five_points(points: np.ndarray) -> dict[str, list[float]]:
    """Eye centres (mean of the corners), nose tip and mouth corners, the subject's left and
    right (the subject's left eye is on the image's right), as DeepFace names them."""

    def centre(indices: tuple[int, int]) -> np.ndarray:
        return points[list(indices), :2].mean(axis=0)

    named = {
        "left_eye": centre(LEFT_EYE_CORNERS),
        "right_eye": centre(RIGHT_EYE_CORNERS),
        "nose": points[NOSE_TIP, :2],
        "mouth_left": points[MOUTH_LEFT, :2],
        "mouth_right": points[MOUTH_RIGHT, :2],
    }
    return {k: [round(float(v[0]), 1), round(float(v[1]), 1)] for k, v in named.items()}


def eyes_state(ears: tuple[float, float] | None, points: np.ndarray, pose: Pose) -> dict[str, Any]:
    """Per-eye openness (image-left eye = the subject's right) and whether the eyes are open;
    null where it cannot be judged: a strong profile, or eyes too small to measure."""
    if ears is None or abs(pose.yaw) > MAX_EYES_YAW:
        return {"left_openness": None, "right_openness": None, "open": None}
    openness: dict[str, float | None] = {}
    for name, corners, ear in (
        ("right_openness", RIGHT_EYE_CORNERS, ears[0]),
        ("left_openness", LEFT_EYE_CORNERS, ears[1]),
    ):
        a, b = points[corners[0], :2], points[corners[1], :2]
        small = float(np.linalg.norm(a - b)) < MIN_EYE_WIDTH_PX
        openness[name] = None if small else round(min(1.0, ear / EAR_WIDE_OPEN), 3)
    judged = [v for v in openness.values() if v is not None]
    is_open = None if not judged else bool(float(np.mean(judged)) >= OPEN_THRESHOLD)
    return {**openness, "open": is_open}


def face_oval(points: np.ndarray) -> np.ndarray:
    return points[list(FACE_OVAL), :2]
