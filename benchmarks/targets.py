"""The speed the product must reach (issue 5), checked against one run's measurements.

Every figure comes from the run's own results; ratios compare numbers from the same run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.scenarios import EMBEDDING_12MP, EMBEDDING_12MP_C1, FULL_12MP, LATENCY_12MP

GB = 1e9


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
    one = _rate(scenarios, LATENCY_12MP)
    if full is not None and one:
        checks.append(
            Check(
                "8 clients >= 1.5x the throughput of 1 client (full, 12 MP)",
                f"{full / one:.2f}x ({full:.2f} vs {one:.2f} images/s)",
                full / one >= 1.5,
            )
        )
    emb_one = _rate(scenarios, EMBEDDING_12MP_C1)
    if emb is not None and emb_one:
        checks.append(
            Check(
                "8 clients >= 1.5x the throughput of 1 client (embedding, 12 MP)",
                f"{emb / emb_one:.2f}x ({emb:.2f} vs {emb_one:.2f} images/s)",
                emb / emb_one >= 1.5,
            )
        )

    peak = results["memory"]["peak_pss_bytes"]
    checks.append(
        Check("peak PSS of the serving tree < 4 GB", f"{peak / GB:.2f} GB", peak < 4 * GB)
    )
    ready = results["startup"]["ready_s"]
    checks.append(
        Check("ready < 30 s after `bentoml serve` (models imported)", f"{ready:.1f} s", ready < 30)
    )
    return checks
