"""int8 copies of the image IRs (NIMA, CLIP's image tower): quantised by NNCF at import, and
kept only where they score like fp32.

Why: with int8 dot products (AVX512_VNNI, AVX_VNNI, AMX) OpenVINO runs int8 convolutions and
matmuls 3-4x faster than fp32: NIMA 217 -> 59 ms per image, CLIP ViT-B/32 90 -> 29 ms (one
thread, Xeon with AVX512_VNNI and no AMX, OpenVINO 2026.4).

Post-training quantisation rounds every activation to a range measured on calibration photos,
so how faithful it stays depends on the weights. The import therefore checks the int8 graph
against the fp32 one with the weights it quantised, on the whole photos and on crops it was
not calibrated on, and stores it only if CLIP's embeddings keep cosine >= 0.999 and NIMA's
scores stay within 0.05 on their 1-10 scale (the bounds bf16 is held to). The verdict is kept
in the model's metadata either way. Calibration photos: the two scikit-learn ships, or a
folder of your own (`scripts/import_models.py --calibration-photos DIR`: a real shoot
calibrates real weights best).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runners.serving.openvino_ir import INT8_IR_FILE, IR_FILE, cpu_config

MIN_EMBEDDING_COSINE = 0.999
MAX_SCORE_DIFFERENCE = 0.05
CALIBRATION_CROPS = 96
CHECK_CROPS = 16
MAX_PHOTOS = 64
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")

Prepare = Callable[[np.ndarray], np.ndarray]  # H x W x 3 uint8 -> the graph's input image
Agreement = Callable[[np.ndarray, np.ndarray], "Fidelity"]  # fp32 outputs, int8 outputs


@dataclass(frozen=True)
class Fidelity:
    measure: str
    value: float
    bound: float
    faithful: bool


def embeddings_agree(exact: np.ndarray, quantised: np.ndarray) -> Fidelity:
    a = exact / np.linalg.norm(exact, axis=-1, keepdims=True)
    b = quantised / np.linalg.norm(quantised, axis=-1, keepdims=True)
    cosine = float(np.sum(a * b, axis=-1).min())
    faithful = cosine >= MIN_EMBEDDING_COSINE
    return Fidelity("min cosine", round(cosine, 6), MIN_EMBEDDING_COSINE, faithful)


def scores_agree(to_scale: Callable[[np.ndarray], np.ndarray]) -> Agreement:
    """Agreement of raw outputs once put on the reported scale by `to_scale`."""

    def agree(exact: np.ndarray, quantised: np.ndarray) -> Fidelity:
        diff = float(np.abs(to_scale(exact.reshape(-1)) - to_scale(quantised.reshape(-1))).max())
        faithful = diff <= MAX_SCORE_DIFFERENCE
        return Fidelity("max score difference", round(diff, 6), MAX_SCORE_DIFFERENCE, faithful)

    return agree


def sample_photos(folder: Path | None = None) -> list[np.ndarray]:
    """The photos in `folder` (up to MAX_PHOTOS, sorted by name), or scikit-learn's two."""
    if folder is None:
        from sklearn.datasets import load_sample_images

        return list(load_sample_images().images)
    from PIL import Image, ImageOps

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise ValueError(f"no photos ({', '.join(PHOTO_SUFFIXES)}) in {folder}")
    photos = []
    for file in files[:MAX_PHOTOS]:
        with Image.open(file) as image:
            image.draft("RGB", (1024, 1024))  # JPEG: decode at a reduced scale
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((1024, 1024))
            photos.append(np.asarray(image))
    return photos


def random_crops(photos: Sequence[np.ndarray], count: int, seed: int) -> list[np.ndarray]:
    """`count` crops of 40-100% of each side at random places, every other one mirrored."""
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        h, w = (max(1, int(side * rng.uniform(0.4, 1.0))) for side in (height, width))
        y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        crop = photo[y : y + h, x : x + w]
        crops.append(np.ascontiguousarray(crop[:, ::-1] if i % 2 else crop))
    return crops


def export_int8(
    model_dir: Path,
    prepare: Prepare,
    agree: Agreement,
    *,
    transformer: bool,
    photos: Sequence[np.ndarray],
    seed: int = 0,
) -> dict[str, Any]:
    """Quantise `model_dir`'s IR on crops of `photos`, check it against fp32 on the photos and
    on other crops, and save it as INT8_IR_FILE if it is faithful. Returns the verdict, for
    the model's metadata."""
    import nncf
    import openvino as ov

    core = ov.Core()
    fp32 = core.read_model(model_dir / IR_FILE)
    calibration = [prepare(crop)[None] for crop in random_crops(photos, CALIBRATION_CROPS, seed)]
    quantised = nncf.quantize(
        fp32,
        nncf.Dataset(calibration),
        subset_size=len(calibration),
        model_type=nncf.ModelType.TRANSFORMER if transformer else None,
    )
    check = np.stack(
        [prepare(p) for p in photos]
        + [prepare(c) for c in random_crops(photos, CHECK_CROPS, seed + 1)]
    )
    threads = os.cpu_count() or 1
    exact = core.compile_model(fp32, "CPU", cpu_config("fp32", threads))(check)[0]
    fast = core.compile_model(quantised, "CPU", cpu_config("int8", threads))(check)[0]
    fidelity = agree(np.asarray(exact, np.float32), np.asarray(fast, np.float32))
    if fidelity.faithful:
        ov.save_model(quantised, model_dir / INT8_IR_FILE, compress_to_fp16=False)
    return {
        "stored": fidelity.faithful,
        **asdict(fidelity),
        "calibration_inputs": len(calibration),
        "checked_inputs": len(check),
    }
