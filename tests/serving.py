"""Run the real service under `bentoml serve` on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_SECONDS = 240
# BentoML's distributed mode (what its own `run_bento_server_distributed` and the container
# image's `start-http-server` entrypoint run): `--service-name X` serves one dependency,
# `--depends X=URL` serves the API service with X found at URL instead of started.
START_HTTP_SERVER = ("bentoml_cli._internal.start", "start-http-server")
RUNNER_SERVICES = (
    "CLIPEncoder",
    "CLIPTextEncoder",
    "NimaTechnical",
    "NimaAesthetic",
    "Brisque",
    "FaceAnalyzer",
)


def depends_args(urls: dict[str, str]) -> list[str]:
    """START_HTTP_SERVER arguments that map each named runner service to its URL."""
    return [arg for name, url in urls.items() for arg in ("--depends", f"{name}={url}")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole `bentoml serve` tree, as a crash of the machine would: its
        workers run in process groups of their own, so the group alone is not enough."""
        tree = psutil.Process(self.process.pid).children(recursive=True)
        os.killpg(self.process.pid, signal.SIGKILL)
        for child in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self.process.wait()
        psutil.wait_procs(tree, timeout=30)


@contextmanager
def serve(
    env: dict[str, str],
    log_path: Path,
    target: str = "service:FestoraVision",
    *,
    command: Sequence[str] = ("bentoml", "serve"),
    port: int | None = None,
    ready_path: str = "/readyz",
    working_dir: Path = ROOT,
    args: Sequence[str] = (),
) -> Iterator[Server]:
    """Serve `target` (the project's service or a Bento tag) from `working_dir` with `env` on
    top of ours, as `python -m <command> <target> ... <args>` (default `bentoml serve`;
    START_HTTP_SERVER serves one service of a distributed deployment) on `port` (default: a free
    one); wait for `ready_path` to answer 200; stop it after."""
    port = port or free_port()
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                *command,
                target,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *args,
            ],
            cwd=working_dir,
            # Each server keeps its own jobs unless a test shares a folder on purpose.
            env={**os.environ, "JOBS_DIR": str(log_path.with_suffix(".jobs")), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(url=f"http://127.0.0.1:{port}", log_path=log_path, process=process)
    try:
        wait_ready(server, process, ready_path)
        yield server
    finally:
        if process.poll() is None:  # not killed by the test
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_ready(
    server: Server, process: subprocess.Popen[bytes], ready_path: str = "/readyz"
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited early:\n{server.log()[-4000:]}")
        try:
            if httpx.get(f"{server.url}{ready_path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server not ready in {START_TIMEOUT_SECONDS} s:\n{server.log()[-4000:]}")


def sigterm_mid_request(server: Server, path: str, body: dict, grace_s: float) -> httpx.Response:
    """SIGTERM `bentoml serve`, as a container runtime does on stop (it is the container's
    PID 1), while a POST of `body` to `path` is being worked on; check that a new request is
    refused at once and the server exits within `grace_s`; return the first request's answer."""
    answers: dict[str, httpx.Response] = {}

    def in_flight() -> None:
        with httpx.Client(timeout=300) as client:
            answers["first"] = client.post(f"{server.url}{path}", json=body)

    request = threading.Thread(target=in_flight)
    request.start()
    time.sleep(1.5)  # the request is being worked on
    assert request.is_alive(), "the request ended before SIGTERM"
    supervisor = psutil.Process(server.process.pid)
    supervisor.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    try:
        httpx.post(f"{server.url}/v1/cluster", json={}, timeout=10)
    except httpx.HTTPError:
        pass
    else:
        raise AssertionError("a new request was taken after SIGTERM")
    request.join(timeout=grace_s)
    try:
        supervisor.wait(timeout=grace_s)
    except psutil.TimeoutExpired:
        raise AssertionError(
            f"bentoml serve did not exit within its grace period:\n{server.log()[-3000:]}"
        ) from None
    return answers["first"]
