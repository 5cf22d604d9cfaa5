"""Two API replicas sharing state through a real redis-server: one rate limit per client across
both, measured, and what each replica does while Redis is away (one fails open, one closed).

No runner is deployed (each is mapped to a closed port): /v1/cluster needs none.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from tests.redis_server import RedisServer
from tests.serving import RUNNER_SERVICES, START_HTTP_SERVER, depends_args, free_port, serve

pytestmark = pytest.mark.slow

PER_MINUTE = 60  # one token a second
BURST = 9  # ten back to back
CLUSTER = {"embeddings": [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], "image_ids": ["a", "b", "c"]}


@dataclass
class Replicas:
    redis: RedisServer
    fail_open: httpx.Client
    fail_closed: httpx.Client


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    logs = tmp_path_factory.mktemp("shared-state")
    not_deployed = f"http://127.0.0.1:{free_port()}"
    with ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer())
        env = {
            "REDIS_URL": redis_server.url,
            "RATE_LIMIT_PER_MINUTE": str(PER_MINUTE),
            "RATE_LIMIT_BURST": str(BURST),
        }
        clients = []
        for policy in ("open", "closed"):
            api = stack.enter_context(
                serve(
                    {**env, "RATE_LIMIT_REDIS_FAILURE": policy},
                    logs / f"api-{policy}.log",
                    command=START_HTTP_SERVER,
                    args=depends_args(dict.fromkeys(RUNNER_SERVICES, not_deployed)),
                    ready_path="/livez",
                )
            )
            clients.append(stack.enter_context(httpx.Client(base_url=api.url, timeout=30)))
        yield Replicas(redis_server, *clients)


def test_one_bucket_per_client_across_both_replicas(replicas: Replicas) -> None:
    for client in (replicas.fail_open, replicas.fail_closed):  # first /v1/cluster imports sklearn
        assert client.post("/v1/cluster", json=CLUSTER).status_code == 200
    replicas.redis.client().flushdb()
    started = time.monotonic()
    codes = [
        (replicas.fail_open if i % 2 else replicas.fail_closed).post("/v1/cluster", json=CLUSTER)
        for i in range(40)
    ]
    elapsed = time.monotonic() - started
    allowed = sum(r.status_code == 200 for r in codes)
    limited = [r for r in codes if r.status_code == 429]
    assert allowed + len(limited) == 40
    print(
        f"\n2 replicas, 40 requests in {elapsed:.2f} s: {allowed} allowed, {len(limited)} limited"
    )
    # one shared bucket: its BURST + 1 plus what refilled meanwhile; a bucket per replica
    # would have let through twice the burst
    assert BURST + 1 <= allowed <= BURST + 1 + PER_MINUTE / 60 * elapsed + 1
    assert allowed < 2 * (BURST + 1)
    assert limited[0].json()["error"] == "rate_limited" and limited[0].headers["Retry-After"]


def test_redis_away_fails_open_or_closed_as_configured(replicas: Replicas) -> None:
    replicas.redis.stop()
    try:
        opened = replicas.fail_open.post("/v1/cluster", json=CLUSTER)
        closed = replicas.fail_closed.post("/v1/cluster", json=CLUSTER)
        health = replicas.fail_closed.get("/health")
    finally:
        replicas.redis.start()
    assert opened.status_code == 200, opened.text
    assert closed.status_code == 503, closed.text
    assert closed.json()["error"] == "rate_limit_unavailable" and closed.headers["Retry-After"]
    assert health.status_code == 200  # health is never rate limited
    for client in (replicas.fail_open, replicas.fail_closed):
        back = client.post("/v1/cluster", json=CLUSTER)
        assert back.status_code == 200, back.text
