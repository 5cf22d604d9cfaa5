"""Soak and fault injection: mixed good and hostile traffic for a while, with kills.

    .venv/bin/python -m benchmarks.soak --minutes 30            # the documented soak
    .venv/bin/python -m benchmarks.soak --minutes 5 --out benchmarks/soak.json

It serves the service for real (`bentoml serve`, random-init weights imported first), runs
`--clients` concurrent callers over /v1/analyze, /v1/analyze/batch, /v1/analyze/upload and
/v1/cluster with good and hostile inputs (bad base64, truncated and non-image files, wrong
fields, mismatched clusters), and SIGKILLs each runner process once and the API worker once,
evenly spread over the run. It counts what the callers saw: every status and error code, the
5xx, and the requests that got no response at all ("lost"), split by whether an API worker
kill cut them off. Each kill is followed on /health (a runner) or /readyz (the API worker)
until the service says it is back, without any help from outside. Memory is the PSS of the
whole serving tree (`benchmarks.server.PssSampler`), sampled through the run; its flatness is
judged after the warm-up (the first WARMUP_FRACTION of the run).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
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
from PIL import Image

from benchmarks.run import WORK, isolated_env
from benchmarks.server import PssSampler, Served, process_tree, short_name

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
RECOVERY_TIMEOUT_S = 300
CLIENT_TIMEOUT_S = 300


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
    lost: Counter[str] = field(default_factory=Counter)  # no response at all, by cause
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


def _client(url: str, seed: int, stop: threading.Event, tally: Tally) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
        while not stop.is_set():
            call = _calls(rng)
            started = time.monotonic()
            try:
                response = call.send(client)
            except httpx.HTTPError as exc:
                window, failed_at = tally.api_kill_window, time.monotonic()
                cut = window is not None and window[0] <= failed_at <= window[1]
                with tally.lock:
                    tally.lost["api worker killed" if cut else type(exc).__name__] += 1
                time.sleep(0.5)
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
    saw_down: bool = False  # /health (or /readyz) said so, by itself
    recovered_s: float | None = None  # from the kill until the service said it was back


def kill_and_watch(url: str, server_pid: int, target: str, t0: float, tally: Tally) -> Kill:
    """SIGKILL `target`, then watch the service report it down and come back by itself."""
    proc = find_process(server_pid, target)
    kill = Kill(target=target, at_s=round(time.monotonic() - t0, 1), old_pid=proc.pid)
    killed_at = time.monotonic()
    if target == API_WORKER:
        tally.api_kill_window = (killed_at - 1.0, killed_at + RECOVERY_TIMEOUT_S)
    os.kill(proc.pid, signal.SIGKILL)
    model = RUNNERS.get(target)
    with httpx.Client(base_url=url, timeout=10) as client:
        while time.monotonic() - killed_at < RECOVERY_TIMEOUT_S:
            try:
                if model is None:
                    up = client.get("/readyz").status_code == 200
                else:
                    models = {m["name"]: m for m in client.get("/health").json()["models"]}
                    up = models[model]["loaded"]
            except httpx.HTTPError:
                up = False
            if not up:
                kill.saw_down = True
            elif kill.saw_down:
                kill.recovered_s = round(time.monotonic() - killed_at, 1)
                break
            time.sleep(0.25)
    if target == API_WORKER:
        tally.api_kill_window = (killed_at - 1.0, time.monotonic())
    with contextlib.suppress(LookupError):
        kill.new_pid = find_process(server_pid, target).pid
    return kill


@dataclass
class SoakReport:
    minutes: float
    clients: int
    requests: int
    answers: dict[str, int]
    wrong: dict[str, int]
    lost: dict[str, int]
    server_errors_5xx: int
    unexpected_5xx: int
    kills: list[dict[str, Any]]
    latency_ms_p50: float
    latency_ms_p95: float
    pss_mb_after_warmup: dict[str, float]
    pss_drift_pct: float  # (last quarter mean - first post-warm-up quarter mean) / first

    def failures(self) -> list[str]:
        """What breaks the soak's promises (empty: it held)."""
        found = []
        if self.unexpected_5xx:
            found.append(f"{self.unexpected_5xx} unexpected 5xx")
        if self.wrong:
            found.append(f"wrong answers: {self.wrong}")
        lost = {k: n for k, n in self.lost.items() if k != "api worker killed"}
        if lost:
            found.append(f"lost responses: {lost}")
        for kill in self.kills:
            if kill["recovered_s"] is None or kill["new_pid"] in (None, kill["old_pid"]):
                found.append(f"{kill['target']} did not recover by itself: {kill}")
        return found


def _pss_stats(samples: list[tuple[float, int]], duration_s: float) -> tuple[dict, float]:
    after = [pss for t, pss in samples if t >= duration_s * WARMUP_FRACTION]
    if len(after) < 8:
        return {}, 0.0
    quarter = len(after) // 4
    first = statistics.mean(after[:quarter])
    last = statistics.mean(after[-quarter:])
    stats = {
        "min": round(min(after) / 1e6, 1),
        "max": round(max(after) / 1e6, 1),
        "first_quarter_mean": round(first / 1e6, 1),
        "last_quarter_mean": round(last / 1e6, 1),
    }
    return stats, round(100 * (last - first) / first, 2)


def soak(
    url: str,
    server_pid: int,
    duration_s: float,
    clients: int = 8,
    kill_targets: list[str] | None = None,
    log: Any = print,
) -> SoakReport:
    """Drive the served service for `duration_s` with `clients` callers, killing each of
    `kill_targets` once, evenly spread; returns what the callers and the meters saw."""
    targets = list(kill_targets if kill_targets is not None else [*RUNNERS, API_WORKER])
    tally = Tally()
    stop = threading.Event()
    sampler = PssSampler(server_pid, interval_s=2.0)
    pss: list[tuple[float, int]] = []
    t0 = time.monotonic()
    threads = [
        threading.Thread(target=_client, args=(url, seed, stop, tally), daemon=True)
        for seed in range(clients)
    ]
    for thread in threads:
        thread.start()
    kills: list[Kill] = []
    # kills between 30% and 90% of the run: after the warm-up, with time left to recover
    kill_times = [duration_s * (0.3 + 0.6 * i / max(1, len(targets))) for i in range(len(targets))]
    next_sample = 0.0
    while (now := time.monotonic() - t0) < duration_s:
        if kill_times and now >= kill_times[0]:
            kill_times.pop(0)
            target = targets[len(kills)]
            log(f"[{now:6.0f} s] SIGKILL {target}")
            kills.append(kill_and_watch(url, server_pid, target, t0, tally))
            log(f"          {asdict(kills[-1])}")
            continue
        if now >= next_sample:
            pss.append((now, sampler.sample()))
            next_sample = now + sampler.interval_s
            if len(pss) % 30 == 0:
                answered = sum(tally.answers.values())
                log(f"[{now:6.0f} s] {answered} answers, PSS {pss[-1][1] / 1e6:.0f} MB")
        time.sleep(0.2)
    stop.set()
    for thread in threads:
        thread.join(timeout=CLIENT_TIMEOUT_S)
    # PSS flatness only between kills' effects: a restarted process starts small and regrows
    stats, drift = _pss_stats(pss, duration_s)
    latencies = sorted(tally.latencies_ms) or [0.0]
    return SoakReport(
        minutes=round(duration_s / 60, 2),
        clients=clients,
        requests=sum(tally.answers.values()) + sum(tally.lost.values()),
        answers=dict(sorted(tally.answers.items())),
        wrong=dict(tally.wrong),
        lost=dict(tally.lost),
        server_errors_5xx=tally.server_errors(),
        unexpected_5xx=tally.unexpected_5xx(),
        kills=[asdict(k) for k in kills],
        latency_ms_p50=round(latencies[len(latencies) // 2], 1),
        latency_ms_p95=round(latencies[int(len(latencies) * 0.95)], 1),
        pss_mb_after_warmup=stats,
        pss_drift_pct=drift,
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
            kill_targets=[] if args.no_kills else None,
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
