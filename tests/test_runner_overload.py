"""Runners past their latency budgets, on a real `bentoml serve` of its own: the text runner
refuses what it cannot start within 1 ms, the image encoder within 50 ms (less than one image
takes), so a queue of more than one image is refused.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from benchmarks.soak import PHOTOS
from tests.serving import Server, serve, sigterm_mid_request

pytestmark = pytest.mark.slow

LIMIT = 4
GRACE_S = 120


@pytest.fixture(scope="module")
def server(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "RATE_LIMIT_ENABLED": "false",
        "WEIGHTS": "random-init",
        "MAX_CONCURRENT_REQUESTS": str(LIMIT),
        "LOG_LEVEL": "WARNING",
        # The text runner's batch queue refuses whatever it cannot start within 1 ms.
        "CLIP_TEXT_MAX_LATENCY_MS": "1",
        "CLIP_MAX_LATENCY_MS": "50",
    }
    log = tmp_path_factory.mktemp("logs") / "overload.log"
    args = ["--timeout-graceful-shutdown", str(GRACE_S)]
    with serve(env, log, args=args) as running:
        yield running


def test_a_runner_past_its_latency_budget_is_a_503_overloaded_to_retry(server: Server) -> None:
    """BentoML's batch queue refuses (its 503 "process is overloaded") what it cannot start
    within the runner's max latency; the caller is told to retry, never given a 500."""
    body = {"texts": [f"a photo of guest number {i} at the wedding" for i in range(8)]}

    def call(_: int) -> httpx.Response:
        with httpx.Client(timeout=120) as client:
            return client.post(f"{server.url}/v1/embed/text", json=body)

    responses: list[httpx.Response] = []
    with ThreadPoolExecutor(LIMIT) as pool:
        for _ in range(10):
            responses += pool.map(call, range(4 * LIMIT))
            if any(r.status_code == 503 for r in responses):
                break
    codes = sorted({(r.status_code, r.json().get("error")) for r in responses})
    assert set(codes) <= {(200, None), (503, "overloaded")}, codes
    refused = [r for r in responses if r.status_code == 503]
    assert refused, codes
    assert all(r.headers["retry-after"] == "10" for r in refused)
    assert refused[0].json()["detail"] == {"models": ["clip_text"]}


EMBED_ONLY = {"run_blur": False, "run_quality": False, "run_emotion": False}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_batch_tries_again_what_a_runner_refused_while_its_images_were_queued(
    server: Server,
) -> None:
    """Twenty images at once queue up at the image encoder, which refuses all but what it can
    start in time; a batch on an otherwise idle server still gets every image analysed."""
    before = len(server.log())
    images = [{"data": b64(PHOTOS[i % len(PHOTOS)]), "image_id": str(i)} for i in range(20)]
    response = httpx.post(
        f"{server.url}/v1/analyze/batch", json={"images": images, **EMBED_ONLY}, timeout=300
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["succeeded"] == 20, [(r["image_id"], r["error_code"]) for r in body["results"]]
    refusals = [
        line
        for line in server.log()[before:].splitlines()
        if "runner overloaded" in line and '"model": "clip"' in line
    ]
    assert refusals, "the image encoder refused nothing: the test proves nothing"


def test_sigterm_after_refusals_still_drains_within_the_grace_period(server: Server) -> None:
    """Runs last: it stops the server."""
    images = [{"data": b64(PHOTOS[i % len(PHOTOS)]), "image_id": str(i)} for i in range(20)]
    response = sigterm_mid_request(server, "/v1/analyze/batch", {"images": images}, GRACE_S)
    assert response.status_code == 200, response.text
    assert response.json()["succeeded"] == 20
