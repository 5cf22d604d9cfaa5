"""BlazeFace full-range (MediaPipe) over a whole photo: tiles, anchor decoding, NMS.

The model sees 192 x 192 pixels. With the astronaut's face pasted at every size it finds faces
from about 13 px (score >= 0.6, IoU >= 0.8; at random places on a real photo about 3 in 4 at
14 px, all from 19 px) to about 110 px; above 120 px the full-range model, trained on faces far
from the camera, loses them. One letterboxed view of the photo covers faces of about 7-57 % of
its long side; the plan adds

- the photo shrunk to `SHRUNK` of the input (faces of 11-100 % of the long side: close-ups), and
- tiles of `TILE_FRACTION` (27 %) of the long side, overlapping by `TILE_OVERLAP` (more than
  the smallest face the whole view finds), so a face of 2 % of the long side is 14 px in its
  tile and one of 3 % is 21 px: 17 views for a 3:2 photo, 27 for a square one. A tile is never
  enlarged (below 192 px it would add no detail), so small photos get the two whole views only.

Detections from every view are mapped to photo pixels and merged by one NMS. A tile's detection
that touches an inner tile edge is dropped: the overlap guarantees that face lies whole in a
neighbouring tile, and the cut one would survive NMS as a second, smaller box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

INPUT = 192
# The SsdAnchorsCalculator options of MediaPipe's face_detection_full_range graph: one layer of
# stride 4, one anchor per cell of fixed size 1 (48 x 48 = 2304 anchors).
STRIDE = 4
MIN_SCORE = 0.5  # MediaPipe's min_score_thresh for the full-range detector
# Small faces score lower (about 3 in 4 of 2 % faces reach 0.5, 9 in 10 reach 0.3): below
# SMALL_FACE_PX (photo px) a candidate needs SMALL_MIN_SCORE; the face mesh confirms each one.
SMALL_MIN_SCORE = 0.3
SMALL_FACE_PX = 40.0
MIN_LOGIT = math.log(SMALL_MIN_SCORE / (1 - SMALL_MIN_SCORE))
NMS_IOU = 0.3  # MediaPipe's min_suppression_threshold
SCORE_CLIP = 100.0  # MediaPipe's score_clipping_thresh (logits)
NUM_KEYPOINTS = 6  # right eye, left eye, nose tip, mouth centre, right ear, left ear
TILE_FRACTION = 0.27
TILE_OVERLAP = 0.07  # of the long side: more than the 6.8 % the whole view starts at
SHRUNK = 0.58  # the close-up view: the photo's long side as a fraction of the input
EDGE_MARGIN = 2.0  # input px: a box this close to an inner tile edge is cut by it
MAX_PER_VIEW = 64  # best candidates kept per view before NMS: bounded work on any photo


def anchor_centres(size: int = INPUT, stride: int = STRIDE) -> np.ndarray:
    """Anchor centres (x, y) in input pixels, in MediaPipe's order (row by row)."""
    centres = (np.arange(size // stride, dtype=np.float64) + 0.5) * stride
    y, x = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([x.ravel(), y.ravel()], axis=1)


ANCHORS = anchor_centres()


@dataclass(frozen=True)
class Detection:
    """One face in photo pixels: box (x, y, w, h), score 0-1 and six key points (x, y)."""

    box: np.ndarray
    score: float
    keypoints: np.ndarray  # 6 x 2


@dataclass(frozen=True)
class View:
    """A square window of the photo fed to the model: photo px = offset + input px * scale."""

    x: float
    y: float
    scale: float
    inner_edges: tuple[bool, bool, bool, bool]  # left, top, right, bottom cut through the photo


def plan_views(width: int, height: int) -> list[View]:
    """The whole photo letterboxed, the photo shrunk (close-ups), and the overlapping tiles."""
    long_side = max(width, height)
    views = [
        View(0.0, 0.0, long_side / INPUT, (False,) * 4),
        View(0.0, 0.0, long_side / (INPUT * SHRUNK), (False,) * 4),
    ]
    tile = max(TILE_FRACTION * long_side, float(INPUT))  # never enlarged: no detail to gain
    if tile >= long_side:
        return views
    step = tile - TILE_OVERLAP * long_side

    def starts(extent: int) -> list[float]:
        if extent <= tile:
            return [0.0]
        count = math.ceil((extent - tile) / step) + 1
        return [float(round(i * (extent - tile) / (count - 1))) for i in range(count)]

    xs, ys = starts(width), starts(height)
    for y in ys:
        for x in xs:
            edges = (x > 0, y > 0, x + tile < width - 1, y + tile < height - 1)
            views.append(View(x, y, tile / INPUT, edges))
    return views


def view_inputs(image: np.ndarray, views: list[View]) -> np.ndarray:
    """N x 192 x 192 x 3 uint8, each view's input; outside the photo is black, as MediaPipe
    pads. The photo is resampled once per view scale, finest first, each from the one before:
    a linear filter for the tiles (at most 2x smaller than the analysis size the API sends;
    MediaPipe's own image-to-tensor step is linear), area filters below that."""
    height, width = image.shape[:2]
    resampled: dict[float, np.ndarray] = {}
    source, source_scale = image, 1.0
    for scale in sorted({view.scale for view in views}):
        size = (max(1, round(width / scale)), max(1, round(height / scale)))
        filter_ = cv2.INTER_AREA if scale / source_scale >= 2 else cv2.INTER_LINEAR
        resampled[scale] = source = cv2.resize(source, size, interpolation=filter_)
        source_scale = scale
    inputs = np.zeros((len(views), INPUT, INPUT, 3), np.uint8)
    for canvas, view in zip(inputs, views, strict=True):
        x0, y0 = round(view.x / view.scale), round(view.y / view.scale)
        window = resampled[view.scale][y0 : y0 + INPUT, x0 : x0 + INPUT]
        canvas[: window.shape[0], : window.shape[1]] = window
    return inputs


def view_detections(regressors: np.ndarray, logits: np.ndarray, view: View) -> list[Detection]:
    """One view's raw outputs -> its confident detections in photo pixels, decoded as
    MediaPipe's TensorsToDetectionsCalculator decodes them (fixed-size anchors, offsets in
    input pixels); only candidates past the score threshold are decoded."""
    logits = np.clip(logits, -SCORE_CLIP, SCORE_CLIP)
    keep = np.flatnonzero(logits >= MIN_LOGIT)
    keep = keep[np.argsort(-logits[keep])][:MAX_PER_VIEW]
    scores = 1.0 / (1.0 + np.exp(-logits[keep].astype(np.float64)))
    raw = regressors[keep].astype(np.float64)
    raw[:, 0:2] += ANCHORS[keep]
    raw[:, 4::2] += ANCHORS[keep, :1]
    raw[:, 5::2] += ANCHORS[keep, 1:]
    left, top, right, bottom = view.inner_edges
    found = []
    for (cx, cy, w, h), points, score in zip(raw[:, :4], raw[:, 4:], scores, strict=True):
        if score < MIN_SCORE and max(w, h) * view.scale >= SMALL_FACE_PX:
            continue
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        if (
            (left and x0 < EDGE_MARGIN)
            or (top and y0 < EDGE_MARGIN)
            or (right and x1 > INPUT - EDGE_MARGIN)
            or (bottom and y1 > INPUT - EDGE_MARGIN)
        ):
            continue
        box = np.array([x0, y0, w, h]) * view.scale + (view.x, view.y, 0.0, 0.0)
        keypoints = points.reshape(NUM_KEYPOINTS, 2) * view.scale + (view.x, view.y)
        found.append(Detection(box, float(score), keypoints))
    return found


def merge(detections: list[Detection], width: int, height: int) -> list[Detection]:
    """One box per face across views (NMS, best score first), clipped to the photo, and only
    boxes that keep a real part of the photo."""
    if not detections:
        return []
    boxes = [d.box.tolist() for d in detections]
    kept = cv2.dnn.NMSBoxes(boxes, [d.score for d in detections], SMALL_MIN_SCORE, NMS_IOU)
    out = []
    for i in np.asarray(kept, dtype=int).reshape(-1):
        d = detections[i]
        x0, y0 = max(0.0, d.box[0]), max(0.0, d.box[1])
        x1 = min(float(width), d.box[0] + d.box[2])
        y1 = min(float(height), d.box[1] + d.box[3])
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        out.append(d)
    return sorted(out, key=lambda d: -d.score)


def detect(image: np.ndarray, model: Any) -> list[Detection]:
    """Every face in an H x W x 3 uint8 RGB image, best first, boxes in its pixels.
    `model` is the compiled detector taking N x 192 x 192 x 3 uint8 images."""
    height, width = image.shape[:2]
    views = plan_views(width, height)
    regressors, logits = model(view_inputs(image, views)).values()
    # The graph's reshape keeps a leading 1: N views come back as 1 x N*2304 x 16.
    regressors = regressors.reshape(len(views), len(ANCHORS), -1)
    logits = logits.reshape(len(views), len(ANCHORS))
    found: list[Detection] = []
    for view, view_regressors, view_logits in zip(views, regressors, logits, strict=True):
        found += view_detections(view_regressors, view_logits, view)
    return merge(found, width, height)
