"""Real photos the packages ship, the burst-like variants the cull and its signals are tested
on (blurred, shifted, darkened, brightened, written as JPEG with camera EXIF), and a shoot
made of them."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, timedelta

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


BURST_START = datetime(2024, 6, 1, 15, 0, 0, 100_000)
FRAME_INTERVAL = timedelta(milliseconds=400)


@dataclass(frozen=True)
class Shot:
    image_id: str
    data: bytes


def burst(prefix: str, photo: np.ndarray, start: datetime, serial: str) -> list[Shot]:
    """Five frames 0.4 s apart: sharp, blurred, shifted, darker, and an exact copy of the
    sharp file (the same bytes, so the same EXIF moment)."""
    frames = {
        "1-sharp": photo,
        "2-blurred": blurred(photo),
        "3-shifted": shifted(photo),
        "4-darker": scaled(photo, 0.6),
    }
    shots = [
        Shot(f"{prefix}{name}", jpeg(rgb, captured_at=start + k * FRAME_INTERVAL, serial=serial))
        for k, (name, rgb) in enumerate(frames.items())
    ]
    return [*shots, Shot(f"{prefix}5-copy", shots[0].data)]


def shoot() -> list[Shot]:
    """Two bursts from two bodies, a photo from the first body minutes later, a similar pair
    without EXIF (a photo and its shifted copy), and an unrelated photo without EXIF."""
    photos = real_photos()
    return [
        *burst("a", photos["astronaut"], BURST_START, serial="SN-A"),
        *burst("b", photos["chelsea"], BURST_START + timedelta(minutes=3), serial="SN-B"),
        Shot(
            "c-coffee",
            jpeg(photos["coffee"], captured_at=BURST_START + timedelta(minutes=9), serial="SN-A"),
        ),
        Shot("d1-flower", jpeg(photos["flower"])),
        Shot("d2-flower-shifted", jpeg(shifted(photos["flower"], 0.02))),
        Shot("e-china", jpeg(photos["china"])),
    ]
