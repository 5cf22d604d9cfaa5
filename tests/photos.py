"""Real photos the packages ship, and the burst-like variants the cull and its signals are
tested on: blurred, shifted, darkened, brightened, written as JPEG with camera EXIF."""

from __future__ import annotations

import io
from datetime import datetime

import cv2
import numpy as np
from PIL import ExifTags, Image
from skimage import data as skdata
from sklearn.datasets import load_sample_images


def real_photos() -> dict[str, np.ndarray]:
    """Five unrelated scenes, RGB uint8."""
    china, flower = load_sample_images().images
    return {
        "astronaut": skdata.astronaut(),
        "chelsea": skdata.chelsea(),
        "coffee": skdata.coffee(),
        "china": china,
        "flower": flower,
    }


def scaled(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Every channel times `factor` (under 1 darkens, over 1 brightens and clips)."""
    return np.clip(rgb.astype(np.float32) * factor, 0, 255).astype(np.uint8)


def blurred(rgb: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), sigma)


def shifted(rgb: np.ndarray, fraction: float = 0.03) -> np.ndarray:
    """The camera moved by `fraction` of the width: same size, edge pixels repeated."""
    dx = max(1, round(rgb.shape[1] * fraction))
    return np.concatenate([rgb[:, dx:], np.repeat(rgb[:, -1:], dx, axis=1)], axis=1)


def jpeg(
    rgb: np.ndarray,
    *,
    captured_at: datetime | None = None,
    serial: str | None = None,
    model: str = "EOS R5",
    gps: bool = False,
    quality: int = 92,
) -> bytes:
    """JPEG bytes with DateTimeOriginal, SubSecTimeOriginal, OffsetTimeOriginal, make, model
    and BodySerialNumber written into its EXIF (when `captured_at` is given)."""
    exif = Image.Exif()
    if captured_at is not None:
        exif[ExifTags.Base.Make] = "Canon"
        exif[ExifTags.Base.Model] = model
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        sub[ExifTags.Base.DateTimeOriginal] = captured_at.strftime("%Y:%m:%d %H:%M:%S")
        sub[ExifTags.Base.SubsecTimeOriginal] = f"{captured_at.microsecond // 10_000:02d}"
        sub[ExifTags.Base.OffsetTimeOriginal] = "+02:00"
        if serial is not None:
            sub[ExifTags.Base.BodySerialNumber] = serial
    if gps:
        exif.get_ifd(ExifTags.IFD.GPSInfo).update(
            {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)}
        )
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality, exif=exif)
    return buffer.getvalue()
