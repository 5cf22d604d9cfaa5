"""Past one machine: runners served on their own and two API replicas pointed at them by URL,
through BentoML's runner map (`start-http-server --service-name` / `--depends Name=URL`).

The CLIP and face runners each run as their own server; NIMA and BRISQUE are mapped to a
port nothing listens on (not deployed here, to keep the test small), so the requests below ask
only for blur, faces and the embedding. The replicas share a result cache in a real
redis-server. Killing the CLIP server shows on both replicas' /health and as 503
`model_unavailable`; both recover when it is back on its port.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from skimage import data as skdata

from tests.redis_server import RedisServer
from tests.serving import (
    RUNNER_SERVICES,
    START_HTTP_SERVER,
    Server,
    depends_args,
    free_port,
    serve,
)
from tests.test_api import b64, jpeg_bytes

pytestmark = pytest.mark.slow

PORTRAIT = jpeg_bytes(skdata.astronaut())
COFFEE = jpeg_bytes(skdata.coffee())
REMOTE_FLAGS = {"run_quality": False, "run_emotion": True, "run_embedding": True}
RECOVERY_SECONDS = 60


@dataclass
class RunnerServer:
    """One runner served on its own, stoppable and restartable on the same port."""

    service_name: str
    log_path: Path
    port: int = field(default_factory=free_port)
    _stack: ExitStack | None = None
    _server: Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        stack = ExitStack()
        server = stack.enter_context(
            serve(
                {},
                self.log_path,
                command=START_HTTP_SERVER,
                args=["--service-name", self.service_name],
                port=self.port,
            )
        )
        self._stack, self._server = stack, server
        return server

    def stop(self) -> None:
        """Kill it, as a crashed node: a SIGTERM would let it drain while clients hold
        connections to it (runners.serving.drain), so it would go on answering."""
        if self._stack is not None:
            self._server.kill()
            self._stack.close()
            self._stack = None


@dataclass
class Topology:
    clip: RunnerServer
    faces: RunnerServer
    redis: RedisServer
    apis: list[Server]
    replicas: list[httpx.Client]


@pytest.fixture(scope="module")
def topology(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    logs = tmp_path_factory.mktemp("distributed")
    not_deployed = f"http://127.0.0.1:{free_port()}"
    clip = RunnerServer("CLIPEncoder", logs / "clip.log")
    faces = RunnerServer("FaceAnalyzer", logs / "faces.log")
    with ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer())
        for runner in (clip, faces):
            runner.start()
            stack.callback(runner.stop)
        depends = {
            **dict.fromkeys(RUNNER_SERVICES, not_deployed),
            "CLIPEncoder": clip.url,
            "FaceAnalyzer": faces.url,
        }
        env = {
            "RATE_LIMIT_ENABLED": "false",
            "ENVIRONMENT": "distributed-test",
            "REDIS_URL": redis_server.url,
            "CACHE_TTL_SECONDS": "600",
            "PYTHONUNBUFFERED": "1",
        }
        # /readyz stays 503 while NIMA and BRISQUE are unreachable, by design: wait for /livez
        apis = [
            stack.enter_context(
                serve(
                    env,
                    logs / f"api-{i}.log",
                    command=START_HTTP_SERVER,
                    args=depends_args(depends),
                    ready_path="/livez",
                )
            )
            for i in range(2)
        ]
        clients = [stack.enter_context(httpx.Client(base_url=api.url, timeout=120)) for api in apis]
        yield Topology(clip, faces, redis_server, apis, clients)


def models_by_name(client: httpx.Client) -> dict[str, dict]:
    response = client.get("/health")
    assert response.status_code == 200, response.text
    return {m["name"]: m for m in response.json()["models"]}


def analyze(client: httpx.Client, image: bytes, **flags: bool) -> httpx.Response:
    body = {"image": {"data": b64(image), "image_id": "p"}, **REMOTE_FLAGS, **flags}
    return client.post("/v1/analyze", json=body)


def test_replicas_call_the_runners_served_on_their_own(topology: Topology) -> None:
    runner_status = httpx.post(f"{topology.clip.url}/status", json={}, timeout=30).json()
    for client in topology.replicas:
        models = models_by_name(client)
        # the replica reports what the CLIP server itself says: it started no CLIP of its own
        assert models["clip"] == runner_status
        assert models["clip"]["loaded"] and models["faces"]["loaded"]
        for name in ("nima_technical", "nima_aesthetic", "brisque"):
            assert not models[name]["loaded"]
            assert models[name]["error"].startswith("runner unavailable")
        assert client.get("/health").json()["status"] == "degraded"


def test_analyze_through_both_replicas_gives_the_same_result(topology: Topology) -> None:
    results = []
    for client in topology.replicas:
        response = analyze(client, PORTRAIT)
        assert response.status_code == 200, response.text
        results.append(response.json()["result"])
    for result in results:
        assert result["error"] is None and result["quality"] is None
        assert result["embedding"]["dimensions"] == 512
        assert abs(np.linalg.norm(result["embedding"]["vector"]) - 1.0) < 1e-3
        assert result["blur"] is not None
    first, second = results
    np.testing.assert_allclose(
        first["embedding"]["vector"], second["embedding"]["vector"], atol=1e-6
    )
    assert first["emotion"] == second["emotion"]


def test_batch_through_both_replicas_isolates_a_bad_image(topology: Topology) -> None:
    body = {
        "images": [
            {"data": b64(PORTRAIT), "image_id": "portrait"},
            {"data": b64(b"not an image"), "image_id": "broken"},
            {"data": b64(COFFEE), "image_id": "coffee"},
        ],
        **REMOTE_FLAGS,
    }
    for client in topology.replicas:
        response = client.post("/v1/analyze/batch", json=body)
        assert response.status_code == 200, response.text
        batch = response.json()
        assert (batch["total"], batch["succeeded"], batch["failed"]) == (3, 2, 1)
        portrait, broken, coffee = batch["results"]
        assert broken["error"] and broken["embedding"] is None
        assert portrait["embedding"]["dimensions"] == coffee["embedding"]["dimensions"] == 512


def served_from_cache(api: Server) -> int:
    """How many analyses this replica answered from the shared cache (its own log says)."""
    return api.log().count("analysis from cache")


def test_a_re_sent_photo_skips_the_models_on_either_replica(topology: Topology) -> None:
    rng = np.random.default_rng(7)
    photo = jpeg_bytes(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    redis = topology.redis.client()
    first_replica, second_replica = topology.replicas
    keys_before = len(redis.keys("festora:result:*"))
    hits_before = served_from_cache(topology.apis[1])
    first = analyze(first_replica, photo)
    assert first.status_code == 200, first.text
    assert len(redis.keys("festora:result:*")) == keys_before + 1
    again = analyze(second_replica, photo)  # the other replica: the shared cache answers
    assert again.status_code == 200, again.text
    wait_for(lambda: served_from_cache(topology.apis[1]) == hits_before + 1, timeout=10)
    drop_time = ("processing_time_ms",)
    assert {k: v for k, v in again.json()["result"].items() if k not in drop_time} == {
        k: v for k, v in first.json()["result"].items() if k not in drop_time
    }
    other_flags = analyze(second_replica, photo, run_blur=False)  # other analyses: a miss
    assert other_flags.status_code == 200, other_flags.text
    assert other_flags.json()["result"]["blur"] is None
    assert served_from_cache(topology.apis[1]) == hits_before + 1
    assert len(redis.keys("festora:result:*")) == keys_before + 2


def test_a_job_submitted_through_one_replica_is_seen_and_cancelled_through_the_other(
    topology: Topology,
) -> None:
    # The job runners wait for every runner to be reachable (NIMA and BRISQUE are not deployed
    # here), so the job stays queued: what is shown is that both replicas see one job store.
    first_replica, second_replica = topology.replicas
    images = [{"data": b64(PORTRAIT), "image_id": "portrait"}]
    created = first_replica.post("/v1/jobs", json={"images": images, **REMOTE_FLAGS})
    assert created.status_code == 202, created.text
    job_id = created.json()["job_id"]
    seen = second_replica.get(f"/v1/jobs/{job_id}")
    assert seen.status_code == 200, seen.text
    assert seen.json()["status"] == "queued" and seen.json()["progress"]["total"] == 1
    assert second_replica.get(f"/v1/jobs/{job_id}/results").json()["results"] == [None]
    assert second_replica.delete(f"/v1/jobs/{job_id}").status_code == 200
    assert first_replica.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    assert topology.redis.client().exists(f"festora:job:{job_id}")


def wait_for(condition: Callable[[], bool], timeout: float = RECOVERY_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"not true within {timeout} s")


def test_a_dead_runner_shows_on_both_replicas_and_they_recover(topology: Topology) -> None:
    # photos no earlier test sent: a cached answer would rightly need no runner at all
    unseen = [jpeg_bytes(skdata.chelsea()[i + 1 :]) for i in range(2 * len(topology.replicas))]
    topology.clip.stop()
    try:
        for i, client in enumerate(topology.replicas):
            response = analyze(client, unseen[2 * i])
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["error"] == "model_unavailable" and "clip" in body["message"]
            assert response.headers["Retry-After"]
            batch = client.post(
                "/v1/analyze/batch",
                json={"images": [{"data": b64(unseen[2 * i + 1])}], **REMOTE_FLAGS},
            ).json()
            assert batch["failed"] == 1
            assert batch["results"][0]["error_code"] == "model_unavailable"
            # what does not need CLIP is still served
            no_embedding = analyze(client, PORTRAIT, run_embedding=False)
            assert no_embedding.status_code == 200, no_embedding.text
            result = no_embedding.json()["result"]
            assert result["error"] is None and result["embedding"] is None
            clip = models_by_name(client)["clip"]
            assert not clip["loaded"] and clip["error"].startswith("runner unavailable")
    finally:
        topology.clip.start()
    for client in topology.replicas:
        wait_for(lambda c=client: models_by_name(c)["clip"]["loaded"])
        response = analyze(client, COFFEE)
        assert response.status_code == 200, response.text
        assert response.json()["result"]["embedding"]["dimensions"] == 512
