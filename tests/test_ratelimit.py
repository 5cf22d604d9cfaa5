"""The token bucket behind RATE_LIMIT_PER_MINUTE / RATE_LIMIT_BURST: in memory on a fake clock,
and in a real redis-server shared by replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from festora.config import Settings
from festora.middleware.ratelimit import RateLimitMiddleware, RedisTokenBucket, TokenBucketLimiter
from festora.shared_state import connect
from tests.redis_server import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_steady_rate() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(per_minute=60, burst=2, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("a")
    assert 0.9 <= wait <= 1.0
    clock.now += 1.0
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0


def test_clients_have_their_own_buckets() -> None:
    limiter = TokenBucketLimiter(per_minute=60, burst=0, clock=Clock())
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0


def test_idle_clients_are_forgotten() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(per_minute=60, burst=1, clock=clock)
    for client in range(1000):
        limiter.acquire(str(client))
    clock.now += 60
    limiter.acquire("new")
    assert len(limiter._buckets) == 1


# ---- shared by replicas through a real redis-server ------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def shared_redis(server: RedisServer) -> Redis:
    # a generous timeout: these tests are about the bucket, on a shared, busy machine
    redis = connect(Settings(redis_url=server.url, redis_timeout_seconds=10))
    assert redis is not None
    return redis


def test_two_replicas_share_one_bucket_per_client(redis_server: RedisServer) -> None:
    async def scenario() -> tuple[list[float], float]:
        replicas = [shared_redis(redis_server) for _ in range(2)]
        buckets = [RedisTokenBucket(r, per_minute=60, burst=4) for r in replicas]
        waits = [await buckets[i % 2].acquire("shared-client") for i in range(6)]
        other = await buckets[1].acquire("another-client")
        for r in replicas:
            await r.aclose()
        return waits, other

    waits, other = asyncio.run(scenario())
    assert waits[:5] == [0.0] * 5  # burst 4 + 1, whichever replica is asked
    assert 0.9 <= waits[5] <= 1.0
    assert other == 0.0


def test_concurrent_takes_never_exceed_the_bucket(redis_server: RedisServer) -> None:
    async def scenario() -> list[float]:
        replicas = [shared_redis(redis_server) for _ in range(2)]
        buckets = [RedisTokenBucket(r, per_minute=1, burst=9) for r in replicas]
        waits = await asyncio.gather(*(buckets[i % 2].acquire("racer") for i in range(60)))
        for r in replicas:
            await r.aclose()
        return list(waits)

    waits = asyncio.run(scenario())
    assert sum(w == 0.0 for w in waits) == 10


def limited_app(redis: Redis, policy: str) -> httpx.AsyncClient:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = RateLimitMiddleware(
        Starlette(routes=[Route("/v1/cluster", ok, methods=["POST"])]),
        per_minute=60,
        burst=1,
        redis=redis,
        redis_failure=policy,  # type: ignore[arg-type]
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


@pytest.mark.parametrize("policy", ["open", "closed"])
def test_redis_away_degrades_by_policy_and_recovers(
    redis_server: RedisServer, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def statuses(client: httpx.AsyncClient, n: int) -> list[int]:
        return [(await client.post("/v1/cluster")).status_code for _ in range(n)]

    async def scenario() -> tuple[list[int], httpx.Response, list[int]]:
        redis = shared_redis(redis_server)
        async with limited_app(redis, policy) as client:
            await redis.delete("festora:ratelimit:127.0.0.1")
            redis_server.stop()
            try:
                away = await statuses(client, 3)
                last = await client.post("/v1/cluster")
            finally:
                redis_server.start()
            back = await statuses(client, 3)
        await redis.aclose()
        return away, last, back

    away, last, back = asyncio.run(scenario())
    if policy == "open":
        # this replica's own bucket (burst 1 + 1) takes over: limited, never an error
        assert away == [200, 200, 429] and last.status_code == 429
    else:
        assert away == [503, 503, 503]
        assert last.json()["error"] == "rate_limit_unavailable"
        assert last.headers["Retry-After"]
    assert "rate limit store unavailable" in caplog.text
    assert back == [200, 200, 429]  # the shared bucket again, fresh after the restart
