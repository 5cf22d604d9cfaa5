"""The workload mix: which endpoint, pipeline, image source, size and concurrency, how much.

Counts are several times the concurrency so the ramp-up and drain at the edges of a scenario
weigh little; `--quick` scales them down for a smoke run. The scenario names are what
`targets.py` reads its headline numbers from.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.load import (
    ALL_FLAGS,
    EMBEDDING_ONLY,
    Scenario,
    analyze_requests,
    batch_requests,
    check_embedding,
    check_full,
)
from benchmarks.workload import Photo, by_size

BATCH_SIZE = 20

# Headline scenarios (see targets.py)
LATENCY_12MP = "full-12mp-base64-c1"
FULL_12MP = "full-12mp-base64-c8"
EMBEDDING_12MP = "embedding-12mp-base64-c8"
EMBEDDING_12MP_C1 = "embedding-12mp-base64-c1"


@dataclass(frozen=True)
class Plan:
    name: str
    endpoint: str  # analyze | batch
    pipeline: str  # full | embedding
    source: str  # base64 | url
    megapixels: int
    concurrency: int
    requests: int  # normal run
    quick_requests: int  # --quick


PLANS: tuple[Plan, ...] = (
    Plan(LATENCY_12MP, "analyze", "full", "base64", 12, 1, 15, 5),
    Plan(FULL_12MP, "analyze", "full", "base64", 12, 8, 48, 16),
    Plan("full-12mp-url-c8", "analyze", "full", "url", 12, 8, 48, 16),
    Plan("full-24mp-base64-c8", "analyze", "full", "base64", 24, 8, 32, 8),
    Plan("full-24mp-url-c8", "analyze", "full", "url", 24, 8, 32, 8),
    Plan("full-batch20-12mp-base64", "batch", "full", "base64", 12, 1, 3, 1),
    Plan("full-batch20-12mp-url", "batch", "full", "url", 12, 1, 3, 1),
    Plan(EMBEDDING_12MP_C1, "analyze", "embedding", "base64", 12, 1, 30, 10),
    Plan(EMBEDDING_12MP, "analyze", "embedding", "base64", 12, 8, 160, 40),
    Plan("embedding-12mp-url-c8", "analyze", "embedding", "url", 12, 8, 160, 40),
    Plan("embedding-24mp-base64-c8", "analyze", "embedding", "base64", 24, 8, 80, 24),
    Plan("embedding-batch20-12mp-url", "batch", "embedding", "url", 12, 1, 6, 2),
)


def describe(plan: Plan) -> str:
    what = "all analysers" if plan.pipeline == "full" else "embedding only"
    if plan.endpoint == "batch":
        return (
            f"/v1/analyze/batch of {BATCH_SIZE} x {plan.megapixels} MP ({plan.source}), "
            f"{what}, one batch at a time"
        )
    return (
        f"/v1/analyze, {plan.megapixels} MP ({plan.source}), {what}, "
        f"{plan.concurrency} concurrent client(s)"
    )


def build(plan: Plan, photos: list[Photo], image_host: str, quick: bool) -> Scenario:
    sized = by_size(photos, plan.megapixels)
    count = plan.quick_requests if quick else plan.requests
    flags = ALL_FLAGS if plan.pipeline == "full" else EMBEDDING_ONLY
    if plan.endpoint == "batch":
        requests = batch_requests(sized, count, BATCH_SIZE, flags, plan.source, image_host)
    else:
        requests = analyze_requests(sized, count, flags, plan.source, image_host)
    return Scenario(
        name=plan.name,
        description=describe(plan),
        requests=requests,
        concurrency=plan.concurrency,
        check=check_full if plan.pipeline == "full" else check_embedding,
        megapixels=plan.megapixels,
        pipeline=plan.pipeline,
        source=plan.source,
        endpoint=plan.endpoint,
    )


def warmup(photos: list[Photo], image_host: str) -> list[Scenario]:
    """Untimed: every photo once through each pipeline, then concurrent bursts, so every
    runner has seen the batch shapes of the timed scenarios before they start."""
    out = []
    for pipeline, flags, check in (
        ("full", ALL_FLAGS, check_full),
        ("embedding", EMBEDDING_ONLY, check_embedding),
    ):
        for concurrency in (1, 8):
            out.append(
                Scenario(
                    name=f"warmup-{pipeline}-c{concurrency}",
                    description="warm-up (not reported)",
                    requests=analyze_requests(
                        photos, len(photos) if concurrency == 1 else 16, flags, "base64", image_host
                    ),
                    concurrency=concurrency,
                    check=check,
                    megapixels=0,
                    pipeline=pipeline,
                    source="base64",
                    endpoint="analyze",
                )
            )
    return out
