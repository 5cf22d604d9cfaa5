"""/v1/jobs end to end: a real `bentoml serve` analysing whole events in the background,
called over raw HTTP and with the generated client; images come from a real local HTTP server."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import bentoml
import httpx
import pytest

from tests.eventphotos import assert_same_analysis, event_photos
from tests.httpserver import LocalHttpServer, Responder, send_bytes
from tests.serving import Server, serve

pytestmark = pytest.mark.slow

MAX_IMAGES = 60
CONCURRENCY = 4
PHOTOS = list(event_photos(40))


def slowly(body: bytes, delay: float) -> Responder:
    """The photo after `delay` seconds, as from a slow storage bucket."""
    send = send_bytes(body, content_type="image/jpeg")

    def respond(handler: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        if not stopping.wait(delay):
            send(handler, stopping)

    return respond


@pytest.fixture(scope="module")
def server(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "ALLOW_PRIVATE_URLS": "true",
        "RATE_LIMIT_ENABLED": "false",
        "JOB_MAX_IMAGES": str(MAX_IMAGES),
        "JOB_CONCURRENCY": str(CONCURRENCY),
    }
    with serve(env, tmp_path_factory.mktemp("logs") / "jobs.log") as running:
        yield running


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def photos() -> Iterator[LocalHttpServer]:
    with LocalHttpServer() as files:
        for i, photo in enumerate(PHOTOS):
            files.route(f"/fast/{i}.jpg", send_bytes(photo, content_type="image/jpeg"))
            files.route(f"/slow/{i}.jpg", slowly(photo, 0.5))
        files.route("/missing.jpg", send_bytes(b"gone", status=404))
        yield files


def wait_until(http: httpx.Client, job_id: str, done: int | None = None) -> dict[str, Any]:
    """Poll the job until it has ended (or has `done` images finished)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = http.get(f"/v1/jobs/{job_id}").json()
        if state["status"] not in ("queued", "running") or (
            done is not None and state["progress"]["done"] >= done
        ):
            return state
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} still {state}")


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["message"], body
    return body


def test_a_job_analyses_every_image_like_the_batch_endpoint(
    http: httpx.Client, photos: LocalHttpServer
) -> None:
    images = [{"url": photos.url(f"/fast/{i}.jpg"), "image_id": f"IMG_{i:04d}"} for i in range(12)]
    images += [
        {"data": base64.b64encode(PHOTOS[12]).decode(), "image_id": "inline"},
        {"url": photos.url("/missing.jpg"), "image_id": "missing"},
        {"data": base64.b64encode(b"\xff\xd8 not really a jpeg").decode(), "image_id": "corrupt"},
    ]
    created = http.post("/v1/jobs", json={"kind": "analyze", "images": images})
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["status"] == "queued" and job["total"] == 15 and job["job_id"]

    state = wait_until(http, job["job_id"])
    assert state["status"] == "done" and state["kind"] == "analyze" and state["error"] is None
    assert state["progress"] == {"total": 15, "done": 15, "failed": 2}
    assert state["created_at"] <= state["started_at"] <= state["finished_at"]

    page = http.get(f"/v1/jobs/{job['job_id']}/results").json()
    assert page["total"] == 15 and page["offset"] == 0
    results = page["results"]
    assert [r["image_id"] for r in results] == [i["image_id"] for i in images]
    assert results[13]["error_code"] == "image_fetch_error"
    assert results[14]["error_code"] == "image_decode_error"

    batch = http.post("/v1/analyze/batch", json={"images": images}).json()["results"]
    assert_same_analysis(results, batch)  # the same analysis code, image for image
    assert all(r["embedding"] and r["quality"] and r["blur"] for r in results[:13])

    middle = http.get(f"/v1/jobs/{job['job_id']}/results", params={"offset": 5, "limit": 4})
    assert [r["image_id"] for r in middle.json()["results"]] == [
        r["image_id"] for r in results[5:9]
    ]
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "many"}):
        bad = http.get(f"/v1/jobs/{job['job_id']}/results", params=params)
        assert_error(bad, 422, "validation_error")
    assert_error(http.get(f"/v1/jobs/{job['job_id']}/cull"), 409, "not_a_cull_job")


def test_results_are_readable_while_running_and_cancel_stops_promptly(
    http: httpx.Client, photos: LocalHttpServer
) -> None:
    images = [{"url": photos.url(f"/slow/{i}.jpg"), "image_id": f"slow-{i}"} for i in range(40)]
    flags = {"run_quality": False, "run_emotion": False}
    job_id = http.post("/v1/jobs", json={"images": images, **flags}).json()["job_id"]

    running = wait_until(http, job_id, done=CONCURRENCY)
    assert running["status"] == "running" and running["started_at"]
    partial = http.get(f"/v1/jobs/{job_id}/results", params={"limit": 40}).json()["results"]
    finished = [r for r in partial if r is not None]
    assert finished and None in partial  # some done, some still pending
    assert all(r["embedding"] and r["quality"] is None for r in finished)

    cancelled = http.delete(f"/v1/jobs/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    fetched = len([r for r in photos.requests if r.path.startswith("/slow/")])
    time.sleep(2.0)  # long enough for four more slow fetches, had the job gone on
    assert len([r for r in photos.requests if r.path.startswith("/slow/")]) == fetched
    after = http.get(f"/v1/jobs/{job_id}").json()
    assert after["status"] == "cancelled" and after["finished_at"]
    assert fetched < 40 and after["progress"]["done"] < 40
    kept = http.get(f"/v1/jobs/{job_id}/results", params={"limit": 40}).json()["results"]
    assert [r for r in kept if r is not None][: len(finished)] == finished or all(
        r in kept for r in finished
    )  # finished results stay readable
    assert http.delete(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"  # idempotent


def test_unknown_jobs_are_404_and_bad_jobs_422(http: httpx.Client) -> None:
    for method, path in (
        ("GET", "/v1/jobs/nope"),
        ("GET", "/v1/jobs/nope/results"),
        ("GET", "/v1/jobs/nope/cull"),
        ("DELETE", "/v1/jobs/nope"),
    ):
        assert_error(http.request(method, path), 404, "job_not_found")
    too_many = [{"url": f"http://photos.example/{i}.jpg"} for i in range(MAX_IMAGES + 1)]
    body = assert_error(http.post("/v1/jobs", json={"images": too_many}), 422, "job_too_large")
    assert body["detail"] == {"max_images": MAX_IMAGES, "received": MAX_IMAGES + 1}
    for bad in (
        {"images": []},
        {"images": [{"url": "http://a/b.jpg"}], "kind": "print"},
        {"images": [{"image_id": "neither url nor data"}]},
    ):
        assert_error(http.post("/v1/jobs", json=bad), 422, "validation_error")


def test_the_generated_clients_create_and_follow_jobs(
    server: Server, http: httpx.Client, photos: LocalHttpServer
) -> None:
    images = [{"url": photos.url(f"/fast/{i}.jpg"), "image_id": f"c{i}"} for i in range(3)]
    blur_only = {"run_quality": False, "run_emotion": False, "run_embedding": False}
    with bentoml.SyncHTTPClient(server.url, timeout=120) as client:
        created = client.create_job({"images": images, **blur_only})
    assert created["total"] == 3 and created["status"] == "queued"
    assert wait_until(http, created["job_id"])["status"] == "done"

    async def through_bentoml_tasks() -> tuple[str, Any, Any]:
        # BentoML 1.4.40's SyncHTTPClient cannot submit tasks (its `_submit` reads an
        # attribute it never sets); the async client can.
        async with bentoml.AsyncHTTPClient(server.url, timeout=120) as client:
            task = await client.run_job.submit({"images": images, **blur_only})
            while (status := await task.get_status()).value == "in_progress":
                await asyncio.sleep(0.2)  # the task ends when the job does
            return task.id, await task.get(), status

    task_id, final, status = asyncio.run(through_bentoml_tasks())
    assert final["job_id"] == task_id and final["status"] == "done"
    assert final["progress"] == {"total": 3, "done": 3, "failed": 0}
    assert status.value == "completed"
    page = http.get(f"/v1/jobs/{task_id}/results").json()["results"]  # the task id is the job id
    assert [r["image_id"] for r in page] == ["c0", "c1", "c2"] and page[0]["blur"]


def test_a_cull_job_culls_its_analyses_once_every_image_is_done(
    http: httpx.Client, photos: LocalHttpServer
) -> None:
    images = [{"url": photos.url(f"/fast/{i}.jpg"), "image_id": f"shot-{i}"} for i in range(6)]
    images.append({"url": photos.url("/fast/0.jpg"), "image_id": "shot-0-again"})  # a duplicate
    images.append({"url": photos.url("/missing.jpg")})  # no id: named by position, as /v1/cull
    job_id = http.post("/v1/jobs", json={"kind": "cull", "images": images}).json()["job_id"]
    state = wait_until(http, job_id)
    assert state["status"] == "done" and state["kind"] == "cull", state
    assert state["progress"] == {"total": 8, "done": 8, "failed": 1}

    culled = http.get(f"/v1/jobs/{job_id}/cull").json()
    analyses = http.get(f"/v1/jobs/{job_id}/results").json()["results"]
    direct = http.post("/v1/cull", json={"analyses": analyses}).json()  # the same cull, sync
    assert culled["total_images"] == 8
    assert [i["image_id"] for i in culled["images"]] == [
        *(i.get("image_id") for i in images[:7]),
        "image-8",
    ]
    assert culled["groups"] == direct["groups"]
    assert [(i["verdict"], i["group_id"]) for i in culled["images"]] == [
        (i["verdict"], i["group_id"]) for i in direct["images"]
    ]
    duplicate = next(g for g in culled["groups"] if "shot-0-again" in g["image_ids"])
    assert "shot-0" in duplicate["image_ids"]  # the same bytes twice: grouped together
    failed = next(i for i in culled["images"] if i["image_id"] == "image-8")
    assert failed["verdict"] == "reject" and failed["reasons"][0]["code"] == "analysis_failed"

    twice = [{"url": photos.url("/fast/1.jpg"), "image_id": "same"}] * 2
    assert_error(http.post("/v1/jobs", json={"kind": "cull", "images": twice}), 422, "cull_error")
    unhashed = {"kind": "cull", "images": images[:2], "run_fingerprint": False}
    assert_error(http.post("/v1/jobs", json=unhashed), 422, "cull_error")
