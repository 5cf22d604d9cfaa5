"""FESTORA_PRECISION: bf16 and int8 runners stay faithful to fp32 on the same (generated)
weights.

The runners' parity with pyiqa and transformers is checked in fp32 (test_runners.py); here the
same runners are loaded twice, fp32 and bf16 or int8, and must agree within what the product
can tolerate: CLIP embeddings at cosine >= 0.999, NIMA scores within 0.05 on their 1-10 scale.
Random-init NIMA gives nearly the same score to every photo, so its pooled backbone features
are compared as well (cosine >= 0.999): that is where bf16 or int8 could lose accuracy. The
int8 IRs were calibrated on scikit-learn's two photos; scikit-image's are new to them.
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
from runners.serving import precision
from runners.serving.openvino_ir import ENGINE_ENV
from runners.serving.precision import (
    PRECISION_ENV,
    compute_precision,
    cpu_has_fast_bf16,
    cpu_has_int8_dot_products,
    cpu_has_native_bf16,
    wants_int8,
)

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
    auto_float = "bf16" if cpu_has_fast_bf16() else "fp32"
    assert compute_precision() == auto_float
    assert wants_int8() == cpu_has_int8_dot_products()
    for value, expected, int8 in (
        ("fp32", "fp32", False),
        (" BF16 ", "bf16", False),
        ("int8", auto_float, True),  # the models without an int8 IR: as auto
        ("auto", auto_float, cpu_has_int8_dot_products()),
    ):
        monkeypatch.setenv(PRECISION_ENV, value)
        assert (compute_precision(), wants_int8()) == (expected, int8)
    monkeypatch.setenv(PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match=PRECISION_ENV):
        compute_precision()


@pytest.mark.parametrize(
    ("flags", "auto_float", "int8"),
    [
        ({"avx2", "fma"}, "fp32", False),
        ({"avx512f", "avx512_vnni", "avx512_bf16"}, "fp32", True),  # bf16 slower than fp32
        ({"avx_vnni"}, "fp32", True),
        ({"avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni"}, "bf16", True),
    ],
)
def test_auto_chooses_by_what_the_cpu_computes_fast(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], auto_float: str, int8: bool
) -> None:
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert (compute_precision(), wants_int8()) == (auto_float, int8)


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


def _nima_pooled_features() -> Any:
    """A torch module: the stored NIMA technical backbone's pooled features, on the runner's
    N x 299 x 299 x 3 uint8 input (what the runner's IR computes before its head)."""
    import torch

    from festora.models import resolve
    from runners.nima import build_nima, load_nima_weights

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

    return PooledFeatures().eval()


@needs_bf16
def test_openvino_bf16_nima_features_match_fp32(model_store: Path) -> None:
    """Random-init NIMA scores every photo alike, so OpenVINO's bf16 is checked where it could
    lose accuracy: the pooled backbone features, through the same export and compile path."""
    import torch

    from runners.serving.openvino_ir import compile_ir, export_ir

    features = _nima_pooled_features()
    batch = np.stack([preprocess.nima_input(p) for p in _photos()])
    with tempfile.TemporaryDirectory() as folder:
        export_ir(features, preprocess.NIMA_SIZE, Path(folder))
        exact = compile_ir(Path(folder), "fp32", 1)(batch)[0]
        fast = compile_ir(Path(folder), "bf16", 1)(batch)[0]
    with torch.inference_mode():
        reference = features(torch.from_numpy(batch)).numpy()
    assert _cosine(exact, reference).min() >= 0.99999
    assert _cosine(fast, exact).min() >= 0.999


# ------------------------------------------------------------------------------------ int8


def test_clip_int8_embeddings_match_fp32(
    model_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runners.clip import CLIPEncoder

    crops = np.stack([preprocess.clip_input(p) for p in _photos()])
    exact = _load(CLIPEncoder, "fp32", monkeypatch, "torch").encode(crops)
    fast_runner = _load(CLIPEncoder, "int8", monkeypatch)
    fast = fast_runner.encode(crops)
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert _cosine(fast, exact).min() >= 0.999
    assert _cosine(fast, exact).min() < 0.99999  # not vacuous: int8 is not the fp32 graph
    single = np.concatenate([fast_runner.encode(crops[i : i + 1]) for i in range(len(crops))])
    assert _cosine(single, fast).min() >= 0.9999


@pytest.mark.parametrize("key", [NIMA_TECHNICAL.key, NIMA_AESTHETIC.key])
def test_nima_int8_scores_match_fp32(
    model_store: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    from runners.nima import NimaAesthetic, NimaTechnical

    cls = NimaTechnical if key == NIMA_TECHNICAL.key else NimaAesthetic
    batch = np.stack([preprocess.nima_input(p) for p in _photos()])
    exact = _load(cls, "fp32", monkeypatch, "torch").score(batch)  # pyiqa's own forward
    fast = _load(cls, "int8", monkeypatch).score(batch)
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    assert np.abs(fast - exact).max() <= 0.05


def test_int8_nima_features_match_fp32(model_store: Path, tmp_path: Path) -> None:
    """Where int8 could lose accuracy in NIMA, quantised by the import's own calibration."""
    from runners.serving.int8 import embeddings_agree, export_int8, sample_photos
    from runners.serving.openvino_ir import compile_ir, export_ir

    export_ir(_nima_pooled_features(), preprocess.NIMA_SIZE, tmp_path)
    verdict = export_int8(
        tmp_path, preprocess.nima_input, embeddings_agree, transformer=False, photos=sample_photos()
    )
    assert verdict["stored"], verdict
    batch = np.stack([preprocess.nima_input(p) for p in _photos()])
    exact = compile_ir(tmp_path, "fp32", 1)(batch)[0]
    fast = compile_ir(tmp_path, "int8", 1)(batch)[0]
    assert 0.999 <= _cosine(fast, exact).min() < 0.999999


def test_an_int8_graph_that_misses_the_bound_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Scores on a scale where int8's rounding shows (x 1000): the import keeps no int8 IR,
    records why, and a runner asked for int8 computes in fp32 and says so."""
    import torch

    from runners.serving.int8 import MAX_SCORE_DIFFERENCE, export_int8, sample_photos, scores_agree
    from runners.serving.openvino_ir import INT8_IR_FILE, export_ir, image_precision

    class TinyScorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 8, 3, stride=4)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.permute(0, 3, 1, 2).float() / 255.0
            return self.conv(x).mean(dim=(1, 2, 3))

    export_ir(TinyScorer().eval(), 64, tmp_path)
    verdict = export_int8(
        tmp_path,
        lambda rgb: np.asarray(preprocess.clip_input(rgb, 64)),
        scores_agree(lambda raw: raw * 1000.0),
        transformer=False,
        photos=sample_photos(),
    )
    assert not verdict["stored"] and verdict["value"] > verdict["bound"] == MAX_SCORE_DIFFERENCE
    assert not (tmp_path / INT8_IR_FILE).exists()
    monkeypatch.setenv(PRECISION_ENV, "int8")
    monkeypatch.setenv(ENGINE_ENV, "auto")
    assert image_precision(tmp_path, "fp32") == "fp32"
    assert "holds no int8 IR" in caplog.text
