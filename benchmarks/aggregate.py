"""Fold repeated runs of a scenario into one row.

The development machines are shared virtual machines whose speed drifts by tens of percent
from minute to minute even when no other process of ours runs (measured: the same scenario at
0.9-1.4 images/s within half an hour). So the harness runs the whole scenario list more than
once, interleaved, and reports the median of each figure with the spread beside it.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

_MEDIANS = ("images_per_s", "latency_p50_s", "latency_p95_s", "latency_mean_s")
_SUMS = ("requests", "images_ok", "errors", "wall_s")


def fold(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One summary per scenario name (in first-seen order) from its repeated summaries."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[run["name"]].append(run)
    folded = []
    for group in groups.values():
        row = {k: v for k, v in group[0].items() if k != "inprocess"}  # per run: see overhead
        row["repeats"] = len(group)
        for key in _MEDIANS:
            values = [r[key] for r in group]
            row[key] = round(statistics.median(values), 3)
            row[f"{key}_runs"] = values
        for key in _SUMS:
            row[key] = round(sum(r[key] for r in group), 3)
        row["latency_max_s"] = max(r["latency_max_s"] for r in group)
        row["first_errors"] = [e for r in group for e in r["first_errors"]][:3]
        row["cpu"] = mean_cpu(group)
        per_process = [r["cpu_ms_per_image_by_process"] for r in group]
        names = sorted({n for p in per_process for n in p})
        row["cpu_ms_per_image_by_process"] = {
            n: round(statistics.fmean(p.get(n, 0.0) for p in per_process), 1) for n in names
        }
        row["batches"] = _fold_batches([r.get("batches", {}) for r in group])
        folded.append(row)
    return folded


def mean_cpu(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Each figure of the runs' `cpu` (CpuMeter.delta) as its mean over them."""
    return {
        key: round(statistics.fmean(r["cpu"].get(key, 0.0) for r in runs), 2)
        for key in runs[0]["cpu"]
    }


def _fold_batches(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each runner's batches and requests over all runs, and the mean batch size of them all."""
    folded: dict[str, dict[str, float]] = {}
    for runner in sorted({r for run in runs for r in run}):
        batches = sum(run[runner]["batches"] for run in runs if runner in run)
        requests = sum(run[runner]["requests"] for run in runs if runner in run)
        folded[runner] = {
            "batches": batches,
            "requests": requests,
            "mean_batch_size": round(requests / batches, 3),
        }
    return folded


def fold_baseline(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One baseline from its timings before each pass of the scenario list: the median
    throughputs (each pass's beside them), so each ratio's two sides span the same minutes."""
    row = dict(runs[0])
    row["passes"] = len(runs)
    for rate, seconds in (
        ("full_images_per_s", "full_seconds_per_image"),
        ("embedding_images_per_s", "embedding_seconds_per_image"),
    ):
        values = [r[rate] for r in runs]
        row[rate] = statistics.median(values)
        row[f"{rate}_runs"] = [round(v, 4) for v in values]
        row[seconds] = 1 / row[rate]
    row["stage_mean_seconds"] = {
        stage: round(statistics.fmean(r["stage_mean_seconds"][stage] for r in runs), 4)
        for stage in runs[0]["stage_mean_seconds"]
    }
    row["cpu"] = mean_cpu(runs)
    return row


def fold_inprocess(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The in-process timings taken after each scenario run, as one table: each stage's and
    each runner's mean at each batch size over the runs that timed it."""
    if not runs:
        return None

    def mean_by_key(tables: list[dict[str, float]]) -> dict[str, float]:
        keys = sorted({k for t in tables for k in t}, key=lambda k: (len(k), k))
        return {k: round(statistics.fmean(t[k] for t in tables if k in t), 2) for k in keys}

    def nested(field: str) -> dict[str, dict[str, float]]:
        names = list(dict.fromkeys(n for r in runs for n in r[field]))
        return {n: mean_by_key([r[field][n] for r in runs if n in r[field]]) for n in names}

    return {
        "photos": runs[0]["photos"],
        "rounds": runs[0]["rounds"],
        "runs": len(runs),
        "api_cpu_ms_per_image": nested("api_cpu_ms_per_image"),
        "runner_cpu_ms_per_image": nested("runner_cpu_ms_per_image"),
        "engines": {k: v for r in runs for k, v in r["engines"].items()},
        "cpu": mean_cpu(runs),
    }
