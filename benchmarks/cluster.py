"""Clustering over HTTP: 10,000 CLIP-sized embeddings through POST /v1/cluster, end to end.

Serves the real service (no models needed for clustering), sends the JSON body a client would
send, and times request to parsed response. Side by side, the same DBSCAN in-process, so the
ratio shows what HTTP and JSON cost on top of the clustering itself.

    .venv/bin/python benchmarks/cluster.py [--count 10000] [--dim 512] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server import time_posts_without_models  # noqa: E402
from festora.clustering import cluster_embeddings  # noqa: E402
from festora.schemas import ClusterRequest  # noqa: E402

TARGET_SECONDS = 5.0


def embeddings(count: int, dim: int, groups: int = 200, seed: int = 0) -> np.ndarray:
    """Unit vectors in `groups` tight bunches, like embeddings of bursts of similar photos."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(groups, dim))
    vectors = centres[rng.integers(0, groups, count)] + rng.normal(scale=0.02, size=(count, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    vectors = embeddings(args.count, args.dim)
    ids = [f"IMG_{i:05d}.jpg" for i in range(args.count)]
    body = json.dumps({"embeddings": vectors.tolist(), "image_ids": ids}).encode()
    print(f"request body: {len(body) / 1e6:.1f} MB", flush=True)

    in_process = []
    for _ in range(args.runs):
        started = time.perf_counter()
        request = ClusterRequest.model_validate_json(body)
        cluster_embeddings(request, eps=0.35, min_samples=2)
        in_process.append(time.perf_counter() - started)

    over_http = time_posts_without_models("/v1/cluster", body, args.runs, "cluster")
    result = cluster_embeddings(
        ClusterRequest.model_validate_json(body), eps=0.35, min_samples=2
    ).model_dump()
    http_median = statistics.median(over_http)
    local_median = statistics.median(in_process)
    lines = [
        "# Clustering benchmark (`benchmarks/cluster.py`)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}.",
        f"Workload: {args.count} embeddings x {args.dim} dims (float32 written as JSON, "
        f"{len(body) / 1e6:.1f} MB body), eps 0.35, min_samples 2; "
        f"{result['num_clusters']} clusters, {result['num_noise']} noise.",
        "",
        "| path | median of runs (s) | all runs (s) |",
        "|---|---|---|",
        f"| POST /v1/cluster over HTTP | {http_median:.2f} | "
        f"{', '.join(f'{t:.2f}' for t in over_http)} |",
        f"| in-process parse + DBSCAN (baseline) | {local_median:.2f} | "
        f"{', '.join(f'{t:.2f}' for t in in_process)} |",
        "",
        f"Target: under {TARGET_SECONDS:.0f} s over HTTP: "
        f"{'met' if http_median < TARGET_SECONDS else 'MISSED'} "
        f"(HTTP/in-process ratio {http_median / local_median:.2f}).",
    ]
    report = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "CLUSTER.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
