"""The serving processes' own work, timed in one plain process: what serving would cost with
zero overhead.

Same photos, same code and same model store as the server, nothing between the pieces:
- the API process's work per image and pipeline: base64 decode, JPEG decode at the reduced
  DCT scale the analyses allow (alone: the floor of that process), and the preparation of
  every model input and cheap analysis from that decode;
- each runner's model work (its compute method, without BentoML's dispatch, the array checks
  or the heap trim after each batch) at each batch size asked for, on inputs prepared from the
  same photos, with the runner's own thread settings (one thread per model, as served).

Figures are CPU milliseconds per image (`time.process_time`, all threads of this process), so
they compare directly with the CPU the serving processes spent. The API work is timed before
any runner loads, because loading a runner caps OpenCV's threads for the whole process.

Run as a child process: `python -m benchmarks.inprocess OUT.json SPEC.json`, SPEC being
{"photos": [paths], "pipelines": ["full" | "embedding", ...], "batch_sizes": {runner name:
[sizes]}, "rounds": n}, with the server's environment.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.load import ALL_FLAGS, EMBEDDING_ONLY
from festora import analysis
from festora.config import get_settings
from festora.images import decode_base64
from festora.schemas import AnalysisFlags

PIPELINE_FLAGS = {"full": ALL_FLAGS, "embedding": EMBEDDING_ONLY}
Forward = Callable[[Any, list[np.ndarray]], object]


def _runner_forwards() -> dict[str, tuple[Any, str, Forward]]:
    """Runner service name -> (its service, the prepared input it takes, its model work)."""
    from runners.brisque import Brisque
    from runners.clip import CLIPEncoder
    from runners.faces import FaceAnalyzer
    from runners.nima import NimaAesthetic, NimaTechnical

    def nima(runner: Any, images: list[np.ndarray]) -> object:
        return runner._to_scale(runner._raw(np.stack(images)))

    forwards: dict[Any, tuple[str, Forward]] = {
        CLIPEncoder: ("clip", lambda r, images: r._embed(np.stack(images))),
        NimaTechnical: ("nima", nima),
        NimaAesthetic: ("nima", nima),
        Brisque: ("brisque", lambda r, images: [r._score_one(i) for i in images]),
        FaceAnalyzer: ("faces", lambda r, images: [r._analyze(i) for i in images]),
    }
    return {service.name: (service, key, fn) for service, (key, fn) in forwards.items()}


def cpu_ms(work: Callable[[], object]) -> float:
    started = time.process_time()
    work()
    return 1000 * (time.process_time() - started)


def api_work(encoded: list[str], pipeline: str, rounds: int) -> dict[str, float]:
    """Mean CPU ms per image of each stage of the API process's work for `pipeline`."""
    settings = get_settings()
    flags = AnalysisFlags(**PIPELINE_FLAGS[pipeline])
    size = analysis.decode_size(flags, settings)
    totals = {"base64": 0.0, "decode": 0.0, "prepare": 0.0}

    def one(data_b64: str) -> dict[str, float]:
        stage: dict[str, Any] = {}
        times = {
            "base64": cpu_ms(
                lambda: stage.update(
                    data=decode_base64(data_b64, max_bytes=settings.max_image_size_bytes)
                )
            ),
            "decode": cpu_ms(
                lambda: stage.update(decoded=analysis.decode(stage["data"], size, flags, settings))
            ),
        }
        times["prepare"] = cpu_ms(
            lambda: analysis.prepare_inputs(stage["decoded"], flags, settings)
        )
        return times

    one(encoded[0])  # warm-up: first use of each code path
    for _ in range(rounds):
        for data_b64 in encoded:
            for name, ms in one(data_b64).items():
                totals[name] += ms
    count = rounds * len(encoded)
    means = {name: round(ms / count, 2) for name, ms in totals.items()}
    return {**means, "total": round(sum(means.values()), 2)}


def runner_work(
    runner: Any, forward: Forward, inputs: list[np.ndarray], size: int, rounds: int
) -> float:
    """Mean CPU ms per image of `forward` on batches of `size`, cycling through `inputs`,
    after one untimed batch of that size (a new batch shape compiles on first use)."""
    batches = max(1, -(-rounds * len(inputs) // size))
    picks = [[inputs[(b * size + i) % len(inputs)] for i in range(size)] for b in range(batches)]
    forward(runner, picks[0])
    total = sum(cpu_ms(lambda batch=batch: forward(runner, batch)) for batch in picks)
    return round(total / (batches * size), 2)


def measure(
    photos: list[Path], pipelines: list[str], batch_sizes: dict[str, list[int]], rounds: int
) -> dict[str, Any]:
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in photos]
    api = {pipeline: api_work(encoded, pipeline, rounds) for pipeline in pipelines}

    settings = get_settings()
    flags = AnalysisFlags(**ALL_FLAGS)
    prepared = [
        analysis.prepare_inputs(
            analysis.decode(
                decode_base64(e, max_bytes=settings.max_image_size_bytes),
                analysis.decode_size(flags, settings),
                flags,
                settings,
            ),
            flags,
            settings,
        ).inputs
        for e in encoded
    ]
    runners: dict[str, dict[str, float]] = {}
    engines: dict[str, str | None] = {}
    for name, (service, key, forward) in _runner_forwards().items():
        sizes = sorted(set(batch_sizes.get(name, [])))
        if not sizes:
            continue
        runner = service.inner()
        if not runner.loaded:
            raise RuntimeError(f"{name} did not load: {runner.error}")
        engines[name] = runner.engine
        inputs = [p[key] for p in prepared]
        runners[name] = {
            str(size): runner_work(runner, forward, inputs, size, rounds) for size in sizes
        }
        del runner
    return {
        "photos": [p.name for p in photos],
        "rounds": rounds,
        "api_cpu_ms_per_image": api,
        "runner_cpu_ms_per_image": runners,
        "engines": engines,
    }


def main() -> None:
    out = Path(sys.argv[1])
    spec = json.loads(Path(sys.argv[2]).read_text())
    result = measure(
        [Path(p) for p in spec["photos"]], spec["pipelines"], spec["batch_sizes"], spec["rounds"]
    )
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
