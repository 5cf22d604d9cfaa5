"""Blur verdicts must not depend on the camera's resolution (real photos, 1-24 MP)."""

from __future__ import annotations

import pytest

from festora.blur import measure_blur
from festora.config import Settings
from scripts.calibrate_blur import MEGAPIXELS, at_megapixels, blurred, sample_photos

SETTINGS = Settings()
PHOTOS = sample_photos()


@pytest.mark.parametrize("name", ["china", "astronaut", "coffee"])
def test_same_verdict_at_every_resolution(name: str) -> None:
    size, threshold = SETTINGS.blur_analysis_size, SETTINGS.blur_threshold
    sharp = [
        measure_blur(at_megapixels(PHOTOS[name], mp), analysis_size=size, threshold=threshold)
        for mp in MEGAPIXELS
    ]
    assert [r.is_blurry for r in sharp] == [False] * len(MEGAPIXELS)
    assert all(900 <= r.analysis_size_px <= size for r in sharp)
    variances = [r.laplacian_variance for r in sharp]
    assert max(variances) / min(variances) < 1.5


@pytest.mark.parametrize("name", ["china", "chelsea"])
def test_gaussian_blur_of_sigma_3_at_analysis_size_is_blurry_at_every_size(name: str) -> None:
    size, threshold = SETTINGS.blur_analysis_size, SETTINGS.blur_threshold
    for mp in MEGAPIXELS:
        image = blurred(at_megapixels(PHOTOS[name], mp), size)
        result = measure_blur(image, analysis_size=size, threshold=threshold)
        assert result.is_blurry, (name, mp, result.laplacian_variance)


def test_small_images_are_measured_as_they_are() -> None:
    photo = PHOTOS["astronaut"]  # 512 x 512
    result = measure_blur(photo, analysis_size=1024, threshold=10)
    assert result.analysis_size_px == 512
    assert result.blur_threshold == 10
