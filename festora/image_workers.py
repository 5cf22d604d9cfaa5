"""CPU-bound image work (decoding, resizing) off the event loop, at most one image per core.

Each image is worked on by one thread: OpenCV's own thread pool would only contend for the
cores that the other workers and the runners keep busy.

A burst of photos then waits as compressed bytes rather than as decoded megapixels, and heap
pages freed by finished images go back to the system (at most once a second), so the process
does not stay as large as its busiest moment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from typing import TypeVar

import anyio
import cv2

from runners.serving.memory import trim_after_batch

# More workers than cores only adds decoded images in memory.
IMAGE_WORKERS = (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
T = TypeVar("T")


async def in_image_worker(work: Callable[[], T]) -> T:
    def work_then_trim() -> T:
        cv2.setNumThreads(1)  # process-wide, and 0.2 us to repeat
        try:
            return work()
        finally:
            trim_after_batch()  # in the worker: a trim takes milliseconds

    return await anyio.to_thread.run_sync(work_then_trim, limiter=_limiter())


@cache
def _limiter() -> anyio.CapacityLimiter:
    return anyio.CapacityLimiter(IMAGE_WORKERS)
