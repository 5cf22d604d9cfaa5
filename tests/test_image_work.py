"""The API process's image work: bounded concurrency, and only small model inputs kept."""

from __future__ import annotations

import io
import threading
import time

import anyio
import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from festora import preprocess
from festora.analysis import DecodeSize, decode_size, prepare
from festora.config import get_settings
from festora.image_workers import IMAGE_WORKERS, in_image_worker
from festora.schemas import AnalysisFlags


def test_image_work_runs_at_most_one_job_per_core() -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    async def burst() -> None:
        async with anyio.create_task_group() as tasks:
            for _ in range(3 * IMAGE_WORKERS + 1):
                tasks.start_soon(in_image_worker, work)

    anyio.run(burst)
    assert most == IMAGE_WORKERS


def test_image_work_computes_with_one_opencv_thread() -> None:
    cv2.setNumThreads(2)

    assert anyio.run(in_image_worker, cv2.getNumThreads) == 1


def camera_jpeg(width: int = 4000, height: int = 3000) -> bytes:
    photo = Image.fromarray(data.astronaut()).resize((width, height), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("embedding_only", [False, True])
def test_prepare_keeps_only_the_model_inputs(embedding_only: bool) -> None:
    flags = (
        AnalysisFlags(run_blur=False, run_quality=False, run_emotion=False)
        if embedding_only
        else AnalysisFlags()
    )
    prepared = anyio.run(prepare, camera_jpeg(), flags, get_settings())

    assert (prepared.width, prepared.height) == (4000, 3000)
    arrays = {k: v for k, v in prepared.inputs.items() if isinstance(v, np.ndarray)}
    assert arrays["clip"].shape == (preprocess.CLIP_SIZE, preprocess.CLIP_SIZE, 3)
    if embedding_only:
        assert set(prepared.inputs) == {"clip", "exposure", "fingerprint", "metadata"}
        return
    assert arrays["nima"].shape == (preprocess.NIMA_SIZE, preprocess.NIMA_SIZE, 3)
    assert max(arrays["brisque"].shape) == preprocess.BRISQUE_LONG_SIDE
    assert max(arrays["faces"].shape) == preprocess.FACE_LONG_SIDE
    assert prepared.inputs["blur"].analysis_size_px == 1024
    # the 2000 x 1500 decode itself is gone: at most what the models need is kept
    assert sum(a.nbytes for a in arrays.values()) < 768 * 576 * 3 + 1280 * 960 * 3 + 2 * 299**2 * 3


def test_decode_size_keeps_the_short_side_clip_and_nima_resize() -> None:
    settings = get_settings()
    embedding = AnalysisFlags(run_blur=False, run_quality=False, run_emotion=False)
    quality = AnalysisFlags(run_blur=False, run_emotion=False, run_embedding=False)

    assert decode_size(embedding, settings) == DecodeSize(224, 224)
    assert decode_size(embedding, settings, clip_size=336) == DecodeSize(336, 336)
    assert decode_size(quality, settings) == DecodeSize(preprocess.BRISQUE_LONG_SIDE, 299)
    assert decode_size(AnalysisFlags(), settings).long_side == preprocess.FACE_LONG_SIDE


@pytest.mark.parametrize("size", [(1024, 768), (2400, 800)], ids=["1024x768", "panorama"])
def test_embedding_only_clip_input_matches_a_full_size_decode(size: tuple[int, int]) -> None:
    """A 1024 x 768 JPEG at 1/4 is 256 x 192: CLIP would see its short side upscaled."""
    photo = Image.fromarray(data.astronaut()).resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=92)
    embedding = AnalysisFlags(run_blur=False, run_quality=False, run_emotion=False)

    served = anyio.run(prepare, buffer.getvalue(), embedding, get_settings()).inputs["clip"]
    reference = preprocess.clip_input(np.asarray(Image.open(buffer).convert("RGB")))

    difference = np.abs(served.astype(np.int16) - reference.astype(np.int16))
    assert difference.mean() < 1.5 and np.percentile(difference, 99) <= 8
