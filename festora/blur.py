"""Blur detection by the variance of the Laplacian.

The variance falls roughly tenfold between a 1 MP and a 24 MP version of one photo, so it is
always measured after resizing the long side to a fixed analysis size (`BLUR_ANALYSIS_SIZE`,
default 1024 px). Images smaller than that are measured as they are: upscaling would blur them.
The default `BLUR_THRESHOLD` (10) was calibrated with `scripts/calibrate_blur.py` on the photos
scikit-learn and scikit-image ship, at 1-24 MP: sharp copies score 21-796, copies blurred with a
Gaussian of sigma 3 px at the analysis size score at most 3.2 (sigma 1.5: 4.6-26).
"""

from __future__ import annotations

import cv2
import numpy as np

from festora.schemas import BlurResult


def to_analysis_gray(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """Grayscale copy with its long side at most `long_side` pixels (area resampling)."""
    return shrink(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), long_side)


def shrink(gray: np.ndarray, long_side: int) -> np.ndarray:
    """`gray` with its long side at most `long_side` pixels (area resampling, never enlarged)."""
    height, width = gray.shape
    scale = long_side / max(height, width)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return gray


def laplacian_variance(gray: np.ndarray) -> float:
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def measure_blur(rgb: np.ndarray, *, analysis_size: int, threshold: float) -> BlurResult:
    return blur_of_gray(to_analysis_gray(rgb, analysis_size), threshold)


def blur_of_gray(gray: np.ndarray, threshold: float) -> BlurResult:
    """The blur verdict of a grayscale image already at the analysis size."""
    variance = laplacian_variance(gray)
    return BlurResult(
        laplacian_variance=round(variance, 4),
        is_blurry=variance < threshold,
        blur_threshold=threshold,
        analysis_size_px=max(gray.shape),
    )
