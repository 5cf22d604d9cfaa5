"""The Redis job store on a real redis-server, as two replicas see it: the same contract as the
embedded store (claims, leases, one result per image, gaps, ending, expiry), across stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from festora.jobs.redis_store import RedisJobStore
from tests.redis_server import RedisServer

T = TypeVar("T")
IMAGES = [{"url": f"http://photos.example/{i}.jpg", "image_id": f"img-{i}"} for i in range(5)]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def with_replicas(
    server: RedisServer, scenario: Callable[[RedisJobStore, RedisJobStore], Awaitable[T]]
) -> T:
    """Run `scenario` with two stores on their own connections (two replicas), on a clean db."""
    server.client().flushdb()

    async def main() -> T:
        clients = [Redis.from_url(server.url) for _ in range(2)]
        try:
            return await scenario(*(RedisJobStore(c) for c in clients))
        finally:
            for client in clients:
                await client.aclose()

    return asyncio.run(main())


def test_a_job_made_through_one_replica_is_pending_through_the_other(
    redis_server: RedisServer,
) -> None:
    async def scenario(one: RedisJobStore, other: RedisJobStore) -> None:
        job = await one.create("j1", "analyze", {"run_blur": True}, IMAGES)
        assert (job.status, job.total, job.done, job.failed) == ("queued", 5, 0, 0)
        assert job.options == {"run_blur": True} and job.started_at is None
        seen = await other.get("j1")
        assert seen == job
        pending = await other.pending("j1", after=-1, limit=3)
        assert [p.index for p in pending] == [0, 1, 2] and pending[1].image == IMAGES[1]
        assert [p.index for p in await other.pending("j1", after=2, limit=10)] == [3, 4]
        assert await other.get("missing") is None

    with_replicas(redis_server, scenario)


def test_a_claim_is_exclusive_across_replicas_until_its_lease_runs_out(
    redis_server: RedisServer,
) -> None:
    async def scenario(first: RedisJobStore, second: RedisJobStore) -> None:
        await first.create("j1", "analyze", {}, IMAGES)
        claims = await asyncio.gather(*(s.claim(o, 0.5) for s, o in [(first, "a"), (second, "b")]))
        claimed = [c for c in claims if c is not None]
        assert len(claimed) == 1 and claimed[0].status == "running" and claimed[0].started_at
        winner, loser = ("a", "b") if claims[0] else ("b", "a")
        stores = {"a": first, "b": second}
        assert await stores[winner].renew("j1", winner, 0.5)
        assert not await stores[loser].renew("j1", loser, 0.5)
        await asyncio.sleep(0.6)
        taken = await stores[loser].claim(loser, 5)
        assert taken is not None and taken.started_at == claimed[0].started_at
        assert not await stores[winner].renew("j1", winner, 5)  # stalled past its lease
        await stores[loser].release("j1", loser)
        assert await stores[winner].claim(winner, 5) is not None  # released: free at once

    with_replicas(redis_server, scenario)


def test_each_image_is_counted_once_and_pages_show_gaps(redis_server: RedisServer) -> None:
    async def scenario(one: RedisJobStore, other: RedisJobStore) -> None:
        await one.create("j1", "analyze", {}, IMAGES)
        await asyncio.gather(
            one.record("j1", 1, {"image_id": "img-1"}, failed=False),
            other.record("j1", 1, {"image_id": "img-1", "second": True}, failed=True),
        )
        await other.record("j1", 3, {"image_id": "img-3", "error": "bad"}, failed=True)
        job = await one.get("j1")
        assert job is not None and job.done == 2
        results = await one.results("j1", 0, 10)
        assert results[0] is None and results[2] is None and results[4] is None
        assert results[1] in ({"image_id": "img-1"}, {"image_id": "img-1", "second": True})
        assert job.failed == (1 if results[1] == {"image_id": "img-1"} else 2)
        assert await other.results("j1", 3, 1) == [{"image_id": "img-3", "error": "bad"}]
        assert [p.index for p in await other.pending("j1", -1, 10)] == [0, 2, 4]

    with_replicas(redis_server, scenario)


def test_an_ended_job_stays_ended_and_expires_after_retention(redis_server: RedisServer) -> None:
    async def scenario(one: RedisJobStore, other: RedisJobStore) -> None:
        await one.create("old", "analyze", {}, IMAGES)
        await one.create("live", "cull", {}, IMAGES)
        assert await other.finish("old", "cancelled")  # cancelled through the other replica
        assert not await one.finish("old", "done")  # a cancelled job never turns done
        old = await one.get("old")
        assert old is not None and old.status == "cancelled" and old.finished_at
        claimed = await one.claim("w", 5)
        assert claimed is not None and claimed.job_id == "live"  # ended jobs are never claimed
        assert await one.finish("live", "done", cull={"total_images": 5, "groups": []})
        assert await other.cull("live") == {"total_images": 5, "groups": []}
        assert await other.expire(finished_before=time.time() - 60) == 0
        await one.create("next", "analyze", {}, IMAGES)
        assert await other.expire(finished_before=time.time() + 1) == 2
        assert await one.get("old") is None and await one.results("old", 0, 10) == []
        assert await one.get("next") is not None  # active jobs never expire

    with_replicas(redis_server, scenario)
