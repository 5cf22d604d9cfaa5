"""Search and zero-shot tag math, and the checks on caller-supplied embeddings, without a
server (the routes are exercised end to end in test_api.py)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from festora.embeddings import encode_base64, image_matrix
from festora.errors import ValidationFailed
from festora.schemas import EmbedTextRequest, SearchRequest, TagsRequest
from festora.search import best_matches
from festora.tags import probabilities, prompts, top_tags


def unit(rows: list[list[float]]) -> np.ndarray:
    matrix = np.asarray(rows, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_best_matches_are_best_first_with_ties_in_input_order() -> None:
    images = unit([[0, 1], [1, 0], [1, 1], [1, 0], [-1, 0]])
    hits = best_matches(unit([[1, 0]])[0], images, ["a", "b", "c", "d", "e"], top_k=4)
    assert [h.image_id for h in hits] == ["b", "d", "c", "a"]
    assert [h.score for h in hits] == pytest.approx([1.0, 1.0, 0.707107, 0.0], abs=1e-6)
    assert len(best_matches(unit([[1, 0]])[0], images, list("abcde"), top_k=50)) == 5


def search(
    embeddings: list[list[float]] | None = None, ids: tuple[str, ...] = ("a",), **extra: Any
) -> SearchRequest:
    return SearchRequest.model_validate(
        {"query": "q", "image_ids": list(ids), "embeddings": embeddings, **extra}, strict=True
    )


def test_image_matrix_checks_what_a_caller_sends() -> None:
    matrix = image_matrix(search([[3.0, 4.0], [0.0, 2.0]], ["a", "b"]), dimensions=2)
    np.testing.assert_allclose(matrix, [[0.6, 0.8], [0.0, 1.0]], atol=1e-7)
    for embeddings, ids, message in (
        ([[1.0, 0.0]], ["a", "b"], "image_ids"),
        ([[1.0, 0.0, 0.0]], ["a"], "this model's have 2"),
        ([[float("nan"), 1.0]], ["a"], "NaN"),
        ([[1e39, 1.0]], ["a"], "infinite"),  # beyond float32
        ([[0.0, 0.0]], ["a"], "zero vectors"),
        ([[]], ["a"], "empty"),
    ):
        with pytest.raises(ValidationFailed, match=message) as caught:
            image_matrix(search(embeddings, ids), dimensions=2)
        assert caught.value.status_code == 422 and caught.value.code == "validation_error"


def test_json_embeddings_are_parsed_strictly_into_one_float32_matrix() -> None:
    body = b'{"query": "q", "embeddings": [[1, 0.5], [-2.5e-3, 4]], "image_ids": ["a", "b"]}'
    parsed = SearchRequest.model_validate_json(body, strict=True)
    assert isinstance(parsed.embeddings, np.ndarray) and parsed.embeddings.dtype == np.float32
    np.testing.assert_array_equal(
        parsed.embeddings, np.array([[1, 0.5], [-2.5e-3, 4]], dtype=np.float32)
    )
    for rows, where, what in (
        ("[[1.0, true]]", ["embeddings", 0, 1], "float_type"),
        ('[[1.0, "2"]]', ["embeddings", 0, 1], "float_type"),
        ("[[1.0], [1.0, 2.0]]", ["embeddings"], "value_error"),  # ragged
        ("[]", ["embeddings"], "too_short"),
    ):
        raw = f'{{"query": "q", "embeddings": {rows}, "image_ids": ["a"]}}'
        with pytest.raises(ValidationError) as caught:
            SearchRequest.model_validate_json(raw, strict=True)
        (error,) = caught.value.errors()
        assert list(error["loc"]) == where and error["type"] == what, error


def test_base64_embeddings_equal_the_json_form() -> None:
    vectors = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    ids = list("abcde")
    packed = search(None, ids, embeddings_base64=encode_base64(vectors))
    assert packed.embeddings is None
    np.testing.assert_array_equal(
        image_matrix(packed, dimensions=4), image_matrix(search(vectors.tolist(), ids), 4)
    )
    little_endian = base64.b64encode(vectors.astype("<f4").tobytes()).decode()
    assert encode_base64(vectors) == little_endian
    for count, dimensions, message in (
        (3, 3, "20 float32 values: not 3 vectors of 3"),  # neither fits
        (3, 4, "5 embeddings but 3 image_ids"),  # 5 vectors of the model's size
        (5, 2, "have 4 dimensions; this model's have 2"),  # one per id, wrong size
    ):
        with pytest.raises(ValidationFailed, match=message):
            image_matrix(
                search(None, ids[:count], embeddings_base64=encode_base64(vectors)), dimensions
            )


def test_exactly_one_form_of_embeddings_and_only_real_base64() -> None:
    for extra in (
        {},
        {"embeddings": [[1.0]], "embeddings_base64": encode_base64([[1.0]])},
        {"embeddings_base64": "AAC"},  # not base64
        {"embeddings_base64": "AA AA"},
        {"embeddings_base64": "AAA="},  # 2 bytes: half a float32
        {"embeddings_base64": ""},
    ):
        with pytest.raises(ValidationError):
            SearchRequest.model_validate({"query": "q", "image_ids": ["a"], **extra}, strict=True)
    tags = TagsRequest(
        embeddings_base64=encode_base64([[1.0, 0.0]]), image_ids=["a"], labels=["x", "y"]
    )
    np.testing.assert_array_equal(image_matrix(tags, dimensions=2), [[1.0, 0.0]])


def test_probabilities_are_clips_softmax() -> None:
    images = unit([[1, 0, 0], [0, 1, 1]])
    labels = unit([[1, 0, 0], [0, 1, 0], [1, 1, 1]])
    scale = 100.0
    from scipy.special import softmax

    expected = softmax(scale * images.astype(np.float64) @ labels.T.astype(np.float64), axis=1)
    ours = probabilities(images, labels, scale)
    np.testing.assert_allclose(ours, expected, rtol=1e-6)
    tags = top_tags(ours, ["x", "y", "all"], ["one", "two"], top_k=2)
    assert [t.label for t in tags[0].tags] == ["x", "all"]
    assert tags[1].image_id == "two" and len(tags[1].tags) == 2


def test_prompts_replace_only_the_placeholder() -> None:
    assert prompts(["cat", "dog"], "a photo of {label}") == ["a photo of cat", "a photo of dog"]
    assert prompts(["cat"], "{label} {not a field}") == ["cat {not a field}"]


def test_request_bounds() -> None:
    with pytest.raises(ValidationError):
        EmbedTextRequest(texts=[" \n"])
    with pytest.raises(ValidationError):
        EmbedTextRequest(texts=["x"] * 65)
    assert SearchRequest(query="dog", embeddings=[[1.0]], image_ids=["a"]).top_k == 10
    base = {"embeddings": [[1.0]], "image_ids": ["a"]}
    assert TagsRequest(**base, labels=["a", "b"]).prompt_template == "a photo of {label}"
    for bad in (
        {"labels": ["a"]},
        {"labels": [str(i) for i in range(201)]},
        {"labels": ["a", "a"]},
        {"labels": ["a" * 201, "b"]},
        {"labels": ["a", "b"], "prompt_template": "a photo"},
        {"labels": ["a", "b"], "top_k": 0},
    ):
        with pytest.raises(ValidationError):
            TagsRequest(**base, **bad)
