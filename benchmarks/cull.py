"""Culling 10,000 analyses, in process and through POST /v1/cull; and what the cheap per-image
analyses (exposure, fingerprint, metadata) cost in the API process.

The 10,000 analyses are the real shoot of tests/photos.py (two 5-frame bursts, singles, a
similar pair without EXIF) analysed here with the model-free analyses, repeated as 715 shoots
an hour apart: each repeat gets its own file hashes, its pHashes XOR-ed with its own 64-bit
mask (the scenes differ, the distances inside one stay), its own CLIP-sized embeddings (one per
scene, frames of a scene within cosine 0.99) and NIMA scores, so every signal and all three
kinds of link are exercised, about one frame in five without EXIF.

    .venv/bin/python benchmarks/cull.py [--count 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.server import time_posts_without_models  # noqa: E402
from festora.analysis import decode, decode_size  # noqa: E402
from festora.blur import to_analysis_gray  # noqa: E402
from festora.config import get_settings  # noqa: E402
from festora.cull import CullRequest, cull  # noqa: E402
from festora.exposure import measure_exposure  # noqa: E402
from festora.fingerprint import perceptual_hash  # noqa: E402
from festora.metadata import read_metadata  # noqa: E402
from festora.schemas import (  # noqa: E402
    AestheticResult,
    AnalysisFlags,
    EmbeddingResult,
    ImageAnalysisResult,
    QualityResult,
)
from tests.photos import jpeg, real_photos, shoot  # noqa: E402
from tests.test_cull import analyse  # noqa: E402

TARGET_SECONDS = 5.0


def workload(count: int, seed: int = 0) -> list[ImageAnalysisResult]:
    rng = np.random.default_rng(seed)
    base = [analyse(shot) for shot in shoot()]
    scene_of = [a.image_id[0] for a in base]  # a, b: bursts; c, e: singles; d: similar pair
    out: list[ImageAnalysisResult] = []
    repeat = 0
    while len(out) < count:
        mask = int(rng.integers(0, 2**63)) | (int(rng.integers(0, 2)) << 63)
        centres = {s: rng.normal(size=512) for s in set(scene_of)}
        for analysis, scene in zip(base, scene_of, strict=True):
            if len(out) == count:
                break
            a = analysis.model_copy(deep=True)
            a.image_id = f"r{repeat:04d}-{a.image_id}"
            a.fingerprint.sha256 = hashlib.sha256(
                f"{repeat}{a.fingerprint.sha256}".encode()
            ).hexdigest()
            a.fingerprint.phash = f"{int(a.fingerprint.phash, 16) ^ mask:016x}"
            if a.metadata.captured_at:
                moment = datetime.fromisoformat(a.metadata.captured_at) + timedelta(hours=repeat)
                a.metadata.captured_at = moment.isoformat()
            vector = centres[scene] + rng.normal(scale=0.1, size=512) / np.sqrt(512) * 10
            vector /= np.linalg.norm(vector)
            a.embedding = EmbeddingResult(
                model="clip", dimensions=512, vector=vector.astype(np.float32).tolist()
            )
            technical, aesthetic = rng.uniform(3, 8, size=2)
            a.quality = QualityResult(
                brisque_score=30.0, nima_technical_score=technical, overall_quality="medium"
            )
            a.aesthetic = AestheticResult(nima_aesthetic_score=aesthetic, aesthetic_label="medium")
            out.append(a)
        repeat += 1
    return out


def cheap_analyses(
    iterations: int = 20,
) -> tuple[list[tuple[str, float]], tuple[int, ...], int]:
    """Median ms per 12 MP JPEG of each cheap analysis, on the decode /v1/analyze makes."""
    photo = Image.fromarray(real_photos()["astronaut"]).resize(
        (4000, 3000), Image.Resampling.BICUBIC
    )
    data = jpeg(np.asarray(photo), captured_at=datetime(2024, 6, 1, 15), serial="SN-A")
    settings = get_settings()
    flags = AnalysisFlags()
    decoded = decode(data, decode_size(flags, settings), flags, settings)
    gray = to_analysis_gray(decoded.rgb, settings.blur_analysis_size)
    work = {
        "sha256 of the file bytes": lambda: hashlib.sha256(data).hexdigest(),
        "pHash, from the shared grey copy": lambda: perceptual_hash(gray),
        "exposure, from the shared grey copy": lambda: measure_exposure(gray),
        "metadata, from the EXIF the decode read": lambda: read_metadata(decoded.exif),
        "(the grey copy at 1024 px, which blur makes anyway)": lambda: to_analysis_gray(
            decoded.rgb, settings.blur_analysis_size
        ),
        "(the decode itself, for scale)": lambda: decode(
            data, decode_size(flags, settings), flags, settings
        ),
    }
    timings: dict[str, list[float]] = {name: [] for name in work}
    for _ in range(iterations):
        for name, job in work.items():
            started = time.perf_counter()
            job()
            timings[name].append((time.perf_counter() - started) * 1000)
    rows = [(name, statistics.median(values)) for name, values in timings.items()]
    return rows, decoded.rgb.shape, len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    analyses = workload(args.count)
    body = CullRequest(analyses=analyses).model_dump_json(include={"analyses"}).encode()
    print(f"request body: {len(body) / 1e6:.1f} MB", flush=True)

    in_process, parse_and_cull = [], []
    for _ in range(args.runs):
        started = time.perf_counter()
        result = cull(analyses)
        in_process.append(time.perf_counter() - started)
        started = time.perf_counter()
        cull(CullRequest.model_validate_json(body).analyses)
        parse_and_cull.append(time.perf_counter() - started)
    kinds = Counter(g.kind for g in result.groups)

    over_http = time_posts_without_models("/v1/cull", body, args.runs, "cull")

    cheap, decoded_shape, jpeg_bytes = cheap_analyses()
    load = os.getloadavg()
    timed = [
        ("`cull()` in process (the cull itself)", in_process),
        ("JSON parse + `cull()` in process", parse_and_cull),
        ("POST /v1/cull over HTTP, request to parsed response", over_http),
    ]
    fmt = lambda values: ", ".join(f"{v:.2f}" for v in values)  # noqa: E731
    lines = [
        "# Cull benchmark (`benchmarks/cull.py`)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; load average {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (1/5/15 min) at the end, on a machine shared with other users.",
        f"Workload: {args.count} analyses (the test shoot repeated, see the module docstring), "
        f"each with a 512-float embedding: {len(body) / 1e6:.1f} MB of JSON; "
        f"{len(result.groups)} groups ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}).",
        "",
        "| path | median of runs (s) | all runs (s) |",
        "|---|---|---|",
        *[f"| {name} | {statistics.median(v):.2f} | {fmt(v)} |" for name, v in timed],
        "",
        f"Target: the cull of 10,000 analyses under {TARGET_SECONDS:.0f} s: "
        f"{'met' if statistics.median(in_process) < TARGET_SECONDS else 'MISSED'} in process, "
        f"{'met' if statistics.median(over_http) < TARGET_SECONDS else 'MISSED'} over HTTP.",
        "",
        "## Cheap per-image analyses (in the API process)",
        "",
        f"A 4000 x 3000 camera-like JPEG ({jpeg_bytes / 1e6:.1f} MB) decoded as /v1/analyze "
        f"decodes it with every flag on ({decoded_shape[1]} x {decoded_shape[0]}); median of "
        "20 runs per analysis, one thread.",
        "",
        "| analysis | ms per image |",
        "|---|---|",
        *[f"| {name} | {ms:.2f} |" for name, ms in cheap],
    ]
    report = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "CULL.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
