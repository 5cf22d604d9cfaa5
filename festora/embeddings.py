"""Caller-supplied embeddings as a matrix of unit vectors: the checks shared by every route
that compares embeddings (clustering, text search, zero-shot tags)."""

from __future__ import annotations

import numpy as np

from festora.errors import ApiError, ValidationFailed


def unit_rows(
    embeddings: list[list[float]], error: type[ApiError], dimensions: int | None = None
) -> np.ndarray:
    """The embeddings as an (n, d) float32 matrix of unit vectors, or `error` (a 422) saying
    why not: ragged or empty rows, a length other than `dimensions` (the model's, when given),
    NaN or infinite values, zero vectors (they have no direction, so no cosine)."""
    lengths = {len(vector) for vector in embeddings}
    if len(lengths) != 1:
        raise error(f"embeddings must all have the same length, got lengths {sorted(lengths)[:10]}")
    (length,) = lengths
    if length == 0:
        raise error("embeddings must not be empty vectors")
    if dimensions is not None and length != dimensions:
        raise error(
            f"embeddings have {length} dimensions; this model's have {dimensions}",
            detail={"expected_dimensions": dimensions, "received_dimensions": length},
        )
    matrix = np.asarray(embeddings, dtype=np.float32)
    bad_rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad_rows.size:
        raise error(
            "embeddings contain NaN or infinite values",
            detail={"indices": bad_rows[:20].tolist()},
        )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    zero_rows = np.flatnonzero(norms[:, 0] == 0)
    if zero_rows.size:
        raise error(
            "zero vectors have no direction, so no cosine similarity",
            detail={"indices": zero_rows[:20].tolist()},
        )
    return matrix / norms


def check_ids(embeddings: list[list[float]], image_ids: list[str], error: type[ApiError]) -> None:
    if len(image_ids) != len(embeddings):
        raise error(f"{len(embeddings)} embeddings but {len(image_ids)} image_ids: they must match")


def image_matrix(
    embeddings: list[list[float]], image_ids: list[str], dimensions: int
) -> np.ndarray:
    """Images' embeddings for comparing with text embeddings of `dimensions` (the model's):
    unit rows, or a 422 validation_error saying what is wrong."""
    check_ids(embeddings, image_ids, ValidationFailed)
    return unit_rows(embeddings, ValidationFailed, dimensions)
