"""Text-to-photo search over HTTP: a query against 10,000 CLIP-sized embeddings through
POST /v1/search, end to end, on the real service with random-init CLIP weights, in both forms
a client can send them, side by side on one server in one run.

- `embeddings` (JSON numbers): what /v1/analyze returned, written back as a client writes it
  (the response's float32 values decoded as JSON numbers and encoded again with `json.dumps`);
- `embeddings_base64`: the same float32 matrix, little-endian, in base64 (what `festora search`
  sends).

Each is timed from request to parsed response, with the server's CPU seconds per request (on
a shared machine the wall time includes waiting for other users' work), the runs alternating
between the two forms. Beside them, the API process's stages in-process (parse, check, rank)
for both forms and for the v1 parse this replaced (a `list[list[float]]` field, then the
checks on those lists), so the figure shows where the time goes.

    .venv/bin/python benchmarks/search.py [--count 10000] [--dim 512] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cluster import embeddings  # noqa: E402
from benchmarks.run import WORK, isolated_env  # noqa: E402
from benchmarks.server import CpuMeter, Served  # noqa: E402
from festora.embeddings import encode_base64, image_matrix, unit_rows  # noqa: E402
from festora.errors import ValidationFailed  # noqa: E402
from festora.schemas import SearchRequest  # noqa: E402
from festora.search import best_matches  # noqa: E402

TARGET_SECONDS = 1.0
QUIET_WAIT_S = 20.0  # before each run, wait at most this long for other users to calm down
QUIET_PCT = 25.0
QUERY = "bride cutting the cake"


class ListsSearchRequest(BaseModel):
    """The v1 request model this benchmark first measured: embeddings as Python lists."""

    query: str
    embeddings: list[list[float]]
    image_ids: list[str]
    top_k: int = 10


def in_process(body: bytes, dim: int, lists: bool = False) -> dict[str, float]:
    """CPU seconds per stage of what the API process does with the body, without HTTP
    (`lists`: as the v1 parse did, a list of lists checked afterwards). CPU time, not wall
    time: on a shared machine it is what the work costs, whatever else runs."""
    started = time.process_time()
    request = (ListsSearchRequest if lists else SearchRequest).model_validate_json(
        body, strict=True
    )
    parsed = time.process_time()
    if lists:
        images = unit_rows(request.embeddings, ValidationFailed, dim)
    else:
        images = image_matrix(request, dim)
    checked = time.process_time()
    best_matches(images[0], images, request.image_ids, request.top_k)
    ranked = time.process_time()
    return {
        "parse": parsed - started,
        "check": checked - parsed,
        "rank": ranked - checked,
        "total": ranked - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    os.environ.update(isolated_env(WORK))
    print("importing random-init CLIP into the benchmark model store (once)", flush=True)
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "import_models.py"),
            "--random-init",
            "--only",
            "clip",
        ],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )

    vectors = embeddings(args.count, args.dim)
    ids = [f"IMG_{i:05d}.jpg" for i in range(args.count)]
    returned = json.loads(json.dumps({"vectors": vectors.tolist()}))["vectors"]
    bodies = {
        "json": json.dumps(
            {"query": QUERY, "embeddings": returned, "image_ids": ids, "top_k": 20}
        ).encode(),
        "base64": json.dumps(
            {
                "query": QUERY,
                "embeddings_base64": encode_base64(returned),
                "image_ids": ids,
                "top_k": 20,
            }
        ).encode(),
    }
    for form, body in bodies.items():
        print(f"{form} request body: {len(body) / 1e6:.1f} MB", flush=True)
    load_start = os.getloadavg()
    stages: dict[str, list[dict[str, float]]] = {"v1 lists": [], "json": [], "base64": []}
    for _ in range(args.runs):  # the three alternate, so each sees the same machine
        stages["v1 lists"].append(in_process(bodies["json"], args.dim, lists=True))
        stages["json"].append(in_process(bodies["json"], args.dim))
        stages["base64"].append(in_process(bodies["base64"], args.dim))

    env = {"RATE_LIMIT_ENABLED": "false", "LOG_LEVEL": "WARNING"}
    runs: dict[str, list[dict[str, float]]] = {form: [] for form in bodies}
    results: dict[str, list[str]] = {}
    with Served(env, WORK / "search-serve.log") as server, httpx.Client(timeout=120) as client:
        meter = CpuMeter(server_pid=server.pid)
        url = f"{server.url}/v1/search"
        headers = {"Content-Type": "application/json"}
        for body in bodies.values():
            client.post(url, content=body, headers=headers).raise_for_status()  # warm-up
        for _ in range(args.runs):
            for form, body in bodies.items():
                quiet = meter.wait_quiet(QUIET_WAIT_S, QUIET_PCT)
                before = meter.snapshot()
                response = client.post(url, content=body, headers=headers)
                answer = response.json()
                runs[form].append(
                    {
                        **meter.delta(before, meter.snapshot()),
                        "waited_s": quiet["waited_s"],
                        "load1": os.getloadavg()[0],
                    }
                )
                response.raise_for_status()
                results[form] = [hit["image_id"] for hit in answer["results"]]
    assert len(results["json"]) == 20 and results["json"] == results["base64"]

    def median(values: list[float]) -> float:
        return statistics.median(values)

    def loads(values: tuple[float, ...]) -> str:
        return ", ".join(f"{x:.1f}" for x in values)

    load_end = os.getloadavg()
    size = {form: f"{len(body) / 1e6:.1f} MB" for form, body in bodies.items()}
    lines = [
        "# Search benchmark (`benchmarks/search.py`)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; load average (1, 5, 15 min) {loads(load_start)} "
        f"at the start, {loads(load_end)} at the end (a shared machine: other work ran beside "
        "it).",
        f"Workload: one query against {args.count} embeddings x {args.dim} dims, top_k 20, "
        f"sent as JSON numbers (`embeddings`, {size['json']} body, float32 values as "
        "/v1/analyze returns them) and as base64 little-endian float32 (`embeddings_base64`, "
        f"{size['base64']} body); the two forms alternate on one server, {args.runs} runs "
        "each, and return the same hits. Random-init CLIP text tower on OpenVINO (speed is "
        "real, scores are not).",
        "",
        "| POST /v1/search over HTTP | body | median (s) | all runs (s) | server CPU, median (s) "
        "| 1-min load average during the runs | target < 1 s |",
        "|---|---|---|---|---|---|---|",
    ]
    for form, label in (("json", "`embeddings` (JSON)"), ("base64", "`embeddings_base64`")):
        walls = [r["wall_s"] for r in runs[form]]
        verdict = "met" if median(walls) < TARGET_SECONDS else "MISSED"
        lines.append(
            f"| {label} | {size[form]} | {median(walls):.3f} | "
            f"{', '.join(f'{t:.3f}' for t in walls)} | "
            f"{median([r['server_cpu_s'] for r in runs[form]]):.2f} | "
            f"{', '.join(f'{load:.1f}' for load in (r['load1'] for r in runs[form]))} | "
            f"{verdict} |"
        )
    other = median([r["other_pct"] for form in runs for r in runs[form]])
    lines += [
        "",
        f"Other users took a median {other:.0f}% of the machine during the runs (each run "
        f"waited up to {QUIET_WAIT_S:.0f} s for them to drop under {QUIET_PCT:.0f}%).",
        "",
        "In process (the API process's work on the body, no HTTP), CPU seconds, median of "
        f"{args.runs} runs, the three forms alternating:",
        "",
        "| form | parse | check and normalise | cosine and rank | total |",
        "|---|---|---|---|---|",
    ]
    for form, label in (
        ("v1 lists", "JSON into `list[list[float]]`, then checked (the v1 parse, before)"),
        ("json", "JSON straight into a float32 matrix (`embeddings`, now)"),
        ("base64", "`embeddings_base64`"),
    ):
        cells = [
            median([s[stage] for s in stages[form]])
            for stage in ("parse", "check", "rank", "total")
        ]
        lines.append(f"| {label} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    report = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "SEARCH.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
