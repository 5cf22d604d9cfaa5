"""MediaPipe's real .tflite models on OpenVINO: uint8 in with the scaling compiled into the
graph, and static batch shapes that compute what the free-batch model computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from festora.models import FACE_DETECTOR_FILE, FACES, resolve
from runners.serving.tflite import PerBatchSize, compile_tflite, read_tflite


@pytest.fixture(scope="module")
def detector_file(model_store: Path) -> Path:
    _, provenance = resolve(FACES)
    return provenance.path / FACE_DETECTOR_FILE


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (3, 192, 192, 3), dtype=np.uint8)


def test_uint8_input_is_scaled_in_the_graph_as_the_model_expects(
    detector_file: Path, images: np.ndarray
) -> None:
    import openvino as ov

    core = ov.Core()
    floats = core.compile_model(
        read_tflite(detector_file), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    expected = floats(images.astype(np.float32) / 127.5 - 1.0)
    got = compile_tflite(read_tflite(detector_file), "fp32", 1, (-1.0, 1.0))(images)
    for want, have in zip(expected.values(), got.values(), strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-3)
    unit = compile_tflite(read_tflite(detector_file), "fp32", 1, (0.0, 1.0))(images)
    assert not np.allclose(unit[1], got[1], atol=1e-2)  # the range is really applied


def test_static_batch_sizes_compute_what_the_free_batch_model_computes(
    detector_file: Path, images: np.ndarray
) -> None:
    model = PerBatchSize(detector_file, "fp32", 1, pixels=(-1.0, 1.0), common=[3])
    free = compile_tflite(read_tflite(detector_file), "fp32", 1, (-1.0, 1.0))
    assert model.static_sizes() == [3]
    for want, have in zip(free(images).values(), model(images).values(), strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-3)
    # Another size is computed by the free model and gets no buffers of its own.
    for want, have in zip(free(images[:2]).values(), model(images[:2]).values(), strict=True):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-3)
    assert model.static_sizes() == [3]
    model._free = None  # size 3 must not need the free model
    model(images)
