"""Exposure from the luminance histogram: mean level and clipped highlights and shadows.

Measured on the Rec. 601 luma of the image with its long side reduced to at most
`EXPOSURE_ANALYSIS_SIZE` (area filter; in the service, from the blur analysis's grayscale
copy), from whatever size the image was decoded at (never less than CLIP's 224 px): fractions
of pixels barely change with resolution, so exposure never makes the decode larger, and 512 px
costs well under a millisecond. A pixel is clipped at luma >= 250 (highlights) or <= 5
(shadows) of 255.

The verdict thresholds were set on the photos scikit-image and scikit-learn ship (astronaut,
chelsea, coffee, china, flower) and on copies of them darkened or brightened by scaling every
channel (tests/test_cheap_analyses.py shows them):
- originals: mean luma 0.26-0.57, highlights clipped <= 2.2%: all `ok` (the astronaut's black
  sky clips 14% of shadows, so clipped shadows alone never make a photo underexposed);
- darkened to 30%: mean luma 0.08-0.17: all `underexposed` (mean < 0.18);
- brightened 2.5x: highlights clipped 12.5-59%: all `overexposed` (highlights >= 10%).
"""

from __future__ import annotations

import numpy as np

from festora.blur import shrink, to_analysis_gray
from festora.schemas import ExposureResult

EXPOSURE_ANALYSIS_SIZE = 512
HIGHLIGHT_LEVEL = 250
SHADOW_LEVEL = 5
UNDEREXPOSED_MEAN = 0.18
UNDEREXPOSED_SHADOWS = 0.5
OVEREXPOSED_HIGHLIGHTS = 0.10
OVEREXPOSED_MEAN = 0.85


def measure_exposure(image: np.ndarray) -> ExposureResult:
    """`image` is RGB, or its luma (e.g. the blur analysis's grayscale copy, shared)."""
    if image.ndim == 3:
        gray = to_analysis_gray(image, EXPOSURE_ANALYSIS_SIZE)
    else:
        gray = shrink(image, EXPOSURE_ANALYSIS_SIZE)
    histogram = np.bincount(gray.ravel(), minlength=256) / gray.size
    mean = float(histogram @ np.arange(256)) / 255
    highlights = float(histogram[HIGHLIGHT_LEVEL:].sum())
    shadows = float(histogram[: SHADOW_LEVEL + 1].sum())
    if mean < UNDEREXPOSED_MEAN or shadows >= UNDEREXPOSED_SHADOWS:
        verdict = "underexposed"
    elif highlights >= OVEREXPOSED_HIGHLIGHTS or mean > OVEREXPOSED_MEAN:
        verdict = "overexposed"
    else:
        verdict = "ok"
    return ExposureResult(
        mean_luminance=round(mean, 4),
        highlights_clipped=round(highlights, 4),
        shadows_clipped=round(shadows, 4),
        verdict=verdict,
        analysis_size_px=max(gray.shape),
    )
