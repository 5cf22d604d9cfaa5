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
from festora.analysis import prepare
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
