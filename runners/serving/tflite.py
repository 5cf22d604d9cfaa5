"""MediaPipe's .tflite models computed by OpenVINO, which reads them directly.

Each takes N x H x W x 3 uint8 images: the scaling to the range the model was trained on is
compiled into the graph, one fused step instead of a float copy per crop.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from runners.serving.openvino_ir import cpu_config
from runners.serving.precision import Precision


def read_tflite(path: os.PathLike[str] | str) -> Any:
    """The model in `path`, with a free batch dimension."""
    import openvino as ov

    model = ov.Core().read_model(str(path))
    shape = model.inputs[0].get_partial_shape()
    model.reshape(ov.PartialShape([-1, *(d.get_length() for d in list(shape)[1:])]))
    return model


def compile_tflite(
    model: Any, precision: Precision, threads: int, pixels: tuple[float, float]
) -> Any:
    """`model` compiled for uint8 images, scaled inside the graph to `pixels` (low, high)."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    low, high = pixels
    steps = PrePostProcessor(model)
    steps.input().tensor().set_element_type(ov.Type.u8)
    steps.input().preprocess().convert_element_type(ov.Type.f32).scale(255.0 / (high - low))
    if low:
        steps.input().preprocess().mean(-low)
    return ov.Core().compile_model(steps.build(), "CPU", cpu_config(precision, threads))


class PerBatchSize:
    """A model compiled once for each batch size it is called with. A static shape computes
    about 10 % faster on the CPU than a free batch dimension (benchmarks/FACES.md), and the
    face detector meets a handful of sizes only: its view count per photo (2 to 27)."""

    def __init__(
        self,
        path: os.PathLike[str] | str,
        precision: Precision,
        threads: int,
        pixels: tuple[float, float],
    ) -> None:
        self._path, self._precision, self._threads, self._pixels = path, precision, threads, pixels
        self._compiled: dict[int, Any] = {}
        self._lock = threading.Lock()

    def compiled(self, batch: int) -> Any:
        with self._lock:
            if batch not in self._compiled:
                model = read_tflite(self._path)
                shape = model.inputs[0].get_partial_shape()
                model.reshape([batch, *(d.get_length() for d in list(shape)[1:])])
                self._compiled[batch] = compile_tflite(
                    model, self._precision, self._threads, self._pixels
                )
            return self._compiled[batch]

    def __call__(self, inputs: Any) -> Any:
        return self.compiled(len(inputs))(inputs)
