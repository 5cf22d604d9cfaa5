"""The speed the product must reach (issues 5 and 12), checked against one run's measurements.

Every figure comes from the run's own results; ratios compare numbers from the same run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.scenarios import EMBEDDING_12MP, FULL_12MP, LATENCY_12MP

GB = 1e9
EFFICIENCY = 0.9  # of the CPU bound: cores x 1000 / server CPU ms per image
EMBEDDING_OVERHEAD_MS = 15.0
FULL_OVERHEAD_MS = 40.0
EMBEDDING_TIMES_BASELINE = 12.0


@dataclass(frozen=True)
class Check:
    target: str
    measured: str
    passed: bool | None  # None: not measured in this run

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "measured": self.measured, "passed": self.passed}


def _rate(scenarios: dict[str, dict[str, Any]], name: str) -> float | None:
    s = scenarios.get(name)
    return None if s is None or s["errors"] else float(s["images_per_s"])


def cpu_bound(scenario: dict[str, Any], cores: int) -> float | None:
    """The images/s `cores` could give if the server spent nothing but its measured CPU ms
    per image (every serving process together)."""
    per_image = sum(scenario["cpu_ms_per_image_by_process"].values())
    return cores * 1000 / per_image if per_image > 0 else None


def _serving_efficiency(
    scenario: dict[str, Any] | None, results: dict[str, Any], what: str
) -> Check:
    target = (
        f"8 clients >= {EFFICIENCY:.0%} of the CPU bound "
        f"(cores x 1000 / server CPU ms per image), {what}, 12 MP"
    )
    cores = results["machine"]["logical_cores"]
    bound = None if scenario is None or scenario["errors"] else cpu_bound(scenario, cores)
    if scenario is None or bound is None:
        return Check(target, "not measured", None)
    rate = scenario["images_per_s"]
    return Check(
        target,
        f"{rate / bound:.0%} ({rate:.2f} of {bound:.2f} images/s = {cores} x 1000 / "
        f"{cores * 1000 / bound:.0f} ms)",
        rate >= EFFICIENCY * bound,
    )


def _overhead(split: dict[str, Any] | None, what: str, limit_ms: float) -> Check:
    target = (
        f"serving overhead <= {limit_ms:.0f} CPU ms per image, {what}, 12 MP, 8 clients "
        "(server CPU minus the same work in-process)"
    )
    if split is None:
        return Check(target, "not measured", None)
    return Check(
        target,
        f"{split['overhead_cpu_ms']:.1f} ms ({split['server_cpu_ms']:.1f} served - "
        f"{split['inprocess_cpu_ms']:.1f} in-process)",
        split["overhead_cpu_ms"] <= limit_ms,
    )


def _times_baseline(rate: float | None, naive: float | None) -> Check:
    target = (
        f">= {EMBEDDING_TIMES_BASELINE:.0f}x the naive embedding baseline (decode + CLIP), 12 MP"
    )
    if rate is None or not naive:
        return Check(target, "not measured", None)
    ratio = rate / naive
    return Check(
        target,
        f"{ratio:.1f}x ({rate:.2f} vs {naive:.3f} images/s)",
        ratio >= EMBEDDING_TIMES_BASELINE,
    )


def evaluate(results: dict[str, Any]) -> list[Check]:
    scenarios = {s["name"]: s for s in results["scenarios"]}
    baseline = results.get("baseline") or {}
    checks: list[Check] = []

    full = _rate(scenarios, FULL_12MP)
    naive = baseline.get("full_images_per_s")
    if full is not None and naive:
        ratio = full / naive
        checks.append(
            Check(
                ">= 50x the naive baseline, full pipeline, 12 MP",
                f"{ratio:.1f}x ({full:.2f} vs {naive:.4f} images/s)",
                ratio >= 50,
            )
        )
    else:
        checks.append(
            Check(">= 50x the naive baseline, full pipeline, 12 MP", "not measured", None)
        )
    checks.append(
        Check(
            ">= 2 images/s, full pipeline, 12 MP",
            "not measured" if full is None else f"{full:.2f} images/s",
            None if full is None else full >= 2.0,
        )
    )

    emb = _rate(scenarios, EMBEDDING_12MP)
    checks.append(
        Check(
            ">= 20 images/s, embedding only, 12 MP",
            "not measured" if emb is None else f"{emb:.2f} images/s",
            None if emb is None else emb >= 20.0,
        )
    )

    lat = scenarios.get(LATENCY_12MP)
    if lat is not None and not lat["errors"]:
        checks.append(
            Check(
                "p50 < 1.5 s, one 12 MP image, all analysers, concurrency 1",
                f"p50 {lat['latency_p50_s']:.3f} s, p95 {lat['latency_p95_s']:.3f} s",
                lat["latency_p50_s"] < 1.5,
            )
        )
    for name, what in ((FULL_12MP, "full"), (EMBEDDING_12MP, "embedding only")):
        checks.append(_serving_efficiency(scenarios.get(name), results, what))
    overheads = results.get("overhead") or {}
    for name, what, limit in (
        (EMBEDDING_12MP, "embedding only", EMBEDDING_OVERHEAD_MS),
        (FULL_12MP, "full pipeline", FULL_OVERHEAD_MS),
    ):
        checks.append(_overhead(overheads.get(name), what, limit))
    checks.append(_times_baseline(emb, baseline.get("embedding_images_per_s")))

    peak = results["memory"]["peak_pss_bytes"]
    checks.append(
        Check("peak PSS of the serving tree < 4 GB", f"{peak / GB:.2f} GB", peak < 4 * GB)
    )
    ready = results["startup"]["ready_s"]
    checks.append(
        Check("ready < 30 s after `bentoml serve` (models imported)", f"{ready:.1f} s", ready < 30)
    )
    return checks
