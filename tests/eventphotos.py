"""An event's worth of distinct photos from the real pictures packages ship, and a way to
compare analyses across runs.

Each photo is a crop of one of the five shipped photos at its own offset and size, resized
and given its own noise, so no two files are the same (as in a real shoot: bursts of one
scene that differ slightly).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image
from skimage import data as skdata
from sklearn.datasets import load_sample_images


def sources() -> list[np.ndarray]:
    china, flower = load_sample_images().images
    return [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), china, flower]


def event_photos(count: int, *, long_side: int = 320, seed: int = 7) -> Iterator[bytes]:
    """`count` JPEGs, each a different crop/resize/noise variant of a shipped photo."""
    rng = np.random.default_rng(seed)
    originals = sources()
    for index in range(count):
        rgb = originals[index % len(originals)]
        height, width = rgb.shape[:2]
        keep = rng.uniform(0.7, 0.95)
        crop_h, crop_w = int(height * keep), int(width * keep)
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        crop = rgb[top : top + crop_h, left : left + crop_w].astype(np.float32)
        crop += rng.normal(0.0, rng.uniform(1.0, 6.0), crop.shape)
        image = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))
        image.thumbnail((long_side, long_side))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(80, 95)))
        yield buffer.getvalue()


def assert_same_analysis(got: Any, expected: Any, path: str = "result") -> None:
    """Equal up to float noise (runner batches differ between runs), ignoring timings and
    where the bytes came from."""
    if isinstance(expected, dict):
        ignored = {"processing_time_ms", "source_url"}
        assert isinstance(got, dict) and got.keys() - ignored == expected.keys() - ignored, path
        for key in expected.keys() - ignored:
            assert_same_analysis(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), path
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_same_analysis(g, e, f"{path}[{i}]")
    elif isinstance(expected, float) and not isinstance(got, bool):
        assert math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-4), (path, got, expected)
    else:
        assert got == expected, (path, got, expected)
