"""Real photos for the face evaluation, the face-sharpness calibration and the face tests.

With faces: `skimage.data.astronaut()` (one face, eyes open) and `t1.jpg` (six people) from the
source distribution of insightface 0.7.3 on PyPI, fetched once with `pip download --no-deps`
into a cache folder. Without: the four mask photos beside t1.jpg, and the photos scikit-image
and scikit-learn ship that show no person (chelsea is a cat).
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "insightface"
INSIGHTFACE = "insightface==0.7.3"
SDIST = "insightface-0.7.3.tar.gz"
IMAGES = "insightface-0.7.3/insightface/data/images/"
GROUP = "t1.jpg"
MASKS = ("mask_black.jpg", "mask_blue.jpg", "mask_green.jpg", "mask_white.jpg")
# astronaut() is 512 x 512 with Eileen Collins' face at about x 172-278, y 66-172
ASTRONAUT_FACE = (172, 66, 106, 106)

# t1.jpg's six faces (x, y, w, h) from left to right, checked by eye, and whether each person's
# eyes look open in the photo (two women look down at their cards, one man laughs with his
# eyes screwed up).
GROUP_FACES = (
    ((55, 275, 108, 108), False),
    ((263, 167, 99, 99), True),
    ((454, 291, 121, 121), True),
    ((720, 351, 123, 123), False),
    ((864, 64, 149, 149), True),
    ((1117, 291, 109, 109), False),
)


class Unavailable(RuntimeError):
    """The package index could not be reached and the photos are not cached."""


def insightface_sdist(cache: Path = CACHE) -> Path:
    """The insightface sdist in `cache`, downloaded by pip the first time. Only insightface
    itself is fetched as source; its build requirements come as wheels (metadata needs them)."""
    target = cache / SDIST
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "insightface",
        "--dest", str(cache), INSIGHTFACE,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not target.is_file():
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise Unavailable(f"pip download {INSIGHTFACE} failed: {lines[-1] if lines else '?'}")
    return target


def insightface_photos(cache: Path = CACHE) -> dict[str, np.ndarray]:
    """t1.jpg and the mask photos as H x W x 3 uint8 RGB, by file name."""
    photos = {}
    with tarfile.open(insightface_sdist(cache)) as archive:
        for name in (GROUP, *MASKS):
            member = archive.extractfile(IMAGES + name)
            assert member is not None, name
            photos[name] = np.asarray(Image.open(io.BytesIO(member.read())).convert("RGB"))
    return photos


def photos_without_people() -> dict[str, np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return {"china": china, "flower": flower, "coffee": data.coffee(), "chelsea": data.chelsea()}


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def iou(a: Any, b: Any) -> float:
    """Intersection over union of two boxes, each (x, y, w, h) or a {x, y, w, h} region."""
    ax, ay, aw, ah = (a["x"], a["y"], a["w"], a["h"]) if isinstance(a, dict) else a
    bx, by, bw, bh = (b["x"], b["y"], b["w"], b["h"]) if isinstance(b, dict) else b
    w = min(ax + aw, bx + bw) - max(ax, bx)
    h = min(ay + ah, by + bh) - max(ay, by)
    inter = max(0, w) * max(0, h)
    return inter / (aw * ah + bw * bh - inter)
