"""Capture metadata from the EXIF tags `festora.images.decode_image` read (Pillow's reader).

Only what culling and a photographer need: when (DateTimeOriginal with its sub-seconds and UTC
offset), with what (make, model, body serial, lens) and how (focal length, aperture, shutter,
ISO, orientation). Absent or malformed values are null, never guessed. GPS is never read.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from PIL import ExifTags

from festora.schemas import MetadataResult

_Tag = ExifTags.Base
_EXIF_DATETIME = "%Y:%m:%d %H:%M:%S"
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")


def read_metadata(exif: dict[int, Any]) -> MetadataResult:
    return MetadataResult(
        captured_at=captured_at(exif),
        camera_make=_text(exif.get(_Tag.Make)),
        camera_model=_text(exif.get(_Tag.Model)),
        camera_serial=_text(exif.get(_Tag.BodySerialNumber)),
        lens_model=_text(exif.get(_Tag.LensModel)),
        focal_length_mm=_number(exif.get(_Tag.FocalLength)),
        f_number=_number(exif.get(_Tag.FNumber)),
        exposure_time_s=_number(exif.get(_Tag.ExposureTime), digits=6),
        iso=_integer(exif.get(_Tag.ISOSpeedRatings)),
        orientation=_orientation(exif.get(_Tag.Orientation)),
    )


def captured_at(exif: dict[int, Any]) -> str | None:
    """ISO 8601: '2024-05-01T14:03:22.450000+02:00' (offset only when the camera wrote one)."""
    text = _text(exif.get(_Tag.DateTimeOriginal))
    if text is None:
        return None
    try:
        moment = datetime.strptime(text[:19], _EXIF_DATETIME)
    except ValueError:
        return None
    subsec = _text(exif.get(_Tag.SubsecTimeOriginal))
    if subsec and subsec.isdigit():
        moment = moment.replace(microsecond=int(subsec[:6].ljust(6, "0")))
    offset = _text(exif.get(_Tag.OffsetTimeOriginal))
    if offset and (match := _OFFSET.match(offset)):
        sign = -1 if match.group(1) == "-" else 1
        delta = timedelta(hours=int(match.group(2)), minutes=int(match.group(3)))
        if delta < timedelta(hours=24):
            moment = moment.replace(tzinfo=timezone(sign * delta))
    return moment.isoformat()


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def _number(value: Any, digits: int = 3) -> float | None:
    if isinstance(value, tuple | list):
        value = value[0] if value else None
    try:
        number = float(value)  # ints, floats and Pillow's IFDRational
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return round(number, digits) if number == number and number > 0 else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return round(number) if number is not None else None


def _orientation(value: Any) -> int | None:
    return value if isinstance(value, int) and 1 <= value <= 8 else None
