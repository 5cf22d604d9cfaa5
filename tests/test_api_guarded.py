"""Auth, rate limit, request caps, SSRF refusal and "model not loaded", over a real
`bentoml serve` with an API key set and an empty model store."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
from PIL import Image

from tests.httpserver import LocalHttpServer, send_bytes
from tests.serving import Server, serve

pytestmark = pytest.mark.slow

API_KEY = "festora-test-key-5d1f0c8a"
BODY_LIMIT = 1_000_000


def photo_b64() -> str:
    buffer = io.BytesIO()
    rgb = np.random.default_rng(1).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buffer, "JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def server(empty_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "BENTOML_HOME": str(empty_store),
        "API_KEY": API_KEY,
        "RATE_LIMIT_PER_MINUTE": "1",
        "RATE_LIMIT_BURST": "60",
        "MAX_BATCH_SIZE": "3",
        "MAX_REQUEST_BODY_BYTES": str(BODY_LIMIT),
        "ALLOW_PRIVATE_URLS": "false",
    }
    with serve(env, tmp_path_factory.mktemp("logs") / "guarded.log") as running:
        yield running


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60, follow_redirects=True) as client:
        yield client


KEY = {"X-Api-Key": API_KEY}
BLUR_ONLY = {"run_quality": False, "run_emotion": False, "run_embedding": False}


def test_missing_or_wrong_key_is_401(http: httpx.Client) -> None:
    for headers in ({}, {"X-Api-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        response = http.post("/v1/cluster", json={}, headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "ApiKey"
        assert response.json()["error"] == "unauthorized"
        assert API_KEY not in response.text


def test_key_in_header_or_bearer_is_accepted(http: httpx.Client) -> None:
    payload = {"embeddings": [[1, 0], [0, 1]], "image_ids": ["a", "b"]}
    assert http.post("/v1/cluster", json=payload, headers=KEY).status_code == 200
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    assert http.post("/v1/cluster", json=payload, headers=bearer).status_code == 200


def test_generated_client_authenticates_with_its_token(server: Server) -> None:
    with bentoml.SyncHTTPClient(server.url, token=API_KEY) as client:
        body = client.cluster({"embeddings": [[1, 0], [1, 0.01]], "image_ids": ["a", "b"]})
    assert body["num_clusters"] == 1


def test_open_paths_need_no_key(http: httpx.Client) -> None:
    for path in (
        "/health",
        "/v1/health",
        "/readyz",
        "/livez",
        "/metrics",
        "/",
        "/docs",
        "/docs.json",
        "/schema.json",
    ):
        assert http.get(path).status_code == 200, path


def test_cors_preflight_passes_without_a_key(http: httpx.Client) -> None:
    response = http.options(
        "/v1/analyze",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key,content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] in {"*", "https://app.example.com"}


def test_health_reports_models_not_loaded(http: httpx.Client) -> None:
    body = http.get("/health").json()
    assert body["status"] == "degraded"
    assert len(body["models"]) == 6
    for model in body["models"]:
        assert model["loaded"] is False and model["error"], model


def test_analysis_needing_a_missing_model_is_503(http: httpx.Client) -> None:
    response = http.post("/v1/analyze", json={"image": {"data": photo_b64()}}, headers=KEY)
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "model_not_ready"
    assert set(body["detail"]["models"]) == {
        "clip",
        "nima_technical",
        "nima_aesthetic",
        "brisque",
        "faces",
    }


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/v1/embed/text", {"texts": ["a dog"]}),
        ("/v1/search", {"query": "a dog", "embeddings": [[1.0, 0.0]], "image_ids": ["a"]}),
        (
            "/v1/tags",
            {"embeddings": [[1.0, 0.0]], "image_ids": ["a"], "labels": ["dog", "cat"]},
        ),
    ],
)
def test_text_routes_need_the_text_model(http: httpx.Client, path: str, payload: dict) -> None:
    response = http.post(path, json=payload, headers=KEY)
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "model_not_ready" and body["detail"] == {"models": ["clip_text"]}


def test_blur_needs_no_model(http: httpx.Client) -> None:
    payload = {"image": {"data": photo_b64()}, **BLUR_ONLY}
    response = http.post("/v1/analyze", json=payload, headers=KEY)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["blur"]["laplacian_variance"] > 0


def test_batch_sets_each_images_error_when_a_model_is_missing(http: httpx.Client) -> None:
    payload = {"images": [{"data": photo_b64(), "image_id": "x"}], "run_embedding": True}
    body = http.post("/v1/analyze/batch", json=payload, headers=KEY).json()
    assert body["failed"] == 1 and body["succeeded"] == 0
    assert body["results"][0]["error_code"] == "model_not_ready"
    assert "clip" in body["results"][0]["error"]


def test_jobs_need_the_key_and_fail_cleanly_without_their_models(http: httpx.Client) -> None:
    assert http.get("/v1/jobs/some-id").status_code == 401
    assert http.delete("/v1/jobs/some-id").status_code == 401
    assert http.post("/v1/jobs", json={"images": [{"data": photo_b64()}]}).status_code == 401
    assert http.get("/v1/jobs/some-id", headers=KEY).json()["error"] == "job_not_found"
    job_id = http.post("/v1/jobs", json={"images": [{"data": photo_b64()}]}, headers=KEY).json()[
        "job_id"
    ]
    deadline = time.monotonic() + 60
    while (state := http.get(f"/v1/jobs/{job_id}", headers=KEY).json())["status"] in (
        "queued",
        "running",
    ) and time.monotonic() < deadline:
        time.sleep(2.0)  # gently: the bucket is shared by this module
    assert state["status"] == "failed" and state["error"].startswith("model not loaded"), state
    blur = {"images": [{"data": photo_b64()}], **BLUR_ONLY}  # needs no model: runs
    blur_id = http.post("/v1/jobs", json=blur, headers=KEY).json()["job_id"]
    while (state := http.get(f"/v1/jobs/{blur_id}", headers=KEY).json())["status"] in (
        "queued",
        "running",
    ) and time.monotonic() < deadline:
        time.sleep(2.0)  # gently: the bucket is shared by this module
    assert state["status"] == "done" and state["progress"]["failed"] == 0, state


def test_max_batch_size_comes_from_the_environment(http: httpx.Client) -> None:
    payload = {"images": [{"data": photo_b64()}] * 4, **BLUR_ONLY}
    response = http.post("/v1/analyze/batch", json=payload, headers=KEY)
    assert response.status_code == 422 and response.json()["error"] == "batch_too_large"


def test_private_addresses_are_refused_by_default(http: httpx.Client) -> None:
    with LocalHttpServer() as files:
        url = files.route("/x.jpg", send_bytes(base64.b64decode(photo_b64())))
        for target in (url, "http://169.254.169.254/latest/meta-data/", "http://2130706433/x"):
            payload = {"image": {"url": target}, **BLUR_ONLY}
            response = http.post("/v1/analyze", json=payload, headers=KEY)
            assert response.status_code == 422, target
            assert response.json()["error"] == "image_fetch_error"
        assert files.requests == []


def test_request_body_over_the_cap_is_413(http: httpx.Client) -> None:
    body = b'{"image": {"data": "' + b"A" * (BODY_LIMIT + 10) + b'"}}'
    declared = http.post(
        "/v1/analyze", content=body, headers={**KEY, "Content-Type": "application/json"}
    )
    assert declared.status_code == 413 and declared.json()["error"] == "request_too_large"

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    streamed = http.post(
        "/v1/analyze", content=chunks(), headers={**KEY, "Content-Type": "application/json"}
    )
    assert streamed.status_code == 413 and streamed.json()["error"] == "request_too_large"


def test_rate_limit_answers_429_with_retry_after(http: httpx.Client) -> None:
    # Runs last in this module: it spends the client's whole burst.
    payload = {"embeddings": [[1, 0], [0, 1]], "image_ids": ["a", "b"]}
    statuses = []
    for _ in range(80):
        response = http.post("/v1/cluster", json=payload, headers=KEY)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.json()["error"] == "rate_limited"
            assert int(response.headers["Retry-After"]) >= 1
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {200}
    assert http.get("/health").status_code == 200


def test_api_key_never_reaches_the_logs(server: Server) -> None:
    assert API_KEY not in server.log()
