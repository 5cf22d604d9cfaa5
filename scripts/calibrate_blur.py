"""Calibrate BLUR_THRESHOLD on real photos that packages ship.

Each photo is upscaled to 1, 6, 12 and 24 MP (as a camera would deliver it), then measured at
the analysis size as it is and after a Gaussian blur of sigma 3 px at the analysis size. The
suggested threshold is the geometric mean of the sharpest blurred and the softest sharp score.

    python scripts/calibrate_blur.py [--analysis-size 1024]
"""

from __future__ import annotations

import argparse
import math

import cv2
import numpy as np

from festora.blur import laplacian_variance, to_analysis_gray

MEGAPIXELS = (1, 6, 12, 24)
BLUR_SIGMA_AT_ANALYSIS_SIZE = 3.0


def sample_photos() -> dict[str, np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = dict(zip(("china", "flower"), load_sample_images().images, strict=True))
    photos |= {name: getattr(data, name)() for name in ("astronaut", "chelsea", "coffee")}
    return photos


def at_megapixels(rgb: np.ndarray, megapixels: float) -> np.ndarray:
    height, width = rgb.shape[:2]
    scale = math.sqrt(megapixels * 1e6 / (height * width))
    size = (round(width * scale), round(height * scale))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)


def blurred(rgb: np.ndarray, analysis_size: int) -> np.ndarray:
    sigma = BLUR_SIGMA_AT_ANALYSIS_SIZE * max(rgb.shape[:2]) / analysis_size
    return cv2.GaussianBlur(rgb, (0, 0), sigma)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--analysis-size", type=int, default=1024)
    size = parser.parse_args().analysis_size

    sharp_scores: list[float] = []
    blurred_scores: list[float] = []
    print(f"{'photo':<10} {'MP':>4} {'sharp':>10} {'blurred':>10}")
    for name, photo in sample_photos().items():
        for megapixels in MEGAPIXELS:
            image = at_megapixels(photo, megapixels)
            sharp = laplacian_variance(to_analysis_gray(image, size))
            soft = laplacian_variance(to_analysis_gray(blurred(image, size), size))
            sharp_scores.append(sharp)
            blurred_scores.append(soft)
            print(f"{name:<10} {megapixels:>4} {sharp:>10.1f} {soft:>10.1f}")
    low, high = max(blurred_scores), min(sharp_scores)
    print(f"\nblurred max {low:.1f}, sharp min {high:.1f}")
    print(f"suggested BLUR_THRESHOLD: {math.sqrt(low * high):.0f}")


if __name__ == "__main__":
    main()
