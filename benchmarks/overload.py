"""Overload: four times more concurrent callers than the service works on at once.

    .venv/bin/python -m benchmarks.overload                 # 64 clients for 120 s
    .venv/bin/python -m benchmarks.overload --factor 4 --seconds 120 --limit 16

Serves the service (random-init weights) with load shedding at `--limit` requests
(MAX_CONCURRENT_REQUESTS), runs `factor x limit` clients that each send /v1/analyze (full
pipeline, 640 px photos) back to back for `--seconds`, ignoring Retry-After on purpose, and
probes /health every 0.2 s meanwhile. It reports how many requests were served and shed, the
latency of each kind and of /health: a shed request should take milliseconds, a served one
about `limit / throughput` seconds, never the 300 s traffic timeout.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.run import WORK
from benchmarks.server import Served
from benchmarks.soak import PHOTOS, imported_store


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(ordered), "p50": pick(0.5), "p95": pick(0.95), "max": round(ordered[-1], 1)}


def overload(url: str, clients: int, seconds: float) -> dict[str, Any]:
    bodies = [{"image": {"data": base64.b64encode(p).decode()}} for p in PHOTOS]
    codes: Counter[str] = Counter()
    served_ms: list[float] = []
    shed_ms: list[float] = []
    health_ms: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    response = http.post("/v1/analyze", json=bodies[i % len(bodies)])
                    key = f"{response.status_code} {response.json().get('error', '-')}"
                except httpx.HTTPError as exc:
                    key, response = type(exc).__name__, None
                ms = (time.monotonic() - started) * 1000
                with lock:
                    codes[key] += 1
                    if response is not None and response.status_code == 200:
                        served_ms.append(ms)
                    elif response is not None and response.status_code == 503:
                        shed_ms.append(ms)

    def probe() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while not stop.is_set():
                started = time.monotonic()
                status = http.get("/health").status_code
                health_ms.append((time.monotonic() - started) * 1000)
                with lock:
                    codes[f"health {status}"] += 1
                time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    threads.append(threading.Thread(target=probe))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return {
        "clients": clients,
        "seconds": seconds,
        "answers": dict(sorted(codes.items())),
        "served_per_s": round(len(served_ms) / seconds, 2),
        "served_latency_ms": _percentiles(served_ms),
        "shed_latency_ms": _percentiles(shed_ms),
        "health_latency_ms": _percentiles(health_ms),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload", description=__doc__)
    parser.add_argument("--limit", type=int, default=16, help="MAX_CONCURRENT_REQUESTS")
    parser.add_argument("--factor", type=int, default=4, help="clients = factor x limit")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    env = imported_store({"LOG_LEVEL": "ERROR", "MAX_CONCURRENT_REQUESTS": str(args.limit)})
    with Served(env, WORK / "overload-serve.log") as served:
        figures = overload(served.url, args.factor * args.limit, args.seconds)
    figures = {"limit": args.limit, **figures}
    text = json.dumps(figures, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
