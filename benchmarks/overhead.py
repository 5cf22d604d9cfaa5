"""Serving overhead: what each serving process spent per image beyond the work itself.

The server's CPU ms per image (by process, from `CpuMeter`) minus the in-process CPU ms of the
same work (`benchmarks.inprocess`, timed right after each run of the scenario): the API process
against its decode and preparation for the scenario's pipeline, each runner against its model
work at the mean batch size it dispatched during the run (from /metrics), every other process
(the supervisor, idle runners) against nothing. What remains is serialisation, dispatch,
copies, heap trims and idling.
"""

from __future__ import annotations

import math
from typing import Any

API_PROCESS = "festora-vision"


def cost_at(per_batch_size: dict[str, float], mean_batch: float) -> float:
    """CPU ms per image at `mean_batch`, linear between the measured integer batch sizes
    around it (the nearest measured one outside them)."""
    sizes = sorted(int(s) for s in per_batch_size)
    low = max([s for s in sizes if s <= mean_batch], default=sizes[0])
    high = min([s for s in sizes if s >= mean_batch], default=sizes[-1])
    if low == high:
        return per_batch_size[str(low)]
    share = (mean_batch - low) / (high - low)
    return (1 - share) * per_batch_size[str(low)] + share * per_batch_size[str(high)]


def batch_sizes_needed(scenarios: list[dict[str, Any]]) -> dict[str, list[int]]:
    """The integer batch sizes around each runner's mean batch in every scenario."""
    needed: dict[str, set[int]] = {}
    for s in scenarios:
        for runner, seen in s.get("batches", {}).items():
            mean = max(1.0, seen["mean_batch_size"])
            needed.setdefault(runner, set()).update({math.floor(mean), math.ceil(mean)})
    return {runner: sorted(sizes) for runner, sizes in sorted(needed.items())}


def split(scenario: dict[str, Any], inprocess: dict[str, Any]) -> dict[str, Any] | None:
    """Per serving process: server CPU ms per image, in-process CPU ms per image of its work,
    and their difference; None when the in-process run lacks a runner the scenario used."""
    served = scenario["cpu_ms_per_image_by_process"]
    batches = scenario.get("batches", {})
    runner_costs = inprocess["runner_cpu_ms_per_image"]
    if any(r not in runner_costs for r in batches):
        return None
    processes = {}
    for name in sorted(set(served) | set(batches) | {API_PROCESS}):
        if name == API_PROCESS:
            work = inprocess["api_cpu_ms_per_image"][scenario["pipeline"]]["total"]
        elif name in batches:
            work = cost_at(runner_costs[name], batches[name]["mean_batch_size"])
        else:
            work = 0.0
        server = served.get(name, 0.0)
        processes[name] = {
            "server_cpu_ms": round(server, 1),
            "inprocess_cpu_ms": round(work, 1),
            "overhead_cpu_ms": round(server - work, 1),
        }
    server_total = sum(p["server_cpu_ms"] for p in processes.values())
    work_total = sum(p["inprocess_cpu_ms"] for p in processes.values())
    return {
        "processes": processes,
        "server_cpu_ms": round(server_total, 1),
        "inprocess_cpu_ms": round(work_total, 1),
        "overhead_cpu_ms": round(server_total - work_total, 1),
    }


def covers(scenario: dict[str, Any]) -> bool:
    """Whether the in-process run can time `scenario`'s work: it decodes the 12 MP photos
    from base64, one at a time."""
    return (
        scenario["endpoint"] == "analyze"
        and scenario["source"] == "base64"
        and scenario["megapixels"] == 12
    )


def evaluate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """By scenario name: the mean over its runs of each run's split against the in-process
    timing taken right after it (the machine's speed drifts by tens of percent between
    minutes, so each run is set against its own)."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        result = split(run, run["inprocess"]) if run.get("inprocess") else None
        if result is not None:
            by_name.setdefault(run["name"], []).append(result)
    return {name: _mean_split(splits) for name, splits in by_name.items()}


def _mean_split(splits: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 1)

    keys = ("server_cpu_ms", "inprocess_cpu_ms", "overhead_cpu_ms")
    names = sorted({name for s in splits for name in s["processes"]})
    return {
        "processes": {
            name: {
                key: mean([s["processes"].get(name, {}).get(key, 0.0) for s in splits])
                for key in keys
            }
            for name in names
        },
        **{key: mean([s[key] for s in splits]) for key in keys},
        "overhead_cpu_ms_runs": [s["overhead_cpu_ms"] for s in splits],
    }
