"""A whole event as one job against the batch endpoint, side by side in one run.

The same server, the same photos (distinct crop/resize/noise variants of the photos the
packages ship, fetched by URL from a local image host) and the same flags go through
`/v1/analyze/batch` (batches of 20, one at a time, as in `run.py`'s batch scenarios) and
through one `/v1/jobs` job, alternating which goes first each round so a busy neighbour on
the shared machine weighs on both. Writes `benchmarks/jobs.json` and `benchmarks/JOBS.md`.

    .venv/bin/python benchmarks/jobs.py --images 2000 --pipeline embedding --rounds 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import batch_metrics  # noqa: E402
from benchmarks.batch_metrics import BatchTotals  # noqa: E402
from benchmarks.load import ALL_FLAGS, EMBEDDING_ONLY  # noqa: E402
from benchmarks.run import WORK, git_state, import_weights, isolated_env, server_env  # noqa: E402
from benchmarks.server import CpuMeter, ImageHost, Served  # noqa: E402
from tests.eventphotos import event_photos  # noqa: E402

BATCH_SIZE = 20
PIPELINES = {
    "full": ALL_FLAGS,
    "embedding": EMBEDDING_ONLY,
    "blur": {**{k: False for k in ALL_FLAGS}, "run_blur": True},
}


def mib(n_bytes: int) -> float:
    return round(n_bytes / 2**20, 1)


def log(message: str) -> None:
    print(f"[jobs {time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_photos(count: int, long_side: int) -> Path:
    folder = WORK / f"event-{long_side}px"
    folder.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(count) if not (folder / f"{i:05d}.jpg").exists()]
    if missing:
        for i, photo in enumerate(event_photos(count, long_side=long_side)):
            if i in missing:
                (folder / f"{i:05d}.jpg").write_bytes(photo)
    return folder


def photo_pixels(folder: Path, count: int) -> dict[str, int]:
    from PIL import Image

    sizes = []
    for i in range(count):
        with Image.open(folder / f"{i:05d}.jpg") as image:
            sizes.append(image.width * image.height)
    return {"min": min(sizes), "max": max(sizes)}


def time_batches(
    client: httpx.Client, images: list[dict[str, str]], flags: dict[str, bool]
) -> dict[str, Any]:
    started, failed = time.perf_counter(), 0
    for start in range(0, len(images), BATCH_SIZE):
        body = {"images": images[start : start + BATCH_SIZE], **flags}
        response = client.post("/v1/analyze/batch", json=body)
        response.raise_for_status()
        failed += response.json()["failed"]
    return {"seconds": time.perf_counter() - started, "failed": failed}


def time_job(
    client: httpx.Client, images: list[dict[str, str]], flags: dict[str, bool]
) -> dict[str, Any]:
    """Also what a client polling GET /v1/jobs/{id} saw of the progress: how many distinct
    `done` counts, whether they only went up, and when the first image was reported done."""
    started = time.perf_counter()
    created = client.post("/v1/jobs", json={"kind": "analyze", "images": images, **flags})
    created.raise_for_status()
    job_id = created.json()["job_id"]
    seen: list[int] = []
    first_done_s = None
    while (state := client.get(f"/v1/jobs/{job_id}").json())["status"] in ("queued", "running"):
        seen.append(state["progress"]["done"])
        if first_done_s is None and seen[-1] > 0:
            first_done_s = time.perf_counter() - started
        time.sleep(0.5)
    seconds = time.perf_counter() - started
    if state["status"] != "done":
        raise RuntimeError(f"job ended {state}")
    progress = {
        "polls": len(seen),
        "distinct_done_counts": len(set(seen)),
        "never_went_down": all(a <= b for a, b in itertools.pairwise(seen)),
        "first_done_after_s": first_done_s,
        "final": state["progress"],
    }
    return {
        "seconds": seconds,
        "failed": state["progress"]["failed"],
        "job_id": job_id,
        "progress": progress,
    }


def runner_batches(client: httpx.Client) -> dict[str, BatchTotals]:
    return batch_metrics.parse(client.get("/metrics").text)


def mean_batches(before: dict[str, BatchTotals], after: dict[str, BatchTotals]) -> dict[str, float]:
    """Each runner's mean adaptive batch between two scrapes: how well it could batch what it
    was sent."""
    between = batch_metrics.batches_between(before, after)
    return {runner: counts["mean_batch_size"] for runner, counts in between.items()}


def analyze_latencies(
    client: httpx.Client, images: list[dict[str, str]], flags: dict[str, bool]
) -> list[float]:
    """Seconds per synchronous /v1/analyze call, one at a time."""
    latencies = []
    for image in images:
        started = time.perf_counter()
        client.post("/v1/analyze", json={"image": image, **flags}).raise_for_status()
        latencies.append(time.perf_counter() - started)
    return latencies


def latency_beside_a_job(
    client: httpx.Client, images: list[dict[str, str]], flags: dict[str, bool], probes: int
) -> dict[str, float]:
    """p50 of a lone client's /v1/analyze with the service idle, then while a job runs: what
    the throttle leaves synchronous requests."""
    idle = analyze_latencies(client, images[:probes], flags)
    job_id = client.post("/v1/jobs", json={"images": images, **flags}).json()["job_id"]
    while client.get(f"/v1/jobs/{job_id}").json()["progress"]["done"] < 2 * BATCH_SIZE:
        time.sleep(0.2)  # the job is in full swing
    busy = analyze_latencies(client, images[-probes:], flags)
    state = client.delete(f"/v1/jobs/{job_id}").json()
    return {
        "idle_p50_s": statistics.median(idle),
        "beside_job_p50_s": statistics.median(busy),
        "job_done_meanwhile": state["progress"]["done"],
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    flags = PIPELINES[args.pipeline]
    folder = make_photos(args.images, args.long_side)
    env = server_env(
        {"JOBS_DIR": str(WORK / "jobs-store"), **dict(e.split("=", 1) for e in args.env)}
    )
    rounds: list[dict[str, Any]] = []
    with ImageHost(folder) as host, Served(env, WORK / "jobs-serve.log") as served:
        meter = CpuMeter(server_pid=served.pid, helper_pids=[host.process.pid])  # type: ignore[union-attr]
        sampler = served.sampler
        assert sampler is not None
        images = [
            {"url": f"{host.url}/{i:05d}.jpg", "image_id": f"IMG_{i:05d}"}
            for i in range(args.images)
        ]
        with httpx.Client(base_url=served.url, timeout=900) as client:
            log("warm-up: two batches")
            time_batches(client, images[: 2 * BATCH_SIZE], flags)
            for round_index in range(args.rounds):
                order = ("batch", "job") if args.first == "batch" else ("job", "batch")
                if round_index % 2:
                    order = order[::-1]
                measured: dict[str, Any] = {"first": order[0]}
                for kind in order:
                    sampler.phase = f"round {round_index + 1} {kind}"
                    pss_start = sampler.sample()
                    batches_before, before = runner_batches(client), meter.snapshot()
                    outcome = (time_batches if kind == "batch" else time_job)(client, images, flags)
                    after = meter.snapshot()
                    outcome["mean_runner_batch"] = mean_batches(
                        batches_before, runner_batches(client)
                    )
                    cpu = CpuMeter.delta(before, after)
                    outcome["images_per_s"] = args.images / outcome["seconds"]
                    outcome["other_users_cpu_pct"] = cpu["other_pct"]
                    outcome["server_cpu_s_per_image"] = cpu["server_cpu_s"] / args.images
                    outcome["server_cpu_s_by_process"] = CpuMeter.per_process(before, after)
                    outcome["load_average"] = os.getloadavg()
                    outcome["pss_mib"] = {
                        "start": mib(pss_start),
                        "end": mib(sampler.sample()),
                        "peak": mib(sampler.phase_peaks[sampler.phase]),
                    }
                    measured[kind] = outcome
                    log(
                        f"round {round_index + 1} {kind}: {outcome['images_per_s']:.2f} images/s,"
                        f" {outcome['failed']} failed, other users {cpu['other_pct']}% of the CPU,"
                        f" server CPU {outcome['server_cpu_s_per_image']:.3f} s/image"
                        f" {outcome['server_cpu_s_by_process']}, mean runner batches"
                        f" {outcome['mean_runner_batch']},"
                        f" load {outcome['load_average']}, PSS MiB {outcome['pss_mib']}"
                        + (f", progress {outcome['progress']}" if kind == "job" else "")
                    )
                rounds.append(measured)
            log("latency of a lone synchronous client, idle and beside a job")
            latency = latency_beside_a_job(client, images, flags, args.probes)
            log(f"{latency}")
    batch = statistics.median(r["batch"]["images_per_s"] for r in rounds)
    job = statistics.median(r["job"]["images_per_s"] for r in rounds)
    return {
        "run": {
            "command": " ".join(["benchmarks/jobs.py", *sys.argv[1:]]),
            "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "git": git_state(),
            "cores": os.cpu_count(),
        },
        "images": args.images,
        "long_side_px": args.long_side,
        "photo_pixels": photo_pixels(folder, args.images),
        "pipeline": args.pipeline,
        "flags": flags,
        "server_env": env,
        "rounds": rounds,
        "sync_latency": latency,
        "batch_images_per_s": batch,
        "job_images_per_s": job,
        "job_vs_batch": job / batch,
    }


def markdown(result: dict[str, Any]) -> str:
    rows = [
        f"| {i + 1} ({r['first']} first) | {r['batch']['images_per_s']:.2f} | "
        f"{r['job']['images_per_s']:.2f} | "
        f"{r['job']['images_per_s'] / r['batch']['images_per_s']:.2f} | "
        f"{r['batch']['failed']} / {r['job']['failed']} | "
        f"{r['batch']['other_users_cpu_pct']}% / {r['job']['other_users_cpu_pct']}% | "
        f"{r['batch']['server_cpu_s_per_image']:.3f} / {r['job']['server_cpu_s_per_image']:.3f} | "
        f"{r['batch']['load_average'][0]:.1f} / {r['job']['load_average'][0]:.1f} | "
        f"{pss(r['batch'])} / {pss(r['job'])} |"
        for i, r in enumerate(result["rounds"])
    ]
    progress = [
        f"round {i + 1}: {p['polls']} polls saw {p['distinct_done_counts']} distinct `done` "
        f"counts, never going down: {'yes' if p['never_went_down'] else '**no**'}, the first "
        f"image done after {p['first_done_after_s']:.1f} s"
        for i, p in enumerate(r["job"]["progress"] for r in result["rounds"])
    ]
    share = 100 * result["job_vs_batch"]
    lat = result["sync_latency"]
    verdict = "pass" if share >= 90 else "**MISS**"
    analyses = ", ".join(k for k, v in result["flags"].items() if v)
    header = ["Round", "Batch images/s", "Job images/s", "Job / batch", "Failed (batch / job)"]
    header += ["Other users' CPU (batch / job)", "Server CPU s/image (batch / job)"]
    header.append("Load average, 1 min, at the end")
    header.append("Serving tree PSS MiB, start -> end (peak) (batch / job)")
    return "\n".join(
        [
            "# Jobs: a whole event through `/v1/jobs` beside `/v1/analyze/batch`",
            "",
            f"Generated by `{result['run']['command']}` on {result['run']['finished']} "
            f"(git {result['run']['git']}). {result['images']} distinct photos "
            f"(crop/resize/noise variants of the five photos scikit-image and scikit-learn ship, "
            f"{result['photo_pixels']['min'] / 1e6:.2f}-{result['photo_pixels']['max'] / 1e6:.2f}"
            " MP, by URL from a local image host), "
            f"pipeline `{result['pipeline']}` ({analyses}), the same server and flags for both: "
            "the batch endpoint in batches of 20 one at a time, and one job of all the photos "
            "timed from its POST until it reports done.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *rows,
            "",
            f"Median: batch {result['batch_images_per_s']:.2f} images/s, job "
            f"{result['job_images_per_s']:.2f} images/s = "
            f"{share:.0f}% of the batch endpoint (target >= 90%: {verdict}).",
            "",
            f"Synchronous requests beside a job (the throttle, `festora/jobs/throttle.py`): one "
            f"client's `/v1/analyze` with the same flags took a median {lat['idle_p50_s']:.3f} s "
            f"on the idle service and {lat['beside_job_p50_s']:.3f} s while a job of "
            f"{result['images']} photos ran ({lat['job_done_meanwhile']} of them done by the end "
            "of the probe, then it was cancelled).",
            "",
            "Mean batch each runner ran (BentoML's adaptive batching, from `/metrics`): "
            + "; ".join(
                f"round {i + 1} batch {batches(r['batch'])}, job {batches(r['job'])}"
                for i, r in enumerate(result["rounds"])
            )
            + ".",
            "",
            "Progress a client polling `GET /v1/jobs/{id}` every 0.5 s saw: "
            + "; ".join(progress)
            + ".",
            *(["", result["note"]] if result.get("note") else []),
        ]
    )


def batches(arm: dict[str, Any]) -> str:
    return ", ".join(f"{name} {size:.1f}" for name, size in arm["mean_runner_batch"].items())


def pss(arm: dict[str, Any]) -> str:
    used = arm["pss_mib"]
    return f"{used['start']:.0f} -> {used['end']:.0f} ({used['peak']:.0f})"


def record(result: dict[str, Any]) -> None:
    (ROOT / "benchmarks" / "jobs.json").write_text(json.dumps(result, indent=2) + "\n")
    (ROOT / "benchmarks" / "JOBS.md").write_text(markdown(result) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--long-side", type=int, default=1600, help="largest photo side (px)")
    parser.add_argument("--pipeline", choices=PIPELINES, default="embedding")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--first", choices=("batch", "job"), default="batch", help="round 1's")
    parser.add_argument("--probes", type=int, default=10, help="synchronous latency probes")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--no-record", action="store_true", help="print, do not write JOBS.md")
    parser.add_argument("--note", default="", help="a paragraph recorded under the figures")
    args = parser.parse_args()
    os.environ.update(isolated_env(WORK))
    import_weights()
    result = {**measure(args), "note": args.note}
    log(
        f"batch {result['batch_images_per_s']:.2f} images/s, job {result['job_images_per_s']:.2f} "
        f"images/s ({100 * result['job_vs_batch']:.0f}%)"
    )
    if not args.no_record:
        record(result)
    else:
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
