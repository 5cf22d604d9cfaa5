"""Benchmark Festora Vision as it is deployed: `bentoml serve`, all runners, over HTTP.

    .venv/bin/python benchmarks/run.py            # full run -> benchmarks/RESULTS.md + results.json
    .venv/bin/python benchmarks/run.py --quick    # smoke run -> benchmarks/work/quick/

One run, so every ratio compares numbers taken on the same machine at the same time:
1. imports full-size random-init weights into a BentoML home under benchmarks/work/ (the same
   architectures and files as real weights: honest about speed, meaningless scores);
2. makes 12 MP and 24 MP camera-like JPEGs from the photos scikit-learn/scikit-image ship;
3. measures the machine (CPU, matmul GFLOP/s ceiling) and counts each model's FLOPs;
4. serves the service, times start -> /readyz, samples the serving tree's PSS throughout,
   and drives every scenario in `scenarios.PLANS` with concurrent HTTP clients (base64 bodies
   and URLs served from a local HTTP server), reading each runner's batches from /metrics
   around every scenario;
5. before each pass over the scenarios, with the server idle, times the naive per-image
   pipeline of the original service on the same weights: the machine's speed drifts by tens
   of percent within a run, so each ratio's baseline is timed among the runs it divides;
6. right after each run of a scenario it can reproduce (/v1/analyze, 12 MP, base64), with the
   server idle, times the same work in one plain process (decode, preparation, each model at
   the batch sizes that run dispatched), the base of the serving overhead;
7. writes the tables and the target checks.

Extra server settings for experiments: `--env FESTORA_PRECISION=fp32` (repeatable), or the same
variable in the environment of this command.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import aggregate, batch_metrics, load, overhead, profile, report, scenarios
from benchmarks.server import CpuMeter, ImageHost, Served
from benchmarks.workload import Photo, build_photos, by_size

# Sampled with py-spy after the timed runs: where their serving overhead goes.
PROFILED = (scenarios.EMBEDDING_12MP, scenarios.FULL_12MP)
TIMED_PSS_INTERVAL_S = 2.0  # PSS samples while a scenario is timed (see PssSampler)
INPROCESS_PHOTO_MEGAPIXELS = 12  # the photos of the scenarios the overhead is computed for

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"
# Variables of the caller's environment that change how the server runs, recorded in results.
RECORDED_PREFIXES = (
    "FESTORA_",
    "CLIP_",
    "NIMA_",
    "BRISQUE_",
    "EMOTION_",
    "OMP_",
    "MKL_",
    "ONEDNN_",
    "DNNL_",
    "BENTOML_",
)


def isolated_env(work: Path) -> dict[str, str]:
    """Stores and caches under `work`, offline, no telemetry: for the harness and its children."""
    return {
        "BENTOML_HOME": str(work / "bentoml"),
        "TORCH_HOME": str(work / "torch"),
        "HF_HOME": str(work / "hf"),
        "DEEPFACE_HOME": str(work / "deepface"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "BENTOML_DO_NOT_TRACK": "true",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "PYTHONUNBUFFERED": "1",
    }


def server_env(extra: dict[str, str]) -> dict[str, str]:
    """Settings the benchmark needs from the service: no rate limit, loopback image URLs,
    24 MP JPEGs and 20-image base64 batches within the size caps."""
    return {
        "RATE_LIMIT_ENABLED": "false",
        "ALLOW_PRIVATE_URLS": "true",
        "MAX_IMAGE_SIZE_BYTES": str(64 * 2**20),
        "MAX_REQUEST_BODY_BYTES": str(512 * 2**20),
        "WEIGHTS": "random-init",
        **extra,
    }


def runner_settings(env: dict[str, str]) -> dict[str, Any]:
    """What the runners resolve from the server's environment: precision and batching."""
    from festora.models import RUNNER_SPECS, runner_config
    from runners.serving.precision import PRECISION_ENV, compute_precision, wants_int8

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return {
            "precision": {
                "FESTORA_PRECISION": os.environ.get(PRECISION_ENV, "(unset: auto)"),
                "resolves_to": compute_precision(),
                "int8": wants_int8(),
            },
            "runners": {key: vars(runner_config(spec)) for key, spec in RUNNER_SPECS.items()},
        }
    finally:
        os.environ.clear()
        os.environ.update(saved)


def child_json(module: str, out: Path, *args: str) -> dict[str, Any]:
    """Run `python -m module out args...` from the repository root and read its JSON."""
    subprocess.run([sys.executable, "-m", module, str(out), *args], cwd=ROOT, check=True)
    return dict(json.loads(out.read_text()))


def import_weights() -> None:
    log("importing random-init weights into the benchmark model store (once)")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "import_models.py"), "--random-init"],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def time_baseline(
    args: argparse.Namespace, photos: list[Photo], meter: CpuMeter, repeat: int
) -> dict[str, Any]:
    """The naive pipeline on `--baseline-images` 12 MP photos, in a child process."""
    log(f"timing the naive baseline on {args.baseline_images} x 12 MP (pass {repeat})")
    quiet = meter.wait_quiet(args.quiet_wait, args.quiet_threshold)
    paths = [str(p.path) for p in by_size(photos, 12)[: args.baseline_images]]
    before = meter.snapshot()
    result = child_json("benchmarks.baseline", WORK / f"baseline-{repeat}.json", *paths)
    result["cpu"] = {
        **CpuMeter.delta(before, meter.snapshot()),
        "waited_for_quiet_s": quiet["waited_s"],
    }
    log(
        f"baseline: {result['full_seconds_per_image']:.2f} s/image full, "
        f"{result['embedding_seconds_per_image']:.2f} s/image embedding only"
    )
    return result


def time_inprocess(
    args: argparse.Namespace,
    photos: list[Photo],
    env: dict[str, str],
    meter: CpuMeter,
    run: dict[str, Any],
) -> dict[str, Any]:
    """The work of one scenario run in one plain process, right after it with the server idle,
    at the batch sizes it dispatched (see benchmarks.inprocess)."""
    quiet = meter.wait_quiet(args.quiet_wait, args.quiet_threshold)
    out = WORK / "inprocess.json"
    spec = {
        "photos": [str(p.path) for p in by_size(photos, INPROCESS_PHOTO_MEGAPIXELS)],
        "pipelines": [run["pipeline"]],
        "batch_sizes": overhead.batch_sizes_needed([run]),
        "rounds": 1 if args.quick else 3,
    }
    spec_path = out.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec))
    before = meter.snapshot()
    subprocess.run(
        [sys.executable, "-m", "benchmarks.inprocess", str(out), str(spec_path)],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
    )
    result = dict(json.loads(out.read_text()))
    result["cpu"] = {
        **CpuMeter.delta(before, meter.snapshot()),
        "waited_for_quiet_s": quiet["waited_s"],
    }
    return result


def serve_and_drive(
    args: argparse.Namespace, photos: list[Photo], env: dict[str, str], out_dir: Path
) -> dict[str, Any]:
    """Serve, wait for ready, warm up, run every selected scenario (and the baseline before
    each pass over them); return the measurements."""
    plans = [p for p in scenarios.PLANS if not args.only or any(o in p.name for o in args.only)]
    with ImageHost(photos[0].path.parent) as host:
        log("starting bentoml serve")
        with Served(env, out_dir / "server.log") as server:
            assert server.ready_s is not None and server.sampler is not None
            log(f"ready in {server.ready_s:.1f} s")
            health = server.health()
            assert host.process is not None
            meter = CpuMeter(server.pid, [host.process.pid])
            for warm in scenarios.warmup(photos, host.url):
                result = load.run(server.url, warm)
                log(
                    f"{warm.name}: {result.images_ok} ok, {len(result.problems)} errors "
                    f"in {result.wall_s:.1f} s"
                )
                if result.problems:
                    raise RuntimeError(
                        f"warm-up failed: {result.problems[:3]}\n{server.log_tail()}"
                    )
            measured, baselines = [], []
            for repeat, plan in [(r, p) for r in range(1, args.repeat + 1) for p in plans]:
                if plan is plans[0] and not args.skip_baseline:
                    baselines.append(time_baseline(args, photos, meter, repeat))
                quiet = meter.wait_quiet(args.quiet_wait, args.quiet_threshold)
                scenario = scenarios.build(plan, photos, host.url, args.quick)
                batches_before = batch_metrics.scrape(server.url)
                with server.sampler.sparse(TIMED_PSS_INTERVAL_S):
                    before = meter.snapshot()
                    result = load.run(server.url, scenario)
                    after = meter.snapshot()
                batches = batch_metrics.batches_between(
                    batches_before, batch_metrics.scrape(server.url)
                )
                result.cpu = {
                    **CpuMeter.delta(before, after),
                    "waited_for_quiet_s": quiet["waited_s"],
                }
                result.cpu_by_process = CpuMeter.per_process(before, after)
                summary = {**result.summary(), "repeat": repeat, "batches": batches}
                measured.append(summary)
                mean_batches = ", ".join(
                    f"{r} {b['mean_batch_size']:.2f}" for r, b in batches.items()
                )
                log(
                    f"{plan.name} (run {repeat}): {summary['images_per_s']:.2f} images/s, p50 "
                    f"{summary['latency_p50_s']:.2f} s, {summary['errors']} errors, other "
                    f"users {result.cpu['other_pct']:.0f}%; mean batches: {mean_batches}"
                )
                if overhead.covers(summary):
                    summary["inprocess"] = time_inprocess(args, photos, env, meter, summary)
                    split = overhead.split(summary, summary["inprocess"])
                    if split is not None:
                        log(
                            f"  the same work in one process: {split['inprocess_cpu_ms']:.1f} "
                            f"CPU ms per image, served {split['server_cpu_ms']:.1f}"
                        )
            profiles = {}
            for plan in [p for p in plans if p.name in PROFILED]:
                log(f"{plan.name}: sampling every serving process with py-spy (untimed)")
                scenario = scenarios.build(plan, photos, host.url, args.quick)
                profiles[plan.name] = profile.sample(
                    server.pid, lambda scenario=scenario: load.run(server.url, scenario)
                )
            sampler = server.sampler
            ready_s = server.ready_s
    return {
        "baseline": aggregate.fold_baseline(baselines) if baselines else None,
        "startup": {"ready_s": round(ready_s, 2), "health": health},
        "scenarios": aggregate.fold(measured),
        "scenario_runs": measured,
        "inprocess": aggregate.fold_inprocess(
            [r["inprocess"] for r in measured if "inprocess" in r]
        ),
        "profiles": profiles,
        "memory": {
            "peak_pss_bytes": sampler.peak_bytes,
            "phase_peak_pss_bytes": sampler.phase_peaks,
            "peak_breakdown": sampler.peak_breakdown,
            "process_peaks": sampler.process_peaks,
            "samples": sampler.samples,
            "interval_s": sampler.interval_s,
            "timed_interval_s": TIMED_PSS_INTERVAL_S,
            "sample_cpu_ms": round(1000 * sampler.sample_cpu_s / max(1, sampler.samples), 1),
        },
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: fewer requests, 1 baseline image, no quiet waits, "
        "results under benchmarks/work/quick/",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for RESULTS.md and results.json (default: benchmarks/, "
        "or benchmarks/work/quick/ with --quick)",
    )
    parser.add_argument(
        "--only", action="append", help="run only scenarios whose name contains this (repeatable)"
    )
    parser.add_argument("--skip-baseline", action="store_true", help="do not time the baseline")
    parser.add_argument(
        "--baseline-images",
        type=int,
        help="12 MP images for the baseline (default 3, 1 with --quick)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="run the scenario list this many times, interleaved; the report shows medians "
        "(default 2, 1 with --quick)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the server (repeatable)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="seconds to wait, before each timed phase, for other users' CPU to "
        "drop below --quiet-threshold (default 60, 0 with --quick)",
    )
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=10.0,
        help="percent of the machine's CPU (default 10)",
    )
    args = parser.parse_args(argv)
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 60.0
    if args.repeat is None:
        args.repeat = 1 if args.quick else 2
    if args.baseline_images is None:
        args.baseline_images = 1 if args.quick else 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = args.out or (WORK / "quick" if args.quick else ROOT / "benchmarks")
    out_dir.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    os.environ.update(isolated_env(WORK))
    extra = dict(item.split("=", 1) for item in args.env)
    env = server_env(extra)

    import_weights()
    log("making the 12 MP and 24 MP JPEGs (once)")
    photos = build_photos(WORK / "images")
    meter = CpuMeter()
    log("measuring the machine")
    meter.wait_quiet(args.quiet_wait, args.quiet_threshold)
    machine = child_json("benchmarks.machine", WORK / "machine.json", str(os.cpu_count() or 1))
    log("counting model FLOPs")
    flops = child_json("benchmarks.flops", WORK / "flops.json")
    served = serve_and_drive(args, photos, env, out_dir if args.quick else WORK)
    recorded_env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(RECORDED_PREFIXES) and k not in ("BENTOML_HOME", "BENTOML_DO_NOT_TRACK")
    }
    results = {
        "run": {
            "command": shlex.join(
                ["benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]
            ),
            "quick": args.quick,
            "finished": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "git": git_state(),
        },
        "machine": machine,
        "flops": flops,
        "photos": [
            {"name": p.name, "width": p.width, "height": p.height, "bytes": p.size_bytes}
            for p in photos
        ],
        "server_env": {**env, **recorded_env},
        "runner_settings": runner_settings(env),
        **served,
    }
    report.write(results, out_dir / "RESULTS.md", out_dir / "results.json")
    log(f"wrote {out_dir / 'RESULTS.md'}")
    for check in results["targets"]:
        state = {True: "pass", False: "MISS", None: "n/a"}[check["passed"]]
        log(f"{state:>4}  {check['target']}: {check['measured']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
