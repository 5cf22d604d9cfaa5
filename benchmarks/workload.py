"""The benchmark's photos: real pictures that packages ship, made camera-sized.

The sources are the five photos scikit-learn and scikit-image ship (a portrait with a face
among them). Each is upscaled to a camera resolution and given camera-like noise before being
saved as a quality-90 JPEG with 4:2:0 chroma subsampling, because an upscaled photo without
noise compresses to a fraction of a real camera file and would make decoding and transfer look
far cheaper than they are. Files are generated once and cached under `benchmarks/work/images`.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

JPEG_QUALITY = 90
# Noise a phone/compact camera leaves at moderate ISO: signal-dependent (shot) noise plus a
# floor (read noise), in 8-bit levels, slightly stronger in chroma than in luma.
SHOT_NOISE = 0.35  # std = sqrt(SHOT_NOISE * level) -> about 5.6 levels at mid-grey
READ_NOISE = 1.5
CHROMA_NOISE = 2.0
SEED = 20240601
_VERSION = 1  # bump when the recipe changes, so cached files are regenerated


@dataclass(frozen=True)
class Photo:
    """One benchmark JPEG on disk."""

    name: str  # e.g. "astronaut-12mp"
    source: str  # the package photo it was made from
    path: Path
    width: int
    height: int
    megapixels: int

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def read(self) -> bytes:
        return self.path.read_bytes()

    def base64(self) -> str:
        return base64.b64encode(self.read()).decode("ascii")


def source_photos() -> dict[str, np.ndarray]:
    """The real photos shipped by scikit-image and scikit-learn, as H x W x 3 uint8 RGB."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    return {
        "astronaut": data.astronaut(),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "china": china,
        "flower": flower,
    }


def camera_size(width: int, height: int, megapixels: int) -> tuple[int, int]:
    """The source's aspect ratio at `megapixels` million pixels, both sides even."""
    scale = (megapixels * 1e6 / (width * height)) ** 0.5
    return 2 * round(width * scale / 2), 2 * round(height * scale / 2)


def add_camera_noise(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shot + read noise on every channel plus a little chroma noise, clipped to uint8.

    Done in row bands so a 24 MP image never needs more than a few hundred MB of floats.
    """
    out = np.empty_like(rgb)
    band = 512
    for top in range(0, rgb.shape[0], band):
        levels = rgb[top : top + band].astype(np.float32)
        std = np.sqrt(SHOT_NOISE * levels + READ_NOISE**2)
        noisy = levels + std * rng.standard_normal(levels.shape, dtype=np.float32)
        noisy += CHROMA_NOISE * rng.standard_normal(levels.shape, dtype=np.float32)
        out[top : top + band] = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
    return out


def make_photo(source: np.ndarray, megapixels: int, rng: np.random.Generator) -> bytes:
    """`source` upscaled (Lanczos) to `megapixels`, with noise, as JPEG bytes."""
    height, width = source.shape[:2]
    size = camera_size(width, height, megapixels)
    big = np.asarray(Image.fromarray(source).resize(size, Image.Resampling.LANCZOS))
    noisy = add_camera_noise(big, rng)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, "JPEG", quality=JPEG_QUALITY, subsampling="4:2:0")
    return buffer.getvalue()


def build_photos(folder: Path, megapixels: tuple[int, ...] = (12, 24)) -> list[Photo]:
    """Every source photo at every size in `megapixels`, generated if not cached."""
    folder.mkdir(parents=True, exist_ok=True)
    photos: list[Photo] = []
    sources = source_photos()
    for mp in megapixels:
        for index, (name, rgb) in enumerate(sources.items()):
            path = folder / f"{name}-{mp}mp-v{_VERSION}.jpg"
            if not path.is_file():
                rng = np.random.default_rng([SEED, mp, index])
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(make_photo(rgb, mp, rng))
                tmp.replace(path)
            with Image.open(path) as image:
                width, height = image.size
            photos.append(Photo(f"{name}-{mp}mp", name, path, width, height, mp))
    return photos


def by_size(photos: list[Photo], megapixels: int) -> list[Photo]:
    return [p for p in photos if p.megapixels == megapixels]
