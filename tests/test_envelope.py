"""The envelope middleware turns every non-envelope /v1 error into the documented shape."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from festora.errors import error_response
from festora.middleware.envelope import ErrorEnvelopeMiddleware


async def bentoml_validation(request: Request) -> JSONResponse:
    detail = [{"loc": ["image"], "msg": "Field required", "type": "missing"}]
    return JSONResponse({"error": "1 validation error for Input", "detail": detail}, 400)


async def bentoml_crash(request: Request) -> JSONResponse:
    return JSONResponse({"error": "An unexpected error has occurred"}, 500)


async def bentoml_array(request: Request) -> JSONResponse:
    return JSONResponse([{"error": "pickle is not allowed"}], 415)


async def ours(request: Request) -> JSONResponse:
    return error_response(503, "model_not_ready", "model not loaded: clip")


async def text_error(request: Request) -> PlainTextResponse:
    return PlainTextResponse("upstream exploded", 502)


async def fine(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route(f"/v1/{endpoint.__name__}", endpoint, methods=["POST"])
        for endpoint in (bentoml_validation, bentoml_crash, bentoml_array, ours, text_error, fine)
    ]
    + [Route("/outside", bentoml_crash, methods=["POST"])]
)
app.add_middleware(ErrorEnvelopeMiddleware)
client = TestClient(app)


def test_bentoml_validation_400_becomes_422_validation_error() -> None:
    response = client.post("/v1/bentoml_validation")
    assert response.status_code == 422
    assert response.json() == {
        "error": "validation_error",
        "message": "request body failed validation",
        "detail": [{"loc": ["image"], "msg": "Field required", "type": "missing"}],
    }


def test_unexpected_500_becomes_internal_error_without_details() -> None:
    response = client.post("/v1/bentoml_crash")
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "message": "an unexpected error occurred"}


def test_array_bodies_and_plain_text_get_the_envelope() -> None:
    array = client.post("/v1/bentoml_array")
    assert array.status_code == 415
    assert array.json() == {"error": "unsupported_media_type", "message": "pickle is not allowed"}
    text = client.post("/v1/text_error")
    assert text.status_code == 502 and text.json()["error"] == "internal_error"


def test_our_envelopes_and_successes_pass_through() -> None:
    assert client.post("/v1/ours").json() == {
        "error": "model_not_ready",
        "message": "model not loaded: clip",
    }
    assert client.post("/v1/fine").json() == {"ok": True}


def test_paths_outside_v1_are_left_alone() -> None:
    assert client.post("/outside").json() == {"error": "An unexpected error has occurred"}
