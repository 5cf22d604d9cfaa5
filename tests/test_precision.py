"""FESTORA_PRECISION: bf16 runners stay faithful to fp32 on the same (generated) weights.

The runners' parity with pyiqa and transformers is checked in fp32 (test_runners.py); here the
same runners are loaded twice, fp32 and bf16, and must agree within what the product can
tolerate: CLIP embeddings at cosine >= 0.999, NIMA scores within 0.05 on their 1-10 scale.
Random-init NIMA gives nearly the same score to every photo, so its pooled backbone features
are compared as well (cosine >= 0.999): that is where bf16 could lose accuracy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skimage import data
from sklearn.datasets import load_sample_images

from festora import preprocess
from festora.models import NIMA_AESTHETIC, NIMA_TECHNICAL
from runners.serving.openvino_ir import ENGINE_ENV
from runners.serving.precision import PRECISION_ENV, compute_precision, cpu_has_native_bf16

needs_bf16 = pytest.mark.skipif(
    not cpu_has_native_bf16(), reason="no native bf16 on this CPU: FESTORA_PRECISION=auto is fp32"
)


def _photos() -> list[np.ndarray]:
    china, flower = load_sample_images().images
    return [data.astronaut(), data.coffee(), data.chelsea(), china, flower]


def _load(
    cls: type, precision: str, monkeypatch: pytest.MonkeyPatch, engine: str = "openvino"
) -> Any:
    monkeypatch.setenv(PRECISION_ENV, precision)
    monkeypatch.setenv(ENGINE_ENV, "torch" if engine == "torch" else "auto")
    runner = cls()
    assert runner.loaded, runner.error
    assert runner.precision == precision
    assert runner.engine == f"{engine}-{precision}"
    return runner


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)


def test_precision_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert compute_precision() == ("bf16" if cpu_has_native_bf16() else "fp32")
    for value, expected in (("fp32", "fp32"), (" BF16 ", "bf16"), ("auto", compute_precision())):
        monkeypatch.setenv(PRECISION_ENV, value)
        assert compute_precision() == expected
    monkeypatch.setenv(PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match=PRECISION_ENV):
        compute_precision()


@needs_bf16
@pytest.mark.parametrize("engine", ["openvino", "torch"])
def test_clip_bf16_embeddings_match_fp32(
    model_store: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    from runners.clip import CLIPEncoder

    crops = np.stack([preprocess.clip_input(p) for p in _photos()])
    exact = _load(CLIPEncoder, "fp32", monkeypatch, "torch").encode(crops)
    fast_runner = _load(CLIPEncoder, "bf16", monkeypatch, engine)
    fast = fast_runner.encode(crops)
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert _cosine(fast, exact).min() >= 0.999
    # a batch and its images one by one give the same vectors (batching never changes a score)
    single = np.concatenate([fast_runner.encode(crops[i : i + 1]) for i in range(len(crops))])
    assert _cosine(single, fast).min() >= 0.9999


def _pooled_features(runner: Any, images: np.ndarray) -> np.ndarray:
    """The NIMA backbone's pooled features, in the runner's own precision."""
    import torch

    net = runner._net
    dtype = next(net.base_model.parameters()).dtype
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        x = net.preprocess(x).to(dtype=dtype, memory_format=torch.channels_last)
        return net.global_pool(net.base_model(x)[-1]).float().flatten(1).numpy()


@needs_bf16
@pytest.mark.parametrize("key", [NIMA_TECHNICAL.key, NIMA_AESTHETIC.key])
def test_nima_bf16_scores_match_fp32(
    model_store: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    from runners.nima import NimaAesthetic, NimaTechnical

    cls = NimaTechnical if key == NIMA_TECHNICAL.key else NimaAesthetic
    batch = np.stack([preprocess.nima_input(p) for p in _photos()])
    exact_runner = _load(cls, "fp32", monkeypatch, "torch")  # pyiqa's own forward
    exact = exact_runner.score(batch)
    for engine in ("openvino", "torch"):
        fast = _load(cls, "bf16", monkeypatch, engine).score(batch)
        assert fast.dtype == np.float32 and fast.shape == exact.shape
        assert np.abs(fast - exact).max() <= 0.05, engine
    fast_runner = _load(cls, "bf16", monkeypatch, "torch")
    features = _cosine(_pooled_features(fast_runner, batch), _pooled_features(exact_runner, batch))
    assert features.min() >= 0.999


@needs_bf16
def test_openvino_bf16_nima_features_match_fp32(model_store: Path) -> None:
    """Random-init NIMA scores every photo alike, so OpenVINO's bf16 is checked where it could
    lose accuracy: the pooled backbone features, through the same export and compile path."""
    import torch

    from festora.models import resolve
    from runners.nima import build_nima, load_nima_weights
    from runners.serving.openvino_ir import compile_ir, export_ir

    _, prov = resolve(NIMA_TECHNICAL)
    net = build_nima(NIMA_TECHNICAL)
    load_nima_weights(net, prov.path / NIMA_TECHNICAL.weights_file)

    class PooledFeatures(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net.eval()

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.permute(0, 3, 1, 2).float() / 255.0
            x = (x - net.default_mean) / net.default_std
            return net.global_pool(net.base_model(x)[-1]).flatten(1)

    batch = np.stack([preprocess.nima_input(p) for p in _photos()])
    with tempfile.TemporaryDirectory() as folder:
        export_ir(PooledFeatures().eval(), preprocess.NIMA_SIZE, Path(folder))
        exact = compile_ir(Path(folder), "fp32", 1)(batch)[0]
        fast = compile_ir(Path(folder), "bf16", 1)(batch)[0]
    with torch.inference_mode():
        reference = PooledFeatures()(torch.from_numpy(batch)).numpy()
    assert _cosine(exact, reference).min() >= 0.99999
    assert _cosine(fast, exact).min() >= 0.999
