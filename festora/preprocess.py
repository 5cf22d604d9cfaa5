"""Each model's input, derived from ONE decoded RGB uint8 array (H x W x 3).

The API service decodes an image once and sends runners these small arrays, never the photo:
a runner process receives 150-600 KB per image instead of megapixels. Each function matches
the resize the model was evaluated with, so a runner sees what its reference pipeline sees:

- `clip_input`: transformers' CLIPImageProcessor (shortest side to its crop size, 224 by
  default, bicubic with antialias, centre crop). Pillow's bicubic matches its torchvision
  resize within 1 grey level; the remaining normalisation happens in the runner with the
  stored processor config.
- `nima_input`: pyiqa's NIMA eval transform (shortest side to 299, bilinear with antialias,
  centre crop 299), quantised to uint8.
- `brisque_input`: long side reduced to BRISQUE_LONG_SIDE (768 px, area filter). The
  package's SVM was trained on LIVE images (at most 768 px wide), BRISQUE changes with scale
  (astronaut: 10.8 at 512 px, 41 at 1024 px), and 768 x 512 costs ~0.25 s instead of seconds.
  Smaller images are left as they are: upscaling would invent smoothness.
- `face_input`: long side reduced to FACE_LONG_SIDE (1280 px) for `FaceAnalyzer.analyze`.
  The detector tiles it (a tile is 27 % of the long side, 346 px here, seen at 192 px), and
  the mesh, iris, emotion and sharpness crops are cut from it: at 1280 px a face of 2 % of the
  long side is 26 px, and faces from 48 px (3.75 %) get a sharpness. 1280 x 853 x 3 is 3.3 MB
  per image across the process boundary. Returns `(array, scale)` with scale = array size /
  `rgb` size (<= 1): `scale_faces` maps what the runner returns back (and clips).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PIL import Image

CLIP_SIZE = 224
NIMA_SIZE = 299
BRISQUE_LONG_SIDE = 768
FACE_LONG_SIDE = 1280

# Beyond this aspect ratio, cut the long side down before the shortest-side resize: the centre
# crop keeps only a short x short square anyway, and a 1 x 50000 strip would otherwise be
# resized to 224 x 11 million pixels.
_MAX_ASPECT = 8


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy array, got {getattr(rgb, 'dtype', type(rgb))}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"expected an H x W x 3 RGB array, got shape {rgb.shape}")


def _limit_aspect(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    short = min(h, w)
    keep = short * _MAX_ASPECT
    if h > keep:
        top = (h - keep) // 2
        return rgb[top : top + keep]
    if w > keep:
        left = (w - keep) // 2
        return rgb[:, left : left + keep]
    return rgb


def _shortest_side_to(rgb: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
    """Resize so the short side is `size`; long side floored as transformers/torchvision do."""
    h, w = rgb.shape[:2]
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) == (w, h):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((new_w, new_h), resample))


def _centre_crop(rgb: np.ndarray, size: int, rounded: bool) -> np.ndarray:
    """Centre crop; transformers floors the offset, torchvision rounds it."""
    h, w = rgb.shape[:2]
    top = round((h - size) / 2.0) if rounded else int((h - size) / 2.0)
    left = round((w - size) / 2.0) if rounded else int((w - size) / 2.0)
    return rgb[top : top + size, left : left + size].copy()  # contiguous and writable


def _long_side_at_most(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Shrink (never enlarge) so the long side is at most `size`; returns (array, scale)
    with scale = new long side / old long side."""
    h, w = rgb.shape[:2]
    long_side = max(h, w)
    if long_side <= size:
        return rgb, 1.0
    ratio = size / long_side
    new_w, new_h = max(1, round(w * ratio)), max(1, round(h * ratio))
    small = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
    return small, max(new_w, new_h) / long_side


def clip_input(rgb: np.ndarray, size: int = CLIP_SIZE) -> np.ndarray:
    """size x size x 3 uint8 for `CLIPEncoder.encode` (stack several with np.stack); `size` is
    the runner's `input_size`, its processor's crop size (224, or 336 for ViT-L/14-336)."""
    _check_rgb(rgb)
    resized = _shortest_side_to(_limit_aspect(rgb), size, Image.Resampling.BICUBIC)
    return _centre_crop(resized, size, rounded=False)


def nima_input(rgb: np.ndarray) -> np.ndarray:
    """299 x 299 x 3 uint8 for `NimaTechnical.score` / `NimaAesthetic.score`."""
    _check_rgb(rgb)
    resized = _shortest_side_to(_limit_aspect(rgb), NIMA_SIZE, Image.Resampling.BILINEAR)
    return _centre_crop(resized, NIMA_SIZE, rounded=True)


def brisque_input(rgb: np.ndarray) -> np.ndarray:
    """The image with its long side at most BRISQUE_LONG_SIDE, for `Brisque.score`."""
    _check_rgb(rgb)
    return _long_side_at_most(rgb, BRISQUE_LONG_SIDE)[0]


def face_input(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """`(array, scale)`: the image with its long side at most FACE_LONG_SIDE, and
    scale = array size / `rgb` size (1.0 when not reduced). Send the array to
    `FaceAnalyzer.analyze`; `scale_faces` maps its faces back into the photo."""
    _check_rgb(rgb)
    return _long_side_at_most(rgb, FACE_LONG_SIDE)


def scale_faces(
    faces: list[dict[str, Any]], scale: float, width: int, height: int
) -> list[dict[str, Any]]:
    """Faces from `FaceAnalyzer.analyze` with each region and landmark mapped into a `width` x
    `height` image: divided by `scale` (analysed size / that image's size), rounded, clipped
    to it. Everything else about a face does not depend on the image's size."""
    out = []
    for face in faces:
        r = face["region"]
        x = min(max(0, round(r["x"] / scale)), width - 1)
        y = min(max(0, round(r["y"] / scale)), height - 1)
        w = max(1, min(round(r["w"] / scale), width - x))
        h = max(1, min(round(r["h"] / scale), height - y))
        mapped = {**face, "region": {"x": x, "y": y, "w": w, "h": h}}
        if face.get("landmarks") is not None:
            mapped["landmarks"] = {
                name: [
                    round(min(max(0.0, px / scale), width - 1.0), 1),
                    round(min(max(0.0, py / scale), height - 1.0), 1),
                ]
                for name, (px, py) in face["landmarks"].items()
            }
        out.append(mapped)
    return out
