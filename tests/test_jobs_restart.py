"""A job survives a crash: SIGKILL the whole `bentoml serve` mid-job, start it again on the
same JOBS_DIR, and the job finishes by itself; no finished image is analysed again (the image
server's request log counts every fetch) and the result equals an uninterrupted run."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from festora.jobs.sqlite_store import SqliteJobStore
from tests.eventphotos import assert_same_analysis, event_photos
from tests.httpserver import LocalHttpServer, send_bytes
from tests.serving import serve
from tests.test_jobs import slowly

pytestmark = pytest.mark.slow

COUNT = 40
CONCURRENCY = 4
RETENTION_SECONDS = 20


def wait_for(http: httpx.Client, job_id: str, until: Any, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = http.get(f"/v1/jobs/{job_id}").json()
        if until(state):
            return state
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id}: {state}")


def test_a_killed_service_resumes_its_job_without_analysing_anything_twice(
    model_store: Path, tmp_path: Path
) -> None:
    env = {
        "JOBS_DIR": str(tmp_path / "jobs"),
        "JOB_CONCURRENCY": str(CONCURRENCY),
        "JOB_LEASE_SECONDS": "3",
        "JOB_RETENTION_SECONDS": str(RETENTION_SECONDS),
        "ALLOW_PRIVATE_URLS": "true",
        "RATE_LIMIT_ENABLED": "false",
    }
    with LocalHttpServer() as photos:
        images, reference = [], []
        for i, photo in enumerate(event_photos(COUNT, seed=11)):
            images.append(
                {"url": photos.route(f"/event/{i}.jpg", slowly(photo, 0.3)), "image_id": f"e{i}"}
            )
            reference.append(
                {"url": photos.route(f"/ref/{i}.jpg", send_bytes(photo)), "image_id": f"e{i}"}
            )

        with serve(env, tmp_path / "first.log") as first, httpx.Client(base_url=first.url) as http:
            created = http.post("/v1/jobs", json={"images": images})
            assert created.status_code == 202, created.text
            job_id = created.json()["job_id"]
            wait_for(http, job_id, lambda s: s["progress"]["done"] >= COUNT // 4)
            first.kill()

        store = SqliteJobStore(Path(env["JOBS_DIR"]))
        at_kill = asyncio.run(store.results(job_id, 0, COUNT))
        assert asyncio.run(store.get(job_id)).status == "running"
        finished = {i for i, result in enumerate(at_kill) if result is not None}
        assert COUNT // 4 <= len(finished) < COUNT, "the kill must land mid-job"
        store.close()

        with (
            serve(env, tmp_path / "second.log") as second,
            httpx.Client(base_url=second.url) as http,
        ):
            # Nobody asks: the restarted service finds the job and finishes it.
            state = wait_for(http, job_id, lambda s: s["status"] not in ("queued", "running"))
            assert state["status"] == "done", state
            assert state["progress"] == {"total": COUNT, "done": COUNT, "failed": 0}
            resumed = http.get(f"/v1/jobs/{job_id}/results", params={"limit": COUNT}).json()
            for i in finished:  # what was finished before the kill is kept as it was
                assert resumed["results"][i] == at_kill[i]

            fetches = Counter(r.path for r in photos.requests if r.path.startswith("/event/"))
            assert all(fetches[f"/event/{i}.jpg"] == 1 for i in finished)
            assert set(fetches.values()) <= {1, 2} and len(fetches) == COUNT
            # Only images in flight at the kill (at most JOB_CONCURRENCY) are fetched again.
            assert sum(n == 2 for n in fetches.values()) <= CONCURRENCY

            uninterrupted_id = http.post("/v1/jobs", json={"images": reference}).json()["job_id"]
            assert (
                wait_for(
                    http, uninterrupted_id, lambda s: s["status"] not in ("queued", "running")
                )["status"]
                == "done"
            )
            uninterrupted = http.get(
                f"/v1/jobs/{uninterrupted_id}/results", params={"limit": COUNT}
            )
            assert_same_analysis(resumed["results"], uninterrupted.json()["results"])

            # Finished jobs expire after JOB_RETENTION_SECONDS.
            gone = wait_for(http, job_id, lambda s: s.get("error") == "job_not_found", timeout=90)
            assert http.get(f"/v1/jobs/{job_id}/results").status_code == 404, gone
