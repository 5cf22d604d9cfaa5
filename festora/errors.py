"""The v1 error envelope: `{"error": code, "message": text, "detail": optional}`.

Domain code raises `ApiError` (or a subclass); the service turns it into a response with
`error_response`. Batch endpoints turn it into the per-image `error` string instead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from starlette.responses import JSONResponse

# What a validation error may echo back of the caller's input: enough to see the mistake,
# never a whole base64 image, never a credential.
INPUT_MAX_CHARS = 64
INPUT_MAX_ITEMS = 10
INPUT_MAX_DEPTH = 4
_SECRET_NAME = re.compile(r"key|token|secret|password|authorization", re.IGNORECASE)


class ApiError(Exception):
    status_code: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        detail: Any = None,
        status_code: int | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.headers = headers or {}
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code

    def to_response(self) -> JSONResponse:
        return error_response(self.status_code, self.code, self.message, self.detail, self.headers)


class ValidationFailed(ApiError):
    status_code = 422
    code = "validation_error"


class ImageFetchError(ApiError):
    status_code = 422
    code = "image_fetch_error"


class ImageDecodeError(ApiError):
    status_code = 422
    code = "image_decode_error"


class ImageTooLarge(ApiError):
    status_code = 413
    code = "image_too_large"


class ModelNotReady(ApiError):
    status_code = 503
    code = "model_not_ready"


class RetryLater(ApiError):
    """A 503 the caller retries after `retry_after` seconds (its `Retry-After`)."""

    status_code = 503

    def __init__(self, message: str, *, retry_after: int, detail: Any = None) -> None:
        super().__init__(message, detail=detail, headers={"Retry-After": str(retry_after)})


class ModelUnavailable(RetryLater):
    """A runner died or is restarting."""

    code = "model_unavailable"


class Overloaded(RetryLater):
    """More work than the service, or one of its runners, can do in time."""

    code = "overloaded"


# Errors that say nothing of the image: a runner restarting, not loaded yet, or out of time.
# The same image may succeed when tried again.
TRANSIENT_ERRORS = frozenset({ModelUnavailable.code, ModelNotReady.code, Overloaded.code})


def error_response(
    status_code: int,
    code: str,
    message: str,
    detail: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "message": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status_code, headers=headers)


def validation_details(errors: Iterable[Any]) -> list[dict[str, Any]]:
    """pydantic errors as FastAPI 0.115 lists them in `detail`: `type`, `loc` (from "body"),
    `msg`, `input` (trimmed) and `ctx` when pydantic gives one (made JSON-safe)."""
    details = []
    for error in errors:
        entry: dict[str, Any] = {
            "type": error["type"],
            "loc": ["body", *error.get("loc", ())],
            "msg": error["msg"],
            "input": trimmed_input(error.get("input")),
        }
        if error.get("ctx"):
            entry["ctx"] = {k: _json_scalar(v) for k, v in error["ctx"].items()}
        details.append(entry)
    return details


def trimmed_input(value: Any, depth: int = 0) -> Any:
    """A copy of `value` small enough to echo: long strings cut, long lists and objects
    shortened, values of credential-like keys replaced."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        if len(value) <= INPUT_MAX_CHARS:
            return value
        return f"{value[: INPUT_MAX_CHARS // 2]}...[{len(value)} characters]"
    if depth >= INPUT_MAX_DEPTH and isinstance(value, dict | list | tuple):
        return f"[{type(value).__name__} of {len(value)}]"
    if isinstance(value, dict):
        items = list(value.items())
        return {
            str(k): "[redacted]" if _SECRET_NAME.search(str(k)) else trimmed_input(v, depth + 1)
            for k, v in items[:INPUT_MAX_ITEMS]
        }
    if isinstance(value, list | tuple):
        kept = [trimmed_input(v, depth + 1) for v in value[:INPUT_MAX_ITEMS]]
        if len(value) > INPUT_MAX_ITEMS:
            kept.append(f"...[{len(value)} items]")
        return kept
    return _json_scalar(value)


def _json_scalar(value: Any) -> Any:
    """JSON has no NaN or infinity, and no exception objects (pydantic's `ctx.error`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
