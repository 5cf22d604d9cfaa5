"""Where each serving process's CPU goes: py-spy samples of every process during one more,
untimed run of a scenario, each sample filed under the first kind of work its stack shows.

The timed runs say how many CPU ms per image each process spends; this says on what. A sample
is filed by its innermost frame that names a kind below (so a heap trim inside a runner's
`score` counts as a trim, and a pickle inside BentoML's dispatch as serialisation). py-spy
also samples threads parked in epoll or on a lock, and cannot tell them from work in uvloop's C
code; those are shown as waiting and left out of the shares, which are then applied to the
timed runs' CPU ms per image. Sampling slows the server down, which is why this run is separate
and not timed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.server import process_tree, short_name

SAMPLES_PER_S = 100
PY_SPY = Path(sys.executable).with_name("py-spy")  # requirements-dev.txt, beside python
WAITING = "waiting (epoll, locks)"
WORK = "the work itself (model, decode, preparation)"
# (kind, substrings of a py-spy frame "function (path:line)"); the first match wins per frame.
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("heap trim", ("serving/memory.py",)),
    (WAITING, ("selectors.py:", "Condition.wait", "Event.wait", "queue.py:")),
    (
        WORK,
        (
            "InferRequest.infer",
            "festora/images.py",
            "festora/preprocess.py",
            "prepare_inputs (",
            "festora/blur.py",
            "festora/exposure.py",
            "festora/fingerprint.py",
            "festora/metadata.py",
            "runners/brisque",
            "runners/blazeface.py",
            "runners/face_mesh.py",
            "runners/emotion.py",
            "runners/faces.py",
            "runners/nima.py",
            "runners/clip.py",
        ),
    ),
    (
        "serialisation (pickle, JSON, pydantic)",
        ("pickle", "serde.py", "pydantic", "json/", "orjson", "io_models.py"),
    ),
    (
        "HTTP (sockets, parsing, runner client)",
        ("selector_events.py", "h11", "httptools", "uvicorn/protocols", "aiohttp", "uvloop"),
    ),
    ("logging, tracing, metrics", ("logging/", "opentelemetry", "prometheus", "metrics.py")),
    (
        "dispatch (BentoML, Starlette, asyncio, middleware)",
        ("bentoml", "starlette", "anyio", "asyncio/", "festora/", "(service.py:"),
    ),
)
OTHER = "other"


# A sample whose innermost frame runs the event loop is in uvloop's C code, which py-spy cannot
# see into: mostly its epoll wait (16-21 % of a runner's samples under load, the share the
# pure-Python loop showed in `selectors.py`), so it counts as waiting.
EVENT_LOOP_FRAMES = ("Runner.run (asyncio/runners.py", "run_forever (", "run_until_complete (")


def kind_of(stack: list[str]) -> str:
    if stack and stack[-1].startswith(EVENT_LOOP_FRAMES):
        return WAITING
    for frame in reversed(stack):
        for kind, needles in KINDS:
            if any(needle in frame for needle in needles):
                return kind
    return OTHER


def read_raw(path: Path) -> Counter[str]:
    """py-spy's raw (collapsed) output: 'frame;frame;... count' per line -> samples by kind."""
    kinds: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            kinds[kind_of(stack.split(";"))] += int(count)
    return kinds


def sample(server_pid: int, drive: Callable[[], object]) -> dict[str, dict[str, int]]:
    """Samples by kind for every process of the serving tree while `drive()` runs."""
    procs = {short_name(p): p.pid for p in process_tree(server_pid)}
    with tempfile.TemporaryDirectory() as folder:
        outputs = {name: Path(folder, f"{pid}.txt") for name, pid in procs.items()}
        spies = [
            subprocess.Popen(
                [
                    str(PY_SPY), "record", "--pid", str(procs[name]), "--rate",
                    str(SAMPLES_PER_S), "--nonblocking", "--format", "raw", "--output", str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, out in outputs.items()
        ]  # fmt: skip
        try:
            drive()
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            for spy in spies:
                spy.wait(timeout=60)
        return {name: dict(read_raw(out)) for name, out in outputs.items() if out.exists()}


def apportion(samples: dict[str, dict[str, int]], cpu_ms: dict[str, float]) -> dict[str, Any]:
    """Each process's timed CPU ms per image split by the shares of its non-waiting samples."""
    out: dict[str, Any] = {}
    for process, kinds in sorted(samples.items()):
        busy = {k: n for k, n in kinds.items() if k != WAITING}
        total = sum(busy.values())
        if not total or cpu_ms.get(process, 0.0) < 1.0:
            continue
        ms = cpu_ms[process]
        out[process] = {
            "cpu_ms_per_image": round(ms, 1),
            "samples": total,
            "waiting_samples": kinds.get(WAITING, 0),
            "ms_per_image": {k: round(ms * n / total, 1) for k, n in sorted(busy.items())},
        }
    return out
