"""Past the input's parsing, failures stay server errors: BentoML answers 500 and logs the
traceback; a client's error is answered in the envelope."""

from __future__ import annotations

import anyio
import pytest
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from festora.errors import ImageDecodeError
from festora.request_parsing import _answering_client_errors

REQUEST = Request({"type": "http", "method": "POST", "path": "/v1/x", "headers": []})


class Result(BaseModel):
    score: float


def call(failure: Exception) -> object:
    async def endpoint(self: object, name: str, request: Request) -> object:
        raise failure

    return anyio.run(_answering_client_errors(endpoint), None, "x", REQUEST)


def test_unexpected_errors_propagate_to_bentomls_500() -> None:
    with pytest.raises(KeyError):
        call(KeyError("boom"))


def test_a_result_failing_its_own_model_is_a_server_error_not_a_400() -> None:
    try:
        Result(score="high")  # type: ignore[arg-type]
    except ValidationError as exc:
        failure = exc
    with pytest.raises(RuntimeError) as raised:
        call(failure)
    assert isinstance(raised.value.__cause__, ValidationError)


def test_api_errors_become_envelope_responses() -> None:
    response = call(ImageDecodeError("not an image"))
    assert response.status_code == 422  # type: ignore[attr-defined]
    assert response.body == b'{"error":"image_decode_error","message":"not an image"}'  # type: ignore[attr-defined]
