"""Fingerprints for duplicates: SHA-256 of the file bytes, and a perceptual hash of the pixels.

The perceptual hash is OpenCV contrib's `img_hash.PHash` (DCT of a 32 x 32 grey image, the
signs of the 8 x 8 low frequencies against their median: 64 bits). It is computed on a 32 x 32
area-filtered copy, so the hash does not depend on the size the image happened to be decoded at.
On the photos the packages ship, burst-like copies (blurred, shifted by 3%, darkened to 30%) are
within 10 bits of their original and different photos at least 24 bits apart.
"""

from __future__ import annotations

import cv2
import numpy as np

from festora.schemas import FingerprintResult

PHASH_BITS = 64
_PHASH_INPUT = 32


def perceptual_hash(image: np.ndarray) -> str:
    """`image` is RGB, or its luma at any size (e.g. the blur analysis's grayscale copy)."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    small = cv2.resize(gray, (_PHASH_INPUT, _PHASH_INPUT), interpolation=cv2.INTER_AREA)
    digest = cv2.img_hash.PHash.create().compute(small)
    return bytes(digest.ravel()).hex()


def phash_distance(a: str, b: str) -> int:
    """Hamming distance between two 16-hex-char hashes (0 = same, 64 = opposite)."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def fingerprint(image: np.ndarray, sha256: str) -> FingerprintResult:
    return FingerprintResult(sha256=sha256, phash=perceptual_hash(image))
