"""Caller-supplied embeddings: their two wire forms and the checks shared by every route that
compares embeddings (clustering, text search, zero-shot tags).

10,000 CLIP embeddings are 5 million numbers. As JSON (`embeddings`, the v1 form) they are
parsed by pydantic-core straight into one float32 matrix: Rust reads and type-checks every
number in strict mode, and no list of lists survives the parse (so nothing later walks 5
million Python floats again). `embeddings_base64` carries the same matrix as little-endian
float32 bytes, row after row, in base64: a quarter of the bytes and no number to parse at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pybase64
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

from festora.errors import ApiError, ValidationFailed

if TYPE_CHECKING:
    from festora.schemas import EmbeddingsInput

BASE64_PATTERN = "^[A-Za-z0-9+/]*={0,2}$"
FLOAT32 = np.dtype("<f4")


def rectangular(rows: list[list[float]]) -> np.ndarray:
    """Rows of equal length as an (n, d) float32 matrix; ValueError for ragged rows. A finite
    value beyond float32's range becomes infinite (and is refused as such by `unit_rows`)."""
    lengths = {len(row) for row in rows}
    if len(lengths) > 1:
        raise ValueError(
            f"embeddings must all have the same length, got lengths {sorted(lengths)[:10]}"
        )
    with np.errstate(over="ignore"):
        return np.array(rows, dtype=np.float32).reshape(len(rows), -1)


def _from_base64(text: str) -> np.ndarray:
    try:
        raw = pybase64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError("must be standard base64 (A-Z a-z 0-9 + /, = padding)") from None
    if len(raw) % FLOAT32.itemsize:
        raise ValueError(
            f"decodes to {len(raw)} bytes, not a whole number of float32 values (4 bytes each)"
        )
    return np.frombuffer(raw, dtype=FLOAT32)


class _FloatRows:
    """`[[float]]` in the document and on the wire; an (n, d) float32 matrix once parsed."""

    @staticmethod
    def __get_pydantic_core_schema__(source: Any, handler: GetCoreSchemaHandler) -> Any:
        rows = core_schema.list_schema(
            core_schema.list_schema(core_schema.float_schema()), min_length=1
        )
        return core_schema.no_info_after_validator_function(
            rectangular,
            rows,
            serialization=core_schema.plain_serializer_function_ser_schema(np.ndarray.tolist),
        )


class _Float32Base64:
    """A base64 string in the document and on the wire; its float32 values once parsed. The
    decoder checks the alphabet itself (a regex over 27 MB would take longer than decoding)."""

    @staticmethod
    def __get_pydantic_core_schema__(source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_after_validator_function(
            _from_base64,
            core_schema.str_schema(min_length=1),
            serialization=core_schema.plain_serializer_function_ser_schema(encode_base64),
        )

    @staticmethod
    def __get_pydantic_json_schema__(schema: Any, handler: GetJsonSchemaHandler) -> Any:
        return {**handler(schema), "contentEncoding": "base64", "pattern": BASE64_PATTERN}


FloatRows = Annotated[np.ndarray, _FloatRows]
Float32Base64 = Annotated[np.ndarray, _Float32Base64]


def encode_base64(vectors: Any) -> str:
    """`embeddings_base64` for these vectors (a client's side of the compact form)."""
    return pybase64.b64encode(np.asarray(vectors, dtype=FLOAT32).tobytes()).decode()


def unit_rows(
    embeddings: np.ndarray | list[list[float]],
    error: type[ApiError],
    dimensions: int | None = None,
) -> np.ndarray:
    """The embeddings as an (n, d) float32 matrix of unit vectors, or `error` (a 422) saying
    why not: ragged or empty rows, a length other than `dimensions` (the model's, when given),
    NaN or infinite values, zero vectors (they have no direction, so no cosine)."""
    if isinstance(embeddings, np.ndarray):
        matrix = embeddings
    else:
        try:
            matrix = rectangular(embeddings)
        except ValueError as exc:
            raise error(str(exc)) from None
    length = matrix.shape[1]
    if length == 0:
        raise error("embeddings must not be empty vectors")
    if dimensions is not None and length != dimensions:
        raise error(
            f"embeddings have {length} dimensions; this model's have {dimensions}",
            detail={"expected_dimensions": dimensions, "received_dimensions": length},
        )
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


def check_ids(count: int, image_ids: list[str], error: type[ApiError]) -> None:
    if len(image_ids) != count:
        raise error(f"{count} embeddings but {len(image_ids)} image_ids: they must match")


def image_matrix(req: EmbeddingsInput, dimensions: int) -> np.ndarray:
    """The request's embeddings for comparing with text embeddings of `dimensions` (the
    model's): unit rows, or a 422 validation_error saying what is wrong."""
    if req.embeddings is not None:
        matrix = req.embeddings
    else:
        matrix = _packed_rows(req.embeddings_base64, len(req.image_ids), dimensions)
    check_ids(len(matrix), req.image_ids, ValidationFailed)
    return unit_rows(matrix, ValidationFailed, dimensions)


def _packed_rows(values: np.ndarray, count: int, dimensions: int) -> np.ndarray:
    """`embeddings_base64`'s values as rows: one per image id when they divide evenly (so a
    wrong length reads as a dimension mismatch), else rows of the model's size (so a wrong
    number of ids reads as a count mismatch)."""
    if count and values.size % count == 0:
        return values.reshape(count, -1)
    if values.size % dimensions == 0:
        return values.reshape(-1, dimensions)
    raise ValidationFailed(
        f"embeddings_base64 holds {values.size} float32 values: not {count} vectors of "
        f"{dimensions} (this model's dimensions)",
        detail={"expected_dimensions": dimensions, "received_values": int(values.size)},
    )
