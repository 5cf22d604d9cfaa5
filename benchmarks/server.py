"""The processes a benchmark drives: `bentoml serve`, a local image host, and their meters.

- `Served` starts the real service the way production does (`bentoml serve
  service:FestoraVision`: the API service plus one process per runner) and times the start
  until `/readyz` answers 200.
- `PssSampler` sums the proportional set size (PSS) of the whole serving process tree several
  times a second: PSS splits each shared page between the processes that map it, so the
  libraries every runner loads (torch, OpenCV, ...) are counted once, not once per process.
- `ImageHost` serves the benchmark JPEGs over HTTP from its own process, so image URLs are
  fetched through the service's real ingestion path without costing the client's CPU.
- `CpuMeter` splits the machine's busy CPU time into the server's, the harness's and
  everybody else's, so a run on a shared machine says how much of it was not ours.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.serving import free_port

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 300


def process_tree(pid: int) -> list[psutil.Process]:
    """`pid` and all of its descendants that are still alive."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def short_name(proc: psutil.Process) -> str:
    """A readable label for a serving process: the BentoML service it runs, else its name."""
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    if "--service-name" in cmd:
        return cmd[cmd.index("--service-name") + 1]
    if "_bentoml_impl.worker.service" in " ".join(cmd) and "--service-name" not in cmd:
        return "festora-vision"
    if "serve" in cmd:
        return "bentoml-serve (supervisor)"
    return proc.name()


class PssSampler:
    """Samples the PSS of a process tree from a background thread; keeps the peak total,
    the per-process PSS at that peak, and the largest each process ever reached.

    A sample is not free: the kernel walks every page table of the tree to count PSS (about
    40 CPU ms for the service's nine processes), so `sparse()` samples less often while a
    throughput run is timed. `sample_cpu_s` is what the samples cost, for the report.
    """

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.sample_cpu_s = 0.0
        self.phase = "startup"  # set by the caller; the peak of each phase is kept too
        self.phase_peaks: dict[str, int] = {}
        self.peak_bytes = 0
        self.peak_breakdown: dict[str, int] = {}
        self.process_peaks: dict[str, int] = {}
        self.samples = 0
        self.last_bytes = 0
        self.last_breakdown: dict[str, int] = {}
        self.last_uss: dict[str, int] = {}  # pages private to each process, by the same names
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pss-sampler", daemon=True)

    def start(self) -> PssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @contextmanager
    def sparse(self, interval_s: float) -> Iterator[None]:
        """Sample every `interval_s` seconds until the block exits, then as often as before."""
        usual = self.interval_s
        self.interval_s = interval_s
        try:
            yield
        finally:
            self.interval_s = usual

    def sample(self) -> int:
        started_cpu = time.thread_time()
        breakdown: dict[str, int] = {}
        uss: dict[str, int] = {}
        for proc in process_tree(self.pid):
            try:
                memory = proc.memory_full_info()
                pss = int(memory.pss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            name = f"{short_name(proc)} [{proc.pid}]"
            breakdown[name] = pss
            uss[name] = int(memory.uss)
            self.process_peaks[name] = max(self.process_peaks.get(name, 0), pss)
        total = sum(breakdown.values())
        self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), total)
        self.samples += 1
        self.last_bytes = total
        self.last_breakdown = breakdown
        self.last_uss = uss
        if total > self.peak_bytes:
            self.peak_bytes = total
            self.peak_breakdown = breakdown
        self.sample_cpu_s += time.thread_time() - started_cpu
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)


@dataclass
class CpuSnapshot:
    machine_busy_s: float
    server_s: float
    harness_s: float
    wall: float
    server_processes: dict[str, float] = field(default_factory=dict)


def _tree_cpu_by_process(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each live process of the tree, by readable name."""
    found: dict[str, float] = {}
    for proc in process_tree(pid):
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        name = short_name(proc)
        found[name] = found.get(name, 0.0) + t.user + t.system
    return found


def _tree_cpu(pid: int) -> float:
    return sum(_tree_cpu_by_process(pid).values())


@dataclass
class CpuMeter:
    """CPU seconds spent by the server tree, by the harness (this process, its finished
    children such as the baseline, and helper processes such as the image host) and by the
    rest of the machine (other users) between two snapshots."""

    server_pid: int | None = None
    helper_pids: list[int] = field(default_factory=list)

    def snapshot(self) -> CpuSnapshot:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)
        own = psutil.Process().cpu_times()
        harness = own.user + own.system + own.children_user + own.children_system
        processes = _tree_cpu_by_process(self.server_pid) if self.server_pid else {}
        return CpuSnapshot(
            machine_busy_s=busy,
            server_s=sum(processes.values()),
            harness_s=harness + sum(_tree_cpu(p) for p in self.helper_pids),
            wall=time.perf_counter(),
            server_processes=processes,
        )

    @staticmethod
    def per_process(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
        """CPU seconds each serving process spent between the snapshots."""
        return {
            name: round(seconds - before.server_processes.get(name, 0.0), 2)
            for name, seconds in sorted(after.server_processes.items())
        }

    @staticmethod
    def delta(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
        wall = after.wall - before.wall
        machine = after.machine_busy_s - before.machine_busy_s
        server = after.server_s - before.server_s
        harness = after.harness_s - before.harness_s
        other = max(0.0, machine - server - harness)
        capacity = wall * (psutil.cpu_count() or 1)
        return {
            "wall_s": round(wall, 3),
            "server_cpu_s": round(server, 2),
            "harness_cpu_s": round(harness, 2),
            "other_cpu_s": round(other, 2),
            "machine_busy_pct": round(100 * machine / capacity, 1) if wall else 0.0,
            "other_pct": round(100 * other / capacity, 1) if wall else 0.0,
        }

    def wait_quiet(self, max_wait_s: float, threshold_pct: float) -> dict[str, float]:
        """Wait (at most `max_wait_s`) for a 2 s window in which other users take less than
        `threshold_pct` of the machine; returns how long it waited and the last share seen."""
        start = time.perf_counter()
        other = 0.0
        while True:
            before = self.snapshot()
            time.sleep(2.0)
            other = self.delta(before, self.snapshot())["other_pct"]
            waited = time.perf_counter() - start
            if other <= threshold_pct or waited >= max_wait_s:
                return {"waited_s": round(waited, 1), "other_pct": other}


class ImageHost:
    """`python -m http.server` on a free loopback port, serving `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ImageHost:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "http.server",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--directory",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/", timeout=1)
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError("image host did not start")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)


class Served:
    """`bentoml serve service:FestoraVision` with `env`, from start to ready to stopped."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_s: float | None = None
        self.sampler: PssSampler | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Served:
        """Start serving and block until /readyz is 200; `ready_s` is the time it took."""
        cmd = [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            "service:FestoraVision",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with self.log_path.open("wb") as log:
            started = time.perf_counter()
            self.process = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.sampler = PssSampler(self.process.pid).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"bentoml serve exited:\n{self.log_tail()}")
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        self.ready_s = time.perf_counter() - started
                        self.sampler.phase = "serving"
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise TimeoutError(f"not ready in {READY_TIMEOUT_S} s:\n{self.log_tail()}")

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/health", timeout=30).json())

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> Served:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def time_posts_without_models(path: str, body: bytes, runs: int, name: str) -> list[float]:
    """Seconds from request to parsed response of `runs` POSTs of `body` to `path`, on the
    real service started with an empty model store (for routes that need no model)."""
    from tests.serving import serve

    home = Path(tempfile.mkdtemp(prefix=f"festora-{name}-bench-"))
    env = {
        "BENTOML_HOME": str(home / "bentoml"),
        "RATE_LIMIT_ENABLED": "false",
        "BENTOML_DO_NOT_TRACK": "true",
        "LOG_LEVEL": "WARNING",
    }
    seconds = []
    with serve(env, home / "serve.log") as server, httpx.Client(timeout=300) as client:
        for _ in range(runs):
            started = time.perf_counter()
            response = client.post(
                f"{server.url}{path}", content=body, headers={"Content-Type": "application/json"}
            )
            response.json()
            seconds.append(time.perf_counter() - started)
            response.raise_for_status()
    return seconds
