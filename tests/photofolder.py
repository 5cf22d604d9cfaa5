"""A small event folder on disk: real photos the packages ship, variants of them, and bad files."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageFilter
from skimage import data as skdata
from sklearn.datasets import load_sample_images

pillow_heif.register_heif_opener()


@dataclass(frozen=True)
class EventFolder:
    root: Path
    good: list[str]  # relative paths of photos that analyse
    bad: dict[str, str]  # relative path -> what is wrong with it
    ignored: list[str]  # files the scan must not pick up

    @property
    def photos(self) -> list[str]:
        return sorted([*self.good, *self.bad])


def _save(image: Image.Image, path: Path, image_format: str, **params: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    path.write_bytes(buffer.getvalue())


def _small(rgb: np.ndarray, long_side: int = 480) -> Image.Image:
    image = Image.fromarray(rgb)
    image.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    return image


def make_event_folder(root: Path) -> EventFolder:
    """Five scenes (one a three-frame "burst": sharp, smaller, blurred), an exact copy, a HEIC,
    a TIFF in a subfolder; a truncated JPEG, a 0-byte file and a text file named like a photo;
    and files the scan skips (a .txt, a hidden photo)."""
    china, flower = load_sample_images().images
    astronaut = _small(skdata.astronaut())
    _save(astronaut, root / "IMG_0001.jpg", "JPEG", quality=92)
    _save(astronaut.resize((360, 360)), root / "IMG_0002.jpg", "JPEG", quality=92)
    _save(astronaut.filter(ImageFilter.GaussianBlur(4)), root / "IMG_0003.jpg", "JPEG", quality=92)
    _save(_small(skdata.coffee()), root / "day2" / "coffee.png", "PNG")
    _save(_small(skdata.chelsea()), root / "day2" / "chelsea.heic", "HEIF", quality=90)
    _save(_small(china), root / "day2" / "nested" / "china.tiff", "TIFF", compression="tiff_lzw")
    _save(_small(flower), root / "flower.jpeg", "JPEG", quality=90)
    (root / "flower-copy.jpeg").write_bytes((root / "flower.jpeg").read_bytes())

    corrupt = (root / "IMG_0001.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(corrupt[: len(corrupt) // 3])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.jpg").write_text("Shot list: ceremony 14:00, speeches 18:30\n")

    (root / "readme.txt").write_text("not a photo\n")
    _save(astronaut, root / ".hidden.jpg", "JPEG")
    return EventFolder(
        root=root,
        good=[
            "IMG_0001.jpg",
            "IMG_0002.jpg",
            "IMG_0003.jpg",
            "day2/chelsea.heic",
            "day2/coffee.png",
            "day2/nested/china.tiff",
            "flower-copy.jpeg",
            "flower.jpeg",
        ],
        bad={"broken.jpg": "truncated", "empty.jpg": "0 bytes", "notes.jpg": "text"},
        ignored=["readme.txt", ".hidden.jpg"],
    )
