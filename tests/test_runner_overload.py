"""A runner past its latency budget, on a real `bentoml serve` of its own.

Its own server because of what it found: after the text runner has refused calls, SIGTERM no
longer drains in time (the API worker waits out its grace period on tasks left running),
which `tests/test_faults.py` checks on a server that never refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.serving import Server, serve

pytestmark = pytest.mark.slow

LIMIT = 4


@pytest.fixture(scope="module")
def server(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "RATE_LIMIT_ENABLED": "false",
        "WEIGHTS": "random-init",
        "MAX_CONCURRENT_REQUESTS": str(LIMIT),
        "LOG_LEVEL": "WARNING",
        # The text runner's batch queue refuses whatever it cannot start within 1 ms.
        "CLIP_TEXT_MAX_LATENCY_MS": "1",
    }
    with serve(env, tmp_path_factory.mktemp("logs") / "overload.log") as running:
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
