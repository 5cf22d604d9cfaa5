"""Concurrent HTTP clients that drive the service and time every request.

Request bodies are serialised once, before the clock starts, and sent as raw bytes, so the
clients spend their CPU on the network and not on building JSON (they share the 2 cores with
the server). The client is the standard library's `http.client`: sending a 12 MP photo's 4 MB
body over loopback and reading the answer costs it 1.0 CPU ms, where httpx's takes 1.8. Each
client thread has its own keep-alive connection and takes the next request from a shared
counter, so `concurrency` requests are always in flight until the work runs out. Every
response is checked: a fast wrong answer must not count as throughput.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from benchmarks.workload import Photo

_ANALYSES = ("blur", "quality", "emotion", "embedding", "exposure", "fingerprint", "metadata")
ALL_FLAGS = {f"run_{name}": True for name in _ANALYSES}
# What the naive embedding baseline does (decode + CLIP), and nothing else.
EMBEDDING_ONLY = {f"run_{name}": name == "embedding" for name in _ANALYSES}
REQUEST_TIMEOUT_S = 900.0

Check = Callable[[dict[str, Any]], str | None]  # one image result -> a problem or None


@dataclass
class Request:
    path: str  # "/v1/analyze" or "/v1/analyze/batch"
    body: bytes
    images: int


@dataclass
class Scenario:
    name: str
    description: str
    requests: list[Request]
    concurrency: int
    check: Check
    megapixels: int
    pipeline: str  # "full" | "embedding"
    source: str  # "base64" | "url"
    endpoint: str  # "analyze" | "batch"


@dataclass
class Outcome:
    latency_s: float
    images_ok: int
    problem: str | None


@dataclass
class ScenarioResult:
    scenario: Scenario
    wall_s: float
    outcomes: list[Outcome] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    cpu_by_process: dict[str, float] = field(default_factory=dict)

    @property
    def images_ok(self) -> int:
        return sum(o.images_ok for o in self.outcomes)

    @property
    def problems(self) -> list[str]:
        return [o.problem for o in self.outcomes if o.problem]

    def latency(self, q: float) -> float:
        values = sorted(o.latency_s for o in self.outcomes)
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]

    def summary(self) -> dict[str, Any]:
        s = self.scenario
        return {
            "name": s.name,
            "description": s.description,
            "endpoint": s.endpoint,
            "pipeline": s.pipeline,
            "source": s.source,
            "megapixels": s.megapixels,
            "concurrency": s.concurrency,
            "requests": len(self.outcomes),
            "images_ok": self.images_ok,
            "errors": len(self.problems),
            "first_errors": self.problems[:3],
            "wall_s": round(self.wall_s, 3),
            "images_per_s": round(self.images_ok / self.wall_s, 3) if self.wall_s else 0.0,
            "latency_p50_s": round(self.latency(0.50), 3),
            "latency_p95_s": round(self.latency(0.95), 3),
            "latency_mean_s": round(statistics.fmean(o.latency_s for o in self.outcomes), 3),
            "latency_max_s": round(max(o.latency_s for o in self.outcomes), 3),
            "cpu": self.cpu,
            "cpu_ms_per_image_by_process": {
                name: round(1000 * seconds / max(1, self.images_ok), 1)
                for name, seconds in self.cpu_by_process.items()
            },
        }


def image_input(photo: Photo, source: str, image_host: str) -> dict[str, str]:
    if source == "url":
        return {"url": f"{image_host}/{photo.path.name}", "image_id": photo.name}
    return {"data": photo.base64(), "image_id": photo.name}


def analyze_requests(
    photos: list[Photo], count: int, flags: dict[str, bool], source: str, image_host: str
) -> list[Request]:
    """`count` single-image requests cycling through `photos` (distinct bodies are shared)."""
    bodies = [
        json.dumps({"image": image_input(p, source, image_host), **flags}).encode() for p in photos
    ]
    return [Request("/v1/analyze", bodies[i % len(bodies)], 1) for i in range(count)]


def batch_requests(
    photos: list[Photo],
    count: int,
    size: int,
    flags: dict[str, bool],
    source: str,
    image_host: str,
) -> list[Request]:
    """`count` batch requests of `size` images each, cycling through `photos`."""
    inputs = [image_input(photos[i % len(photos)], source, image_host) for i in range(size)]
    body = json.dumps({"images": inputs, **flags}).encode()
    return [Request("/v1/analyze/batch", body, size) for _ in range(count)]


def check_full(result: dict[str, Any]) -> str | None:
    """Every analysis the flags asked for is present (emotion may be null: no face)."""
    if result.get("error"):
        return f"{result.get('image_id')}: {result['error']}"
    for key in ("aesthetic", *_ANALYSES):
        if key != "emotion" and not result.get(key):
            return f"{result.get('image_id')}: no {key}"
    if len(result["embedding"]["vector"]) != result["embedding"]["dimensions"]:
        return "embedding length mismatch"
    return None


def check_embedding(result: dict[str, Any]) -> str | None:
    if result.get("error"):
        return f"{result.get('image_id')}: {result['error']}"
    extra = [name for name in _ANALYSES if name != "embedding" and result.get(name)]
    if not result.get("embedding") or extra:
        return f"{result.get('image_id')}: expected the embedding only, got {extra}"
    return None


def _send(connection: http.client.HTTPConnection, request: Request, check: Check) -> Outcome:
    start = time.perf_counter()
    try:
        connection.request(
            "POST", request.path, body=request.body, headers={"content-type": "application/json"}
        )
        response = connection.getresponse()
        body = response.read()
        latency = time.perf_counter() - start
    except (http.client.HTTPException, OSError) as exc:
        connection.close()  # the next request opens a new connection
        return Outcome(time.perf_counter() - start, 0, f"{type(exc).__name__}: {exc}")
    if response.status != 200:
        return Outcome(latency, 0, f"HTTP {response.status}: {body[:200].decode(errors='replace')}")
    payload = json.loads(body)
    results = payload["results"] if "results" in payload else [payload["result"]]
    problems = [p for p in map(check, results) if p]
    return Outcome(latency, len(results) - len(problems), problems[0] if problems else None)


def run(base_url: str, scenario: Scenario) -> ScenarioResult:
    """Send every request of `scenario` with `concurrency` clients; wall time covers the
    first send to the last response."""
    lock = threading.Lock()
    next_index = iter(range(len(scenario.requests)))
    outcomes: list[Outcome] = []

    server = urlsplit(base_url)

    def client_loop() -> None:
        connection = http.client.HTTPConnection(
            server.hostname or "127.0.0.1", server.port, timeout=REQUEST_TIMEOUT_S
        )
        try:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                outcome = _send(connection, scenario.requests[index], scenario.check)
                with lock:
                    outcomes.append(outcome)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=client_loop, name=f"client-{i}", daemon=True)
        for i in range(scenario.concurrency)
    ]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ScenarioResult(scenario, time.perf_counter() - start, outcomes)
