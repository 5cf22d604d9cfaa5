"""Exposure, fingerprint and metadata: the cheap analyses computed from the one decode."""

from __future__ import annotations

import hashlib
import io
import itertools
from datetime import datetime

import anyio
import pytest
from PIL import ExifTags, Image

from festora.analysis import DecodeSize, decode, prepare
from festora.config import get_settings
from festora.exposure import measure_exposure
from festora.fingerprint import perceptual_hash, phash_distance
from festora.images import decode_image
from festora.metadata import read_metadata
from festora.schemas import AnalysisFlags
from tests.photos import blurred, jpeg, real_photos, scaled, shifted

PHOTOS = real_photos()
MAX_PIXELS = 50_000_000


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_exposure_verdicts_on_real_photos_and_their_darkened_and_brightened_copies(
    name: str,
) -> None:
    photo = PHOTOS[name]
    original = measure_exposure(photo)
    dark = measure_exposure(scaled(photo, 0.3))
    bright = measure_exposure(scaled(photo, 2.5))

    assert original.verdict == "ok"
    assert dark.verdict == "underexposed"
    assert bright.verdict == "overexposed"
    assert dark.mean_luminance < original.mean_luminance < bright.mean_luminance
    assert bright.highlights_clipped > original.highlights_clipped
    assert 0 <= original.shadows_clipped <= 1 and 0 <= original.highlights_clipped <= 1
    assert original.analysis_size_px == min(512, max(photo.shape[:2]))


def test_phash_keeps_burst_variants_close_and_different_photos_apart() -> None:
    hashes = {name: perceptual_hash(photo) for name, photo in PHOTOS.items()}
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in hashes.values())
    for photo, digest in zip(PHOTOS.values(), hashes.values(), strict=True):
        for variant in (blurred(photo), shifted(photo), scaled(photo, 0.3)):
            assert phash_distance(digest, perceptual_hash(variant)) <= 10
    for a, b in itertools.combinations(hashes.values(), 2):
        assert phash_distance(a, b) >= 24


def test_fingerprint_from_the_decode_hashes_the_bytes_and_not_the_decode_size() -> None:
    photo = Image.fromarray(PHOTOS["chelsea"]).resize((2400, 1600))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    full = decode_image(data, max_pixels=MAX_PIXELS)
    reduced = decode_image(data, max_pixels=MAX_PIXELS, min_long_side=224)

    assert full.sha256 == reduced.sha256 == hashlib.sha256(data).hexdigest()
    assert decode_image(data, max_pixels=MAX_PIXELS, digest=False).sha256 is None
    assert reduced.rgb.shape[1] < full.rgb.shape[1]
    assert phash_distance(perceptual_hash(full.rgb), perceptual_hash(reduced.rgb)) <= 2


def test_metadata_from_exif_with_subseconds_and_offset_and_never_gps() -> None:
    moment = datetime(2024, 5, 1, 14, 3, 22, 450_000)
    data = jpeg(PHOTOS["coffee"], captured_at=moment, serial="0421", gps=True)
    decoded = decode_image(data, max_pixels=MAX_PIXELS)
    metadata = read_metadata(decoded.exif)

    assert metadata.captured_at == "2024-05-01T14:03:22.450000+02:00"
    assert datetime.fromisoformat(metadata.captured_at).utcoffset().total_seconds() == 7200
    assert (metadata.camera_make, metadata.camera_model, metadata.camera_serial) == (
        "Canon",
        "EOS R5",
        "0421",
    )
    assert ExifTags.Base.GPSInfo not in decoded.exif
    assert not any(tag in decoded.exif for tag in ExifTags.GPS)  # no GPS sub-tag merged in


def test_metadata_reads_exposure_settings_and_orientation() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.FNumber] = 2.8
    sub[ExifTags.Base.ExposureTime] = 1 / 250
    sub[ExifTags.Base.ISOSpeedRatings] = 800
    sub[ExifTags.Base.FocalLength] = 85.0
    sub[ExifTags.Base.LensModel] = "RF85mm F1.2 L USM\x00"
    sub[ExifTags.Base.DateTimeOriginal] = "2024:13:45 99:00:00"  # malformed: null, not a guess
    buffer = io.BytesIO()
    Image.fromarray(PHOTOS["coffee"]).save(buffer, "JPEG", exif=exif)
    decoded = decode_image(buffer.getvalue(), max_pixels=MAX_PIXELS)
    metadata = read_metadata(decoded.exif)

    assert (decoded.width, decoded.height) == (400, 600)  # orientation 6 turns 600x400
    assert metadata.orientation == 6
    assert (metadata.f_number, metadata.exposure_time_s, metadata.iso) == (2.8, 0.004, 800)
    assert (metadata.focal_length_mm, metadata.lens_model) == (85.0, "RF85mm F1.2 L USM")
    assert metadata.captured_at is None


def test_prepare_computes_the_cheap_analyses_only_when_asked() -> None:
    data = jpeg(PHOTOS["astronaut"], captured_at=datetime(2024, 5, 1, 14, 3, 22), serial="7")
    settings = get_settings()
    everything = anyio.run(prepare, data, AnalysisFlags(), settings).inputs
    nothing = anyio.run(
        prepare,
        data,
        AnalysisFlags(run_exposure=False, run_fingerprint=False, run_metadata=False),
        settings,
    ).inputs

    assert everything["fingerprint"].sha256 == hashlib.sha256(data).hexdigest()
    assert everything["metadata"].camera_serial == "7"
    assert everything["exposure"].verdict == "ok"
    assert not {"exposure", "fingerprint", "metadata"} & set(nothing)
    unhashed = decode(data, DecodeSize(224, 224), AnalysisFlags(run_fingerprint=False), settings)
    assert unhashed.sha256 is None  # no fingerprint asked for: the bytes are not hashed
    assert read_metadata({}).model_dump() == dict.fromkeys(read_metadata({}).model_dump())
