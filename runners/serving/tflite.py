"""MediaPipe's .tflite models computed by OpenVINO, which reads them directly.

Each takes N x H x W x 3 uint8 images: the scaling to the range the model was trained on is
compiled into the graph, one fused step instead of a float copy per crop.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
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
    """A model with static shapes for the batch sizes it meets most. A static shape computes
    about 10 % faster on the CPU than a free batch dimension (benchmarks/FACES.md) but holds
    its own buffers (25-40 MB for the face detector's 2-27 views), so only the `common` sizes
    get one; the free-batch model computes every other size. All are compiled here, before
    the first call: a size is always computed by the same model, so an image's results do not
    depend on when it was sent (bf16 rounds differently in the two)."""

    def __init__(
        self,
        path: os.PathLike[str] | str,
        precision: Precision,
        threads: int,
        pixels: tuple[float, float],
        common: Iterable[int] = (),
    ) -> None:
        self._free = compile_tflite(read_tflite(path), precision, threads, pixels)
        self._static: dict[int, Any] = {}
        for batch in sorted(set(common)):
            model = read_tflite(path)
            shape = model.inputs[0].get_partial_shape()
            model.reshape([batch, *(d.get_length() for d in list(shape)[1:])])
            self._static[batch] = compile_tflite(model, precision, threads, pixels)

    def static_sizes(self) -> list[int]:
        return sorted(self._static)

    def __call__(self, inputs: Any) -> Any:
        return self._static.get(len(inputs), self._free)(inputs)
