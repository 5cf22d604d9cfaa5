"""The v1 error envelope: `{"error": code, "message": text, "detail": optional}`.

Domain code raises `ApiError` (or a subclass); the service turns it into a response with
`error_response`. Batch endpoints turn it into the per-image `error` string instead.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


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
