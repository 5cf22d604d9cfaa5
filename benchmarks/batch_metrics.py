"""How big the runners' adaptive batches were during a scenario, read from the service's /metrics.

BentoML's serving processes share one Prometheus multiprocess registry, so the API service's
`/metrics` carries every runner's `bentoml_service_adaptive_batch_size` histogram (labelled by
`runner_name`, the runner's service name). Each observation is one dispatched batch and its
value the number of requests in it; the service sends one image per runner request, so that is
images per batch. The counters are cumulative since the server started: a scenario's batches
are the difference between a scrape before and one after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

BATCH_SIZE_METRIC = "bentoml_service_adaptive_batch_size"


@dataclass(frozen=True)
class BatchTotals:
    """Cumulative batches dispatched and requests they held, for one runner."""

    batches: float
    requests: float


def parse(exposition: str) -> dict[str, BatchTotals]:
    """Per runner, the batch-size histogram's count and sum from a Prometheus text exposition,
    summed over the runner's workers and batchable methods."""
    counts: dict[str, float] = {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name != BATCH_SIZE_METRIC:
            continue
        for sample in family.samples:
            runner = sample.labels.get("runner_name", "?")
            if sample.name.endswith("_count"):
                counts[runner] = counts.get(runner, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                sums[runner] = sums.get(runner, 0.0) + sample.value
    return {r: BatchTotals(counts[r], sums.get(r, 0.0)) for r in sorted(counts)}


def scrape(base_url: str) -> dict[str, BatchTotals]:
    response = httpx.get(f"{base_url}/metrics", timeout=30)
    response.raise_for_status()
    return parse(response.text)


def batches_between(
    before: dict[str, BatchTotals], after: dict[str, BatchTotals]
) -> dict[str, dict[str, float]]:
    """Batches, requests and mean batch size of each runner that dispatched any batch between
    the two scrapes."""
    found: dict[str, dict[str, float]] = {}
    for runner, now in after.items():
        then = before.get(runner, BatchTotals(0.0, 0.0))
        batches, requests = now.batches - then.batches, now.requests - then.requests
        if batches > 0:
            found[runner] = {
                "batches": int(batches),
                "requests": int(requests),
                "mean_batch_size": round(requests / batches, 3),
            }
    return found
