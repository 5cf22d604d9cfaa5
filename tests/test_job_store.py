"""The embedded job store on a real SQLite file: claims, leases, one result per image,
paging with gaps, cancellation, expiry, and two processes' worth of stores on one file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from festora.jobs.sqlite_store import SqliteJobStore
from festora.jobs.throttle import JobThrottle

T = TypeVar("T")
IMAGES = [{"url": f"http://photos.example/{i}.jpg", "image_id": f"img-{i}"} for i in range(5)]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobStore:
    return SqliteJobStore(tmp_path / "jobs")


def test_a_new_job_is_queued_with_its_images_pending(store: SqliteJobStore) -> None:
    job = run(store.create("j1", "analyze", {"run_blur": True}, IMAGES))
    assert (job.status, job.total, job.done, job.failed) == ("queued", 5, 0, 0)
    assert job.options == {"run_blur": True} and job.started_at is None
    pending = run(store.pending("j1", after=-1, limit=3))
    assert [p.index for p in pending] == [0, 1, 2] and pending[1].image == IMAGES[1]
    assert [p.index for p in run(store.pending("j1", after=2, limit=10))] == [3, 4]
    assert run(store.get("missing")) is None


def test_a_claim_is_exclusive_until_its_lease_runs_out(tmp_path: Path) -> None:
    first, second = SqliteJobStore(tmp_path), SqliteJobStore(tmp_path)  # one file, two owners
    run(first.create("j1", "analyze", {}, IMAGES))
    claimed = run(first.claim("a", lease_seconds=0.5))
    assert claimed is not None and claimed.status == "running" and claimed.started_at
    assert run(second.claim("b", lease_seconds=0.5)) is None
    assert run(first.renew("j1", "a", 0.5)) and not run(second.renew("j1", "b", 0.5))
    time.sleep(0.6)
    taken = run(second.claim("b", lease_seconds=5))
    assert taken is not None and taken.started_at == claimed.started_at
    assert not run(first.renew("j1", "a", 5))  # "a" stalled past its lease: no longer its job
    run(second.release("j1", "b"))
    assert run(first.claim("a", lease_seconds=5)) is not None  # released: free at once


def test_each_image_is_counted_once_and_pages_show_gaps(store: SqliteJobStore) -> None:
    run(store.create("j1", "analyze", {}, IMAGES))
    run(store.record("j1", 1, {"image_id": "img-1"}, failed=False))
    run(store.record("j1", 3, {"image_id": "img-3", "error": "bad"}, failed=True))
    run(store.record("j1", 1, {"image_id": "img-1", "second": True}, failed=True))  # ignored
    job = run(store.get("j1"))
    assert (job.done, job.failed) == (2, 1)
    assert run(store.results("j1", 0, 10)) == [
        None,
        {"image_id": "img-1"},
        None,
        {"image_id": "img-3", "error": "bad"},
        None,
    ]
    assert run(store.results("j1", 3, 1)) == [{"image_id": "img-3", "error": "bad"}]
    assert [p.index for p in run(store.pending("j1", -1, 10))] == [0, 2, 4]


def test_an_ended_job_stays_ended_and_expires_after_retention(store: SqliteJobStore) -> None:
    run(store.create("old", "analyze", {}, IMAGES))
    run(store.create("live", "analyze", {}, IMAGES))
    assert run(store.finish("old", "cancelled"))
    assert not run(store.finish("old", "done"))  # a cancelled job never turns done
    assert run(store.get("old")).status == "cancelled"
    assert run(store.claim("w", 5)).job_id == "live"  # ended jobs are never claimed
    assert run(store.expire(finished_before=time.time() - 60)) == 0
    assert run(store.expire(finished_before=time.time() + 1)) == 1
    assert run(store.get("old")) is None and run(store.results("old", 0, 10)) == []
    assert run(store.get("live")) is not None  # active jobs never expire


def test_cull_results_round_trip(store: SqliteJobStore) -> None:
    run(store.create("j1", "cull", {}, IMAGES))
    assert run(store.cull("j1")) is None
    assert run(store.finish("j1", "done", cull={"total_images": 5, "groups": []}))
    assert run(store.cull("j1")) == {"total_images": 5, "groups": []}


def test_job_images_get_a_small_share_while_synchronous_requests_run() -> None:
    async def scenario() -> list[int]:
        throttle = JobThrottle(concurrency=4, concurrency_under_load=1, hold_seconds=0.2)
        seen = []
        for _ in range(4):
            await throttle.acquire()
        seen.append(throttle.job_images)
        async with throttle.interactive_request():
            for _ in range(4):
                throttle.release()
            await throttle.acquire()
            blocked = asyncio.create_task(throttle.acquire())
            await asyncio.sleep(0.05)
            seen.append(int(blocked.done()))  # the second job image waits for the request
        await asyncio.sleep(0.1)
        seen.append(int(blocked.done()))  # the small share holds a moment after the request
        await asyncio.wait_for(blocked, 2)  # then the job gets its full share back
        seen.append(throttle.job_images)
        return seen

    assert run(scenario()) == [4, 0, 0, 2]
