"""The lifecycle every runner shares: resolve its stored model, load it, report its status.

A runner never fails to start because of its model: `__init__` records the error, `status()`
reports `loaded: False` with it, and the model's verbs raise `RuntimeError("model not loaded:
...")`, so /health can say what is missing while the server stays up.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any, ClassVar

import bentoml
import numpy as np
from bentoml.validators import DType

from festora.config import get_settings
from festora.logs import configure_logging
from festora.models import ModelSpec, Provenance, RunnerConfig, resolve, runner_config
from festora.schemas import ModelStatus
from runners.serving import batching, client_keepalive, drain
from runners.serving.memory import (
    drop_mapped_file_pages,
    limit_heap_arenas,
    release_free_memory,
)

logger = logging.getLogger("festora.runners")

# API types: the dtype makes a JSON caller's nested lists arrive as the array the model needs
# (BentoML's own service-to-service calls pickle arrays and keep their dtype anyway).
Uint8Array = Annotated[np.ndarray, DType("uint8")]
Float32Array = Annotated[np.ndarray, DType("float32")]


# Every serving process imports this module (the API service to call the runners): few heaps.
limit_heap_arenas()
# The API service imports the runner classes to call them: make its runner clients safe first.
client_keepalive.install()
# Runner processes: dispatch to a free model at once, batch what queues while it is busy.
batching.install()
# Runner processes: on SIGTERM, keep serving until the API service has drained.
drain.install()

# The API service's client to a runner never retires its connection pool. BentoML 1.4.30+
# (up to at least 1.4.40) replaces that pool every 100 requests or 300 s and closes the old one
# at once, failing the requests still in flight on it (aiohttp "Server disconnected",
# "Connector is closed": HTTP 500s under concurrent load; bentoml/BentoML#5540). The refresh
# only spreads connections over several runner workers, and each runner has one.
RUNNER_CONNECTION = {"max_requests": 2**62, "max_age": 1e15}


def service_options(config: RunnerConfig) -> dict[str, Any]:
    """`@bentoml.service` options of a runner: one worker (each worker loads its own model
    copy), a CPU share equal to the threads it computes with, and a client connection pool
    that is never torn down under running requests (see RUNNER_CONNECTION)."""
    return {
        "workers": 1,
        "resources": {"cpu": str(config.num_threads)},
        "traffic": {"timeout": config.timeout_s},
        "runner_connection": dict(RUNNER_CONNECTION),
    }


def set_threads(num_threads: int, *, torch: bool = True) -> None:
    """Cap OpenCV and (unless the model has no torch in it) torch threads: BentoML does not,
    and five runners share the cores."""
    import cv2

    cv2.setNumThreads(num_threads)
    if torch:
        import torch as _torch

        _torch.set_num_threads(num_threads)


def check_images(images: np.ndarray, size: int) -> None:
    """Reject anything but an N x size x size x 3 uint8 batch before it reaches a model."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {getattr(images, 'dtype', type(images))}")
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"expected N x {size} x {size} x 3 images, got shape {images.shape}")


def check_image_list(images: list[np.ndarray]) -> None:
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise ValueError(f"image {i}: expected a uint8 array")
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
            raise ValueError(f"image {i}: expected H x W x 3, got shape {image.shape}")


class ModelRunner:
    """Base of the runner services. Subclasses set `spec` and implement `_load`."""

    spec: ClassVar[ModelSpec]
    engine: str | None = None  # what computes it, e.g. "openvino-bf16"; set by `_load`
    input_size: int | None = None  # side of the square images it takes, where it takes them

    def __init__(self) -> None:
        configure_logging(get_settings())
        self.config = runner_config(self.spec)
        self.provenance: Provenance | None = None
        self.loaded = False
        self.error: str | None = None
        self.load_time_ms: float | None = None
        start = time.perf_counter()
        try:
            _, self.provenance = resolve(self.spec)
            self._load(self.provenance)
        except Exception as exc:  # noqa: BLE001 - any failure is reported, never fatal
            self.error = f"{type(exc).__name__}: {exc}"
            logger.error("model not loaded", extra={"model": self.spec.key, "error": self.error})
        else:
            release_free_memory()  # what loading allocated and dropped (fp32 copies, buffers)
            drop_mapped_file_pages(self.provenance.path)  # weights OpenVINO copied and keeps
            self.loaded = True
            self.load_time_ms = round((time.perf_counter() - start) * 1000, 1)
            logger.info(
                "model loaded",
                extra={
                    "model": self.spec.key,
                    "tag": self.provenance.tag,
                    "weights": self.provenance.weights,
                    "engine": self.engine,
                    "load_time_ms": self.load_time_ms,
                },
            )

    def _load(self, provenance: Provenance) -> None:
        raise NotImplementedError

    def _require_loaded(self) -> None:
        if not self.loaded:
            raise RuntimeError(f"model not loaded: {self.spec.key}: {self.error}")

    def _warnings(self) -> list[str]:
        """Extra caveats a subclass wants /health to show."""
        return []

    def model_status(self) -> ModelStatus:
        warnings: list[str] = []
        prov = self.provenance
        if prov is not None:
            if prov.warning:
                warnings.append(prov.warning)
            wanted = get_settings().weights
            if prov.weights is not None and prov.weights != wanted:
                warnings.append(f"expected WEIGHTS={wanted}")
            warnings.extend(self._warnings())
        return ModelStatus(
            name=self.spec.key,
            loaded=self.loaded,
            load_time_ms=self.load_time_ms,
            error=self.error,
            tag=prov.tag if prov else None,
            weights=prov.weights if prov else None,
            engine=self.engine,
            input_size=self.input_size,
            warning="; ".join(warnings) or None,
        )

    # async: answered on the event loop, never queued behind a running batch
    @bentoml.api
    async def status(self) -> dict[str, Any]:
        """This runner's ModelStatus (name, loaded, load_time_ms, error, tag, weights, warning)."""
        return self.model_status().model_dump()
