"""Soak and fault injection: mixed good and hostile traffic for a while, with kills.

    .venv/bin/python -m benchmarks.soak --minutes 30            # the documented soak
    .venv/bin/python -m benchmarks.soak --minutes 5 --out benchmarks/soak.json

It serves the service for real (`bentoml serve`, random-init weights imported first), runs
`--clients` concurrent callers over /v1/analyze, /v1/analyze/batch, /v1/analyze/upload and
/v1/cluster with good and hostile inputs (bad base64, truncated and non-image files, wrong
fields, mismatched clusters), and SIGKILLs each runner process once and the API worker once,
one after the other in the first part of the run (KILL_WINDOW). It counts what the callers
saw: every status and error code, the 5xx, the requests whose connection was closed without a
response ("cut off", retried like the festora CLI retries them: every route here is
idempotent) and those that got no response even then ("lost"). Each kill is followed on
/health (a runner) or /readyz (the API worker) until the service says it is back, without any
help from outside. Memory is the PSS of the whole serving tree (`benchmarks.server.PssSampler`),
sampled through the run; its flatness is judged over the kill-free tail only: from REWARM_S
after the last killed process came back (a restarted process starts small and grows back) or
the end of the warm-up, whichever is later, to the end.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

from benchmarks.run import WORK, isolated_env
from benchmarks.server import PssSampler, Served, process_tree, short_name
from festora.health import STATUS_TTL_SECONDS

RUNNERS = {  # BentoML service name -> /health model name
    "CLIPEncoder": "clip",
    "CLIPTextEncoder": "clip_text",
    "NimaTechnical": "nima_technical",
    "NimaAesthetic": "nima_aesthetic",
    "Brisque": "brisque",
    "FaceAnalyzer": "faces",
}
API_WORKER = "festora-vision"
WARMUP_FRACTION = 0.2
KILL_WINDOW = (0.07, 0.3)  # kills are spread over this part of the run, one after another
REWARM_S = 120  # traffic after a restart before that process's memory counts as warm
MIN_FLAT_WINDOW_S = 300  # a shorter kill-free tail is reported but not judged
PSS_FLAT_PCT = 5.0
RECOVERY_TIMEOUT_S = 300
CLIENT_TIMEOUT_S = 300
# As festora/cli/client.py: a request cut off without a response is sent again (up to 4
# attempts, 2, 4 and 8 s apart); every route the soak calls is idempotent.
CUT_OFF_RETRY_WAITS_S = (2.0, 4.0, 8.0)


def _jpeg(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=88)
    return out.getvalue()


def _photos() -> list[bytes]:
    from skimage import data

    photos = []
    for rgb in (data.astronaut(), data.coffee(), data.chelsea()):
        image = Image.fromarray(rgb)
        image.thumbnail((640, 640))
        photos.append(_jpeg(np.asarray(image)))
    return photos


PHOTOS = _photos()
NOT_AN_IMAGE = b"%PDF-1.4 this is not an image"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Call:
    route: str
    kind: str  # "good" | "hostile"
    send: Any  # (httpx.Client) -> httpx.Response
    expect: str  # what a correct answer looks like, checked by `_check`


def _calls(rng: random.Random) -> Call:
    """One request of the mix, chosen at random: good and hostile in about equal parts."""
    photo = rng.choice(PHOTOS)
    truncated = photo[: len(photo) // 3]
    vectors = np.random.default_rng(rng.randrange(1 << 30)).normal(size=(6, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"i{i}" for i in range(6)]
    choices = [
        Call(
            "analyze",
            "good",
            lambda c: c.post("/v1/analyze", json={"image": {"data": _b64(photo)}}),
            "200",
        ),
        Call(
            "analyze",
            "hostile",
            lambda c: c.post(
                "/v1/analyze",
                json={"image": rng.choice([{"data": "@@not base64@@"}, {"data": _b64(truncated)}])},
            ),
            "4xx",
        ),
        Call(
            "analyze",
            "hostile",
            lambda c: c.post("/v1/analyze", json=rng.choice([{}, {"image": {"url": 7}}, []])),
            "4xx",
        ),
        Call(
            "batch",
            "good",  # one bad image among good ones: 200, that image's error only
            lambda c: c.post(
                "/v1/analyze/batch",
                json={
                    "images": [
                        {"data": _b64(photo), "image_id": "a"},
                        {"data": _b64(NOT_AN_IMAGE), "image_id": "bad"},
                        {"data": _b64(rng.choice(PHOTOS)), "image_id": "b"},
                    ],
                    "run_emotion": False,
                },
            ),
            "batch",
        ),
        Call(
            "batch",
            "hostile",
            lambda c: c.post("/v1/analyze/batch", json={"images": []}),
            "4xx",
        ),
        Call(
            "upload",
            "good",
            lambda c: c.post("/v1/analyze/upload", files={"image": ("p.jpg", photo, "image/jpeg")}),
            "200",
        ),
        Call(
            "upload",
            "hostile",
            lambda c: c.post(
                "/v1/analyze/upload",
                files={"image": ("x.jpg", rng.choice([NOT_AN_IMAGE, truncated]), "image/jpeg")},
            ),
            "4xx",
        ),
        Call(
            "cluster",
            "good",
            lambda c: c.post(
                "/v1/cluster", json={"embeddings": vectors.tolist(), "image_ids": ids}
            ),
            "200",
        ),
        Call(
            "cluster",
            "hostile",
            lambda c: c.post(
                "/v1/cluster",
                json=rng.choice(
                    [
                        {"embeddings": vectors.tolist(), "image_ids": ids[:2]},
                        {"embeddings": [[0.0, 0.0], [0.0, 0.0]], "image_ids": ["a", "b"]},
                        {"embeddings": vectors.tolist(), "image_ids": ids, "eps": 99},
                    ]
                ),
            ),
            "4xx",
        ),
    ]
    return rng.choice(choices)


# A service that is restarting a model answers these; callers retry them, as told.
RETRYABLE = {(503, "model_unavailable"), (503, "model_not_ready"), (503, "overloaded")}


def _check(call: Call, response: httpx.Response) -> str | None:
    """None if the answer is what this call should get, else what is wrong with it."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        return f"{status}: not JSON"
    code = body.get("error") if isinstance(body, dict) else None
    if (status, code) in RETRYABLE:
        return (
            None
            if response.headers.get("retry-after") or code == "model_not_ready"
            else (f"{status} {code} without Retry-After")
        )
    if call.expect == "4xx":
        return None if 400 <= status < 500 and isinstance(code, str) else f"{status} {code}"
    if status != 200:
        return f"{status} {code}"
    if call.expect == "batch":
        errors = {r["image_id"]: r.get("error_code") for r in body["results"]}
        if errors["bad"] is None:
            return "batch: the bad image has no error"
        others = {errors["a"], errors["b"]} - {None, "model_unavailable", "model_not_ready"}
        return f"batch: good images failed with {others}" if others else None
    return None


@dataclass
class Tally:
    """What the callers saw."""

    answers: Counter[str] = field(default_factory=Counter)  # "route kind status code"
    wrong: Counter[str] = field(default_factory=Counter)  # answers that were not as expected
    cut_off: Counter[str] = field(default_factory=Counter)  # closed without a response, by cause
    answered_on_retry: int = 0  # cut off, then answered when sent again
    lost: Counter[str] = field(default_factory=Counter)  # no response even after the retries
    latencies_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    api_kill_window: tuple[float, float] | None = None  # monotonic start, end

    def server_errors(self) -> int:
        return sum(n for key, n in self.answers.items() if key.split()[2].startswith("5"))

    def unexpected_5xx(self) -> int:
        """5xx other than the retryable 503s (each with Retry-After, checked in `wrong`)."""
        return sum(
            n
            for key, n in self.answers.items()
            if key.split()[2].startswith("5")
            and (int(key.split()[2]), key.split()[3]) not in RETRYABLE
        )


def _cause(tally: Tally, exc: Exception) -> str:
    """Why a request got no response: the API worker kill if it failed during it."""
    window, failed_at = tally.api_kill_window, time.monotonic()
    cut = window is not None and window[0] <= failed_at <= window[1]
    return "api worker killed" if cut else type(exc).__name__


def _send(call: Call, client: httpx.Client, tally: Tally) -> httpx.Response | None:
    """The response to `call`, sent again after a cut-off as the CLI does; None if lost."""
    for attempt, wait_s in enumerate((*CUT_OFF_RETRY_WAITS_S, None)):
        try:
            response = call.send(client)
        except httpx.TransportError as exc:
            cause = _cause(tally, exc)
            with tally.lock:
                if attempt == 0:
                    tally.cut_off[cause] += 1
                if wait_s is None:
                    tally.lost[cause] += 1
            if wait_s is None:
                return None
            time.sleep(wait_s)
            continue
        if attempt:
            with tally.lock:
                tally.answered_on_retry += 1
        return response
    return None


def _client(url: str, seed: int, stop: threading.Event, tally: Tally) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
        while not stop.is_set():
            call = _calls(rng)
            started = time.monotonic()
            response = _send(call, client, tally)
            if response is None:
                continue
            problem = _check(call, response)
            try:
                code = response.json().get("error") if response.status_code != 200 else "-"
            except (ValueError, AttributeError):
                code = "?"
            with tally.lock:
                tally.answers[f"{call.route} {call.kind} {response.status_code} {code}"] += 1
                tally.latencies_ms.append((time.monotonic() - started) * 1000)
                if problem:
                    tally.wrong[f"{call.route} {call.kind}: {problem}"] += 1
            if response.status_code == 503:
                time.sleep(float(response.headers.get("retry-after", "1")) / 4)


def find_process(server_pid: int, name: str) -> Any:
    """The serving process running BentoML service `name` (API_WORKER: the API service)."""
    for proc in process_tree(server_pid):
        if short_name(proc) == name:
            return proc
    raise LookupError(f"no process runs {name}")


@dataclass
class Kill:
    target: str
    at_s: float  # since the start of the run
    old_pid: int
    new_pid: int | None = None
    # The service was seen without it: /health said so (a runner), or its process was gone
    # (the API worker: new connections wait in the supervisor's listen backlog meanwhile, so
    # /readyz just answers late, after `longest_probe_s`).
    saw_down: bool = False
    recovered_s: float | None = None  # from the kill until the service said it was back
    longest_probe_s: float = 0.0

    @property
    def back_at_s(self) -> float | None:
        return None if self.recovered_s is None else self.at_s + self.recovered_s


def kill_and_watch(url: str, server_pid: int, target: str, t0: float, tally: Tally) -> Kill:
    """SIGKILL `target`, then watch the service report it down and come back by itself."""
    proc = find_process(server_pid, target)
    kill = Kill(target=target, at_s=round(time.monotonic() - t0, 1), old_pid=proc.pid)
    killed_at = time.monotonic()
    if target == API_WORKER:
        tally.api_kill_window = (killed_at - 1.0, killed_at + RECOVERY_TIMEOUT_S)
    os.kill(proc.pid, signal.SIGKILL)
    gone = _wait_dead(proc, timeout=30)
    model = RUNNERS.get(target)
    kill.saw_down = model is None and gone
    with httpx.Client(base_url=url, timeout=10) as client:
        while time.monotonic() - killed_at < RECOVERY_TIMEOUT_S:
            probed_at = time.monotonic()
            try:
                if model is None:
                    up = (
                        _pid_of(server_pid, target) not in (None, kill.old_pid)
                        and client.get("/readyz").status_code == 200
                    )
                else:
                    # /health re-asks a runner every STATUS_TTL_SECONDS: one restarted within
                    # that is back before /health could show it down. Back = a new process,
                    # and loaded by an answer asked after the kill.
                    models = {m["name"]: m for m in client.get("/health").json()["models"]}
                    up = models[model]["loaded"]
                    if not up:
                        kill.saw_down = True
                    fresh = probed_at - killed_at > STATUS_TTL_SECONDS
                    up = up and fresh and _pid_of(server_pid, target) not in (None, kill.old_pid)
            except httpx.HTTPError:
                up = False
            kill.longest_probe_s = round(max(kill.longest_probe_s, time.monotonic() - probed_at), 1)
            if not up and model is None:
                kill.saw_down = True
            elif up and (kill.saw_down or model is not None):
                kill.recovered_s = round(time.monotonic() - killed_at, 1)
                break
            time.sleep(0.25)
    if target == API_WORKER:
        tally.api_kill_window = (killed_at - 1.0, time.monotonic())
    kill.new_pid = _pid_of(server_pid, target)
    return kill


def _wait_dead(proc: psutil.Process, timeout: float) -> bool:
    """Whether `proc` died within `timeout`. A killed process stays a zombie until its parent
    (circus) reaps it, which under load took 8.5 s: `Process.wait` would keep the follower
    blind for all of that, long enough for a quick restart to pass unseen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _pid_of(server_pid: int, target: str) -> int | None:
    try:
        return find_process(server_pid, target).pid
    except LookupError:
        return None


@dataclass
class SoakReport:
    minutes: float
    clients: int
    requests: int
    answers: dict[str, int]
    wrong: dict[str, int]
    cut_off: dict[str, int]
    answered_on_retry: int
    lost: dict[str, int]
    server_errors_5xx: int
    unexpected_5xx: int
    kills: list[dict[str, Any]]
    latency_ms_p50: float
    latency_ms_p95: float
    pss: dict[str, Any]  # the kill-free tail's window, quarter means, per process, by minute
    pss_drift_pct: float | None  # (tail's last quarter mean - its first quarter mean) / first
    load_average_1min: dict[str, float]  # the machine's, sampled with the PSS

    def failures(self) -> list[str]:
        """What breaks the soak's promises (empty: it held)."""
        found = []
        if self.unexpected_5xx:
            found.append(f"{self.unexpected_5xx} unexpected 5xx")
        if self.wrong:
            found.append(f"wrong answers: {self.wrong}")
        if self.lost:
            found.append(f"lost responses: {self.lost}")
        if self.pss_drift_pct is not None and abs(self.pss_drift_pct) > PSS_FLAT_PCT:
            found.append(f"PSS drifted {self.pss_drift_pct} % over the kill-free tail")
        for kill in self.kills:
            if kill["recovered_s"] is None or kill["new_pid"] in (None, kill["old_pid"]):
                found.append(f"{kill['target']} did not recover by itself: {kill}")
        return found


def _mb(values: list[int]) -> float:
    return round(statistics.mean(values) / 1e6, 1)


def pss_stats(
    samples: list[tuple[float, int, dict[str, int]]], duration_s: float, kills: list[Kill]
) -> tuple[dict[str, Any], float | None]:
    """The PSS of the kill-free tail (see the module's docstring) and its drift in percent,
    None when the tail is shorter than MIN_FLAT_WINDOW_S; `samples` are (s, total, by process)."""
    backs = [k.back_at_s for k in kills]
    start = duration_s * WARMUP_FRACTION
    if backs:
        start = max(start, max(b if b is not None else duration_s for b in backs) + REWARM_S)
    tail = [(total, by) for t, total, by in samples if t >= start]
    by_minute: dict[int, list[int]] = {}
    for t, total, _ in samples:
        by_minute.setdefault(int(t // 60), []).append(total)
    stats: dict[str, Any] = {
        "tail_from_s": round(start, 1),
        "tail_s": round(max(0.0, duration_s - start), 1),
        "mb_by_minute": {m: _mb(v) for m, v in sorted(by_minute.items())},
    }
    if len(tail) < 8:
        return stats, None
    quarter = len(tail) // 4
    first, last = tail[:quarter], tail[-quarter:]
    totals = [total for total, _ in tail]
    processes = sorted(set(first[0][1]) & set(last[-1][1]))
    stats |= {
        "samples": len(tail),
        "min_mb": _mb([min(totals)]),
        "max_mb": _mb([max(totals)]),
        "first_quarter_mean_mb": _mb([total for total, _ in first]),
        "last_quarter_mean_mb": _mb([total for total, _ in last]),
        "by_process_first_last_quarter_mb": {
            name: [
                _mb([by.get(name, 0) for _, by in first]),
                _mb([by.get(name, 0) for _, by in last]),
            ]
            for name in processes
        },
    }
    drift = 100 * (stats["last_quarter_mean_mb"] - stats["first_quarter_mean_mb"])
    drift /= stats["first_quarter_mean_mb"]
    judged = duration_s - start >= MIN_FLAT_WINDOW_S
    return stats, round(drift, 2) if judged else None


def soak(
    url: str,
    server_pid: int,
    duration_s: float,
    clients: int = 8,
    kill_targets: list[str] | None = None,
    kill_window: tuple[float, float] = KILL_WINDOW,
    log: Any = print,
) -> SoakReport:
    """Drive the served service for `duration_s` with `clients` callers, killing each of
    `kill_targets` once, spread over `kill_window` (fractions of the run) and each after the
    previous one came back; returns what the callers and the meters saw."""
    targets = list(kill_targets if kill_targets is not None else [*RUNNERS, API_WORKER])
    tally = Tally()
    stop = threading.Event()
    sampler = PssSampler(server_pid, interval_s=2.0)
    pss: list[tuple[float, int, dict[str, int]]] = []
    uss: list[tuple[float, int, dict[str, int]]] = []
    load: list[float] = []
    t0 = time.monotonic()
    threads = [
        threading.Thread(target=_client, args=(url, seed, stop, tally), daemon=True)
        for seed in range(clients)
    ]
    for thread in threads:
        thread.start()
    kills: list[Kill] = []
    begin, end = kill_window
    kill_times = [
        duration_s * (begin + (end - begin) * i / len(targets)) for i in range(len(targets))
    ]
    next_sample = 0.0
    while (now := time.monotonic() - t0) < duration_s:
        if kill_times and now >= kill_times[0]:
            kill_times.pop(0)
            target = targets[len(kills)]
            log(f"[{now:6.0f} s] SIGKILL {target}")
            kills.append(kill_and_watch(url, server_pid, target, t0, tally))
            log(f"          {asdict(kills[-1])}, back at {kills[-1].back_at_s} s")
            continue
        if now >= next_sample:
            pss.append((now, sampler.sample(), sampler.last_breakdown))
            uss.append((now, sum(sampler.last_uss.values()), sampler.last_uss))
            load.append(os.getloadavg()[0])
            next_sample = now + sampler.interval_s
            if len(pss) % 30 == 0:
                answered = sum(tally.answers.values())
                log(f"[{now:6.0f} s] {answered} answers, PSS {pss[-1][1] / 1e6:.0f} MB")
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(timeout=CLIENT_TIMEOUT_S)
    stats, drift = pss_stats(pss, duration_s, kills)
    # USS is what each process holds alone: unlike PSS it does not move when other processes
    # on the machine map the same libraries, or stop mapping them.
    private, _ = pss_stats(uss, duration_s, kills)
    stats["uss_by_process_first_last_quarter_mb"] = private.get("by_process_first_last_quarter_mb")
    latencies = sorted(tally.latencies_ms) or [0.0]
    return SoakReport(
        minutes=round(duration_s / 60, 2),
        clients=clients,
        requests=sum(tally.answers.values()) + sum(tally.lost.values()),
        answers=dict(sorted(tally.answers.items())),
        wrong=dict(tally.wrong),
        cut_off=dict(tally.cut_off),
        answered_on_retry=tally.answered_on_retry,
        lost=dict(tally.lost),
        server_errors_5xx=tally.server_errors(),
        unexpected_5xx=tally.unexpected_5xx(),
        kills=[asdict(k) for k in kills],
        latency_ms_p50=round(latencies[len(latencies) // 2], 1),
        latency_ms_p95=round(latencies[int(len(latencies) * 0.95)], 1),
        pss=stats,
        pss_drift_pct=drift,
        load_average_1min={
            "min": min(load, default=0.0),
            "mean": round(statistics.mean(load), 2) if load else 0.0,
            "max": max(load, default=0.0),
        },
    )


def imported_store(extra: dict[str, str]) -> dict[str, str]:
    """The benchmarks' random-init store (benchmarks/work/, imported once) and the server's
    environment on top of it: no rate limit, `extra` last."""
    env = {**isolated_env(WORK), "WEIGHTS": "random-init", "RATE_LIMIT_ENABLED": "false", **extra}
    os.environ.update(env)
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "scripts/import_models.py", "--random-init"], check=True, cwd=root
    )
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--no-kills", action="store_true", help="traffic only, no faults")
    parser.add_argument(
        "--kill",
        action="append",
        choices=[*RUNNERS, API_WORKER],
        help="kill only these (repeatable; default: every runner, then the API worker)",
    )
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    args = parser.parse_args(argv)

    env = imported_store({"LOG_LEVEL": "WARNING"})
    with Served(env, WORK / "soak-serve.log") as served:
        print(f"ready in {served.ready_s:.1f} s; {args.minutes} min, {args.clients} clients")
        report = soak(
            served.url,
            served.pid,
            args.minutes * 60,
            clients=args.clients,
            kill_targets=[] if args.no_kills else args.kill,
        )
        health = served.health()
    text = json.dumps({**asdict(report), "health_after": health["status"]}, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    problems = report.failures()
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
