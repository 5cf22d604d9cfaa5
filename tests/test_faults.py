"""Runner faults, overload and shutdown, on a real `bentoml serve`.

One module-scoped server (random-init store, load shedding at LIMIT requests): a soak of
mixed good and hostile traffic during which a runner is SIGKILLed (no 500s, /health sees it
down and back by itself), load at four times the limit (shed at once with 503 `overloaded`),
and, last, SIGTERM in the middle of a request (it completes; new ones are refused).
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from benchmarks.soak import PHOTOS, soak
from tests.serving import Server, serve, sigterm_mid_request

pytestmark = pytest.mark.slow

LIMIT = 4
GRACE_S = 120


@pytest.fixture(scope="module")
def server(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "RATE_LIMIT_ENABLED": "false",
        "WEIGHTS": "random-init",
        "MAX_CONCURRENT_REQUESTS": str(LIMIT),
        "LOG_LEVEL": "WARNING",
    }
    log = tmp_path_factory.mktemp("logs") / "faults.log"
    args = ["--timeout-graceful-shutdown", str(GRACE_S)]
    with serve(env, log, args=args) as running:
        yield running


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_killed_runner_costs_no_500_and_health_sees_it_down_then_back(server: Server) -> None:
    """The short soak CI runs (`benchmarks/soak.py` runs it for 30 minutes with every kill)."""
    pid = server.process.pid
    report = soak(
        server.url, pid, 150, clients=LIMIT, kill_targets=["NimaTechnical"], kill_window=(0.3, 0.9)
    )
    assert report.failures() == [], report
    assert report.server_errors_5xx == sum(
        n for key, n in report.answers.items() if key.split()[2:] == ["503", "model_unavailable"]
    )
    (kill,) = report.kills
    # Down on /health unless the runner was back within its 2 s status cache (a quiet machine).
    assert kill["recovered_s"] is not None and (kill["saw_down"] or kill["recovered_s"] < 10)
    assert kill["new_pid"] not in (None, kill["old_pid"])
    good = sum(n for key, n in report.answers.items() if " good 200 " in key)
    assert good >= 10 and report.lost == {}
    health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert all(m["loaded"] for m in health["models"]), health


def test_four_times_the_limit_is_shed_at_once_and_health_stays_up(server: Server) -> None:
    body = {"image": {"data": b64(PHOTOS[0])}}
    health_codes: list[int] = []
    done = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=30) as client:
            while not done.is_set():
                health_codes.append(client.get(f"{server.url}/health").status_code)
                time.sleep(0.2)

    def call(_: int) -> httpx.Response:
        with httpx.Client(timeout=300) as client:
            return client.post(f"{server.url}/v1/analyze", json=body)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with ThreadPoolExecutor(4 * LIMIT) as pool:
            responses = list(pool.map(call, range(4 * LIMIT)))
    finally:
        done.set()
        prober.join()
    codes = sorted({(r.status_code, r.json().get("error")) for r in responses})
    assert set(codes) <= {(200, None), (503, "overloaded")}, codes
    shed = [r for r in responses if r.status_code == 503]
    assert len(shed) >= LIMIT, codes  # at most LIMIT worked on at once
    assert all(r.headers["retry-after"] == "2" for r in shed)
    assert health_codes and set(health_codes) == {200}


def test_a_caller_gone_mid_body_costs_no_500_and_no_traceback(server: Server) -> None:
    """What a runner sees of an API worker SIGKILLed while sending it an image."""
    url = httpx.URL(server.url)
    head = (
        "POST /v1/analyze HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    before = len(server.log())
    for _ in range(3):
        with socket.create_connection((url.host, url.port), timeout=10) as sock:
            sock.sendall(head.encode() + b'{"image": {"data": "')
            time.sleep(0.3)  # the body is being read
    # A request after them: once its line is in the log, anything they caused is there too.
    assert httpx.post(f"{server.url}/v1/analyze", json={}, timeout=30).status_code == 422
    deadline = time.monotonic() + 30
    while "status=422" not in (log := server.log()[before:]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "status=422" in log
    assert "ClientDisconnect" not in log and "status=500" not in log, log[-3000:]


def test_sigterm_drains_requests_in_flight_and_refuses_new_ones(server: Server) -> None:
    images = [{"data": b64(PHOTOS[i % len(PHOTOS)]), "image_id": str(i)} for i in range(20)]
    response = sigterm_mid_request(server, "/v1/analyze/batch", {"images": images}, GRACE_S)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["succeeded"] == len(images), [r["error"] for r in body["results"]]
