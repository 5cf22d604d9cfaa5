"""Past one machine: runners served on their own and two API replicas pointed at them by URL.

The CLIP and emotion runners each run as their own `bentoml serve runners.<model>:<Class>`;
the NIMA and BRISQUE URLs point at a port nothing listens on (not deployed here, to keep the
test small), so the requests below ask only for blur, emotion and the embedding.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from skimage import data as skdata

from tests.serving import Server, free_port, serve
from tests.test_api import b64, jpeg_bytes

pytestmark = pytest.mark.slow

PORTRAIT = jpeg_bytes(skdata.astronaut())
COFFEE = jpeg_bytes(skdata.coffee())
REMOTE_FLAGS = {"run_quality": False, "run_emotion": True, "run_embedding": True}
RECOVERY_SECONDS = 60


@dataclass
class RunnerServer:
    """One runner served on its own, stoppable and restartable on the same port."""

    target: str
    log_path: Path
    port: int = field(default_factory=free_port)
    _stack: ExitStack | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        stack = ExitStack()
        server = stack.enter_context(serve({}, self.log_path, self.target, port=self.port))
        self._stack = stack
        return server

    def stop(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None


@dataclass
class Topology:
    clip: RunnerServer
    emotion: RunnerServer
    replicas: list[httpx.Client]


@pytest.fixture(scope="module")
def topology(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    logs = tmp_path_factory.mktemp("distributed")
    not_deployed = f"http://127.0.0.1:{free_port()}"
    clip = RunnerServer("runners.clip:CLIPEncoder", logs / "clip.log")
    emotion = RunnerServer("runners.emotion:EmotionDetector", logs / "emotion.log")
    with ExitStack() as stack:
        for runner in (clip, emotion):
            runner.start()
            stack.callback(runner.stop)
        env = {
            "CLIP_URL": clip.url,
            "EMOTION_URL": emotion.url,
            "NIMA_TECHNICAL_URL": not_deployed,
            "NIMA_AESTHETIC_URL": not_deployed,
            "BRISQUE_URL": not_deployed,
            "RATE_LIMIT_ENABLED": "false",
            "ENVIRONMENT": "distributed-test",
        }
        # /readyz stays 503 while NIMA and BRISQUE are unreachable, by design: wait for /livez
        apis = [
            stack.enter_context(serve(env, logs / f"api-{i}.log", ready_path="/livez"))
            for i in range(2)
        ]
        clients = [stack.enter_context(httpx.Client(base_url=api.url, timeout=120)) for api in apis]
        yield Topology(clip=clip, emotion=emotion, replicas=clients)


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
        assert models["clip"]["loaded"] and models["emotion"]["loaded"]
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
