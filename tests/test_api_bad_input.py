"""Whatever a client sends gets a 4xx in the envelope, never a 5xx; validation errors read like
FastAPI's; rejections are logged as INFO without a traceback, image data or secrets; `.env` is
read. One real `bentoml serve` of a copy of the project (like a Bento's `src/`) whose `.env`
holds the API key, with an empty model store (nothing here needs a model)."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.httpserver import LocalHttpServer, send_bytes
from tests.serving import ROOT, Server, serve

pytestmark = pytest.mark.slow

DOTENV_KEY = "festora-dotenv-key-71c3e0aa"
KEY = {"X-Api-Key": DOTENV_KEY}
BLUR_ONLY = {"run_quality": "false", "run_emotion": "false", "run_embedding": "false"}


def jpeg() -> bytes:
    buffer = io.BytesIO()
    rgb = np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buffer, "JPEG")
    return buffer.getvalue()


PHOTO = jpeg()
# Base64 of a photo: a run of it in a response or a log line would be a leak.
PHOTO_B64 = base64.b64encode(PHOTO).decode()


@pytest.fixture(scope="module")
def server(empty_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "service.py", project)
    for package in ("festora", "runners"):
        shutil.copytree(
            ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    (project / ".env").write_text(
        f"API_KEY={DOTENV_KEY}\nMAX_BATCH_SIZE=3\nENVIRONMENT=from-dotenv\n"
    )
    env = {
        "BENTOML_HOME": str(empty_store),
        "API_KEY": "",  # blank counts as unset: the .env's key must apply
        "MAX_BATCH_SIZE": "2",  # the environment wins over .env
        "RATE_LIMIT_ENABLED": "false",
        "ALLOW_PRIVATE_URLS": "true",
    }
    log = tmp_path_factory.mktemp("logs") / "bad-input.log"
    with serve(env, log, working_dir=project) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, headers=KEY) as client:
        yield client


def assert_validation_error(response: httpx.Response, status: int = 422) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == "validation_error" and body["message"], body
    return body


# ---- .env ----------------------------------------------------------------------------------


def test_api_key_set_only_in_dotenv_is_enforced(server: Server) -> None:
    payload = {"embeddings": [[1, 0], [0, 1]], "image_ids": ["a", "b"]}
    refused = httpx.post(f"{server.url}/v1/cluster", json=payload, timeout=60)
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    accepted = httpx.post(f"{server.url}/v1/cluster", json=payload, headers=KEY, timeout=60)
    assert accepted.status_code == 200, accepted.text
    assert httpx.get(f"{server.url}/health", timeout=60).json()["environment"] == "from-dotenv"


def test_the_environment_wins_over_dotenv(http: httpx.Client) -> None:
    images = [{"data": PHOTO_B64}] * 3
    response = http.post("/v1/analyze/batch", json={"images": images})
    assert response.status_code == 422 and response.json()["error"] == "batch_too_large"
    assert response.json()["detail"]["max_batch_size"] == 2


# ---- multipart -----------------------------------------------------------------------------


def test_multipart_without_boundary_is_422_on_every_post_route(http: httpx.Client) -> None:
    paths = http.get("/docs.json").json()["paths"]
    routes = [path for path, item in paths.items() if "post" in item and path.startswith("/v1/")]
    assert "/v1/analyze" in routes and "/v1/analyze/upload" in routes
    for path in routes:
        response = http.post(
            path, content=b"image=abc", headers={"Content-Type": "multipart/form-data"}
        )
        body = assert_validation_error(response)
        assert "boundary" in body["message"], path


def test_upload_under_another_field_name_is_422_naming_the_missing_field(
    http: httpx.Client,
) -> None:
    response = http.post(
        "/v1/analyze/upload", files={"file": ("x.jpg", PHOTO, "image/jpeg")}, data=BLUR_ONLY
    )
    (error,) = assert_validation_error(response)["detail"]
    assert error["type"] == "missing" and error["loc"] == ["body", "image"]


def test_upload_with_an_extra_binary_part_is_analysed(http: httpx.Client) -> None:
    files = {"image": ("x.jpg", PHOTO, "image/jpeg"), "extra": ("y.bin", b"\xff\xfe\x00", None)}
    response = http.post("/v1/analyze/upload", files=files, data=BLUR_ONLY)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["width_px"] == 160


def test_binary_part_where_text_is_expected_is_422(http: httpx.Client) -> None:
    files = {"image": ("x.jpg", PHOTO, "image/jpeg"), "run_blur": ("b", b"\xff\xd8", None)}
    (error,) = assert_validation_error(http.post("/v1/analyze/upload", files=files))["detail"]
    assert error["loc"] == ["body", "run_blur"]


def test_text_where_a_file_is_expected_is_422_and_never_fetched(http: httpx.Client) -> None:
    with LocalHttpServer() as files:
        url = files.route("/x.jpg", send_bytes(PHOTO, content_type="image/jpeg"))
        response = http.post("/v1/analyze/upload", data={"image": url, **BLUR_ONLY})
        (error,) = assert_validation_error(response)["detail"]
        assert error["loc"] == ["body", "image"] and error["type"] == "file_expected"
        assert files.requests_to("/x.jpg") == []


def test_form_text_fields_keep_their_text_and_flags_must_be_booleans(http: httpx.Client) -> None:
    photo = {"image": ("x.jpg", PHOTO, "image/jpeg")}
    response = http.post("/v1/analyze/upload", files=photo, data={"image_id": "123", **BLUR_ONLY})
    assert response.status_code == 200, response.text
    assert response.json()["result"]["image_id"] == "123"
    (error,) = assert_validation_error(
        http.post("/v1/analyze/upload", files=photo, data={**BLUR_ONLY, "run_quality": "0"})
    )["detail"]
    assert error["loc"] == ["body", "run_quality"] and error["type"] == "bool_type"


def test_json_is_validated_as_the_document_types_it(http: httpx.Client) -> None:
    """Strict types: the OpenAPI document says boolean and number, and means it."""
    ids = ["a", "b"]
    for field, value in (("eps", "0.5"), ("min_samples", 2.5), ("min_samples", "2")):
        payload = {"embeddings": [[1, 0], [0, 1]], "image_ids": ids, field: value}
        (error,) = assert_validation_error(http.post("/v1/cluster", json=payload))["detail"]
        assert error["loc"] == ["body", field], error
    flag = {"image": {"data": PHOTO_B64}, "run_blur": 0}
    (error,) = assert_validation_error(http.post("/v1/analyze", json=flag))["detail"]
    assert error["loc"] == ["body", "run_blur"] and error["type"] == "bool_type"
    accepted = {"embeddings": [[1, 0], [0, 1]], "image_ids": ids, "eps": 1, "min_samples": 2}
    assert http.post("/v1/cluster", json=accepted).status_code == 200


def test_form_encoded_and_unknown_media_types_are_4xx(http: httpx.Client) -> None:
    for content_type in ("application/x-www-form-urlencoded", "text/plain", "image/jpeg"):
        for path in ("/v1/analyze", "/v1/analyze/upload"):
            response = http.post(path, content=PHOTO, headers={"Content-Type": content_type})
            assert_validation_error(response)


# ---- FastAPI-style validation errors -------------------------------------------------------


def test_validation_errors_carry_type_loc_msg_input_and_ctx(http: httpx.Client) -> None:
    payload = {"image": {"url": "https://example.com/x.jpg", "data": PHOTO_B64}, "run_blur": "hm"}
    body = assert_validation_error(http.post("/v1/analyze", json=payload))
    errors = {e["type"]: e for e in body["detail"]}
    assert set(errors) == {"bool_type", "value_error"}
    flag = errors["bool_type"]
    assert flag["loc"] == ["body", "run_blur"] and flag["input"] == "hm" and flag["msg"]
    source = errors["value_error"]
    assert source["loc"] == ["body", "image"]
    assert source["ctx"] == {"error": "provide exactly one of 'url' or 'data'"}
    assert source["input"]["url"] == "https://example.com/x.jpg"
    assert source["input"]["data"].endswith(f"[{len(PHOTO_B64)} characters]")
    assert PHOTO_B64[:200] not in json.dumps(body)

    cluster = {"embeddings": [[1.0]], "image_ids": ["a"], "eps": 9}
    detail = assert_validation_error(http.post("/v1/cluster", json=cluster))["detail"]
    eps = next(e for e in detail if e["loc"] == ["body", "eps"])
    assert eps == {
        "type": "less_than_equal",
        "loc": ["body", "eps"],
        "msg": "Input should be less than or equal to 2",
        "input": 9,
        "ctx": {"le": 2.0},
    }


def test_validation_errors_never_echo_credentials(http: httpx.Client) -> None:
    payload = {"ref_id": "r", "api_key": "sk-caller-secret-0f3d", "token": "tok-77"}
    body = assert_validation_error(http.post("/v1/analyze/llm", json=payload))
    assert "sk-caller-secret-0f3d" not in json.dumps(body) and "tok-77" not in json.dumps(body)
    (error,) = body["detail"]
    assert error["input"]["api_key"] == "[redacted]" and error["input"]["ref_id"] == "r"


def test_malformed_json_is_json_invalid_at_body(http: httpx.Client) -> None:
    response = http.post(
        "/v1/cluster", content=b'{"embeddings": ', headers={"Content-Type": "application/json"}
    )
    (error,) = assert_validation_error(response)["detail"]
    assert error["type"] == "json_invalid" and error["loc"] == ["body"]


# ---- logs (last: reads what the tests above caused) ----------------------------------------


def test_rejections_are_info_lines_without_traceback_image_data_or_secrets(
    server: Server,
) -> None:
    log = server.log()
    assert "Traceback" not in log and "Exception on /v1" not in log
    rejected = [
        json.loads(line)
        for line in log.splitlines()
        if '"name": "festora.requests"' in line and "request rejected" in line
    ]
    assert len(rejected) >= 10
    assert {r["level"] for r in rejected} == {"INFO"}
    assert {"path", "status", "error", "fields"} <= set(rejected[0])
    assert PHOTO_B64[:64] not in log
    for secret in (DOTENV_KEY, "sk-caller-secret-0f3d", "tok-77"):
        assert secret not in log
