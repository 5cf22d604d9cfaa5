"""The CLIP text runner in-process: parity with transformers' `CLIPModel` on the same stored
(random-init) checkpoint, in fp32 on both engines and in bf16 within the precision bounds, and
zero-shot tags equal to `CLIPModel`'s own `logits_per_image` softmax.

The store is conftest's `model_store`, imported by `scripts/import_models.py --random-init`:
the tokenizer, logit scale and text IR come through the real import path.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skimage import data
from sklearn.datasets import load_sample_images

from festora import preprocess
from festora.models import CLIP, CLIP_TEXT, resolve, runner_config
from festora.schemas import DEFAULT_PROMPT_TEMPLATE, ModelStatus
from festora.tags import probabilities, prompts, top_tags
from runners.serving.openvino_ir import ENGINE_ENV
from runners.serving.precision import PRECISION_ENV, cpu_has_native_bf16

needs_bf16 = pytest.mark.skipif(
    not cpu_has_native_bf16(), reason="no native bf16 on this CPU: FESTORA_PRECISION=auto is fp32"
)

TEXTS = [
    "bride cutting the cake",
    "a dog",
    "Two people dancing at a wedding reception, confetti in the air",
    "a photo of a cat",
    "  Mixed CASE,   spacing and punctuation!  ",
    "café au lait ☕",
    "a very long caption " * 12,  # over 77 tokens: truncated
]
LONG = len(TEXTS) - 1
LABELS = ["astronaut", "cup of coffee", "cat", "building", "flower"]


def _photos() -> list[np.ndarray]:
    china, flower = load_sample_images().images
    return [data.astronaut(), data.coffee(), data.chelsea(), china, flower]


@pytest.fixture(scope="module")
def reference(model_store: Path) -> tuple[Any, Any]:
    """transformers' own CLIPModel and CLIPTokenizer on the stored checkpoint."""
    from transformers import CLIPModel, CLIPTokenizer

    _, prov = resolve(CLIP_TEXT)
    return CLIPModel.from_pretrained(prov.path).eval(), CLIPTokenizer.from_pretrained(prov.path)


def load_runner(monkeypatch: pytest.MonkeyPatch, engine: str, precision: str = "fp32") -> Any:
    from runners.clip_text import CLIPTextEncoder

    monkeypatch.setenv(ENGINE_ENV, "torch" if engine == "torch" else "auto")
    monkeypatch.setenv(PRECISION_ENV, precision)
    runner = CLIPTextEncoder()
    assert runner.loaded, runner.error
    assert runner.engine == f"{engine}-{precision}"
    return runner


def vectors(runner: Any, texts: list[str]) -> np.ndarray:
    return np.asarray([e["vector"] for e in runner.encode(texts)], dtype=np.float32)


def reference_vectors(reference: tuple[Any, Any], texts: list[str]) -> np.ndarray:
    import torch

    model, tokenizer = reference
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.inference_mode():
        features = model.get_text_features(**tokens).pooler_output
    return torch.nn.functional.normalize(features, dim=-1).numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.sum(a * b, axis=-1)


@pytest.mark.parametrize("engine", ["openvino", "torch"])
def test_text_vectors_match_get_text_features(
    model_store: Path, reference: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    runner = load_runner(monkeypatch, engine)
    encoded = runner.encode(TEXTS)
    ours = np.asarray([e["vector"] for e in encoded], dtype=np.float32)
    assert ours.shape == (len(TEXTS), 512)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert cosine(ours, reference_vectors(reference, TEXTS)).min() >= 0.9999
    assert [e["truncated"] for e in encoded] == [i == LONG for i in range(len(TEXTS))]
    # not vacuous: the random tower still tells these texts apart
    assert (ours @ ours.T)[np.triu_indices(len(TEXTS), 1)].max() < 0.999
    # padding never changes a vector: each text alone gives what it gave in the batch
    alone = np.concatenate([vectors(runner, [t]) for t in TEXTS])
    assert cosine(alone, ours).min() >= 0.9999


def test_tokens_are_the_checkpoints_own(model_store: Path, reference: tuple[Any, Any]) -> None:
    from runners.clip_text import CLIPTextEncoder

    _, tokenizer = reference
    runner = CLIPTextEncoder()
    ids, truncated = runner._tokens(TEXTS)
    expected = tokenizer(TEXTS, truncation=True, max_length=77)["input_ids"]
    for row, theirs in zip(ids, expected, strict=True):
        assert row[: len(theirs)].tolist() == theirs
        assert set(row[len(theirs) :].tolist()) <= {tokenizer.eos_token_id}  # padding
    assert ids.shape[1] == 77 and truncated[LONG]


@needs_bf16
@pytest.mark.parametrize("engine", ["openvino", "torch"])
def test_bf16_text_vectors_match_fp32(
    model_store: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    exact = vectors(load_runner(monkeypatch, "torch"), TEXTS)
    fast = vectors(load_runner(monkeypatch, engine, "bf16"), TEXTS)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert cosine(fast, exact).min() >= 0.999


def test_tags_equal_clip_logits_per_image_softmax(
    model_store: Path, reference: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Image runner + text runner + festora.tags give CLIPModel's own zero-shot softmax."""
    import torch
    from transformers import CLIPImageProcessor

    from runners.clip import CLIPEncoder

    monkeypatch.setenv(PRECISION_ENV, "fp32")
    text_runner = load_runner(monkeypatch, "openvino")
    model, tokenizer = reference
    photos = _photos()
    crops = np.stack([preprocess.clip_input(p) for p in photos])
    images = CLIPEncoder().encode(crops)
    label_prompts = prompts(LABELS, DEFAULT_PROMPT_TEMPLATE)
    assert label_prompts[1] == "a photo of cup of coffee"
    scale = asyncio.run(text_runner.describe())["logit_scale"]
    ours = probabilities(images, vectors(text_runner, label_prompts), scale)

    _, prov = resolve(CLIP)
    pixels = CLIPImageProcessor.from_pretrained(prov.path)(
        images=list(crops), do_resize=False, do_center_crop=False, return_tensors="pt"
    )["pixel_values"]
    tokens = tokenizer(label_prompts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**tokens, pixel_values=pixels).logits_per_image.softmax(-1).numpy()
    assert scale == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-6)
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-9)

    tagged = top_tags(ours, LABELS, ["a", "b", "c", "d", "e"], top_k=3)
    for row, image in zip(expected, tagged, strict=True):
        assert [t.label for t in image.tags] == [LABELS[j] for j in np.argsort(-row)[:3]]


def test_status_and_batching(model_store: Path) -> None:
    from runners.clip_text import CLIPTextEncoder

    runner = CLIPTextEncoder()
    status = ModelStatus.model_validate(asyncio.run(runner.status()))
    assert status.name == "clip_text" and status.loaded
    assert status.tag.startswith("festora-clip:") and status.weights == "random-init"
    assert CLIPTextEncoder.apis["encode"].batchable
    assert CLIPTextEncoder.apis["encode"].max_batch_size == runner_config(CLIP_TEXT).max_batch_size
    with pytest.raises(ValueError, match="list of strings"):
        runner.encode([b"bytes"])  # type: ignore[list-item]


def test_an_entry_imported_before_the_text_tower_is_reported(tmp_path: Path) -> None:
    """A festora-clip entry from before the tokenizer and logit scale were stored: the runner
    says to import again (scripts/import_models.py then does, see test_import_models)."""
    import bentoml
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models.model import ModelStore

    from runners.clip_text import CLIPTextEncoder

    store = ModelStore(tmp_path / "models")
    with bentoml.models.create(CLIP.store_name, _model_store=store) as model:
        (Path(model.path) / CLIP.weights_file).write_bytes(b"older")
    previous = BentoMLContainer.model_store.get()
    BentoMLContainer.model_store.set(store)
    try:
        runner = CLIPTextEncoder()
    finally:
        BentoMLContainer.model_store.set(previous)
    assert not runner.loaded
    assert "without the text tower's tokenizer" in runner.error
    assert "import_models.py" in runner.error
    with pytest.raises(RuntimeError, match="model not loaded"):
        runner.encode(["a dog"])
