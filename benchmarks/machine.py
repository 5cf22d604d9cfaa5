"""What machine the numbers came from, and its measured arithmetic ceiling.

The ceiling is torch's own 2048 x 2048 matmul on the machine's cores (fp32, and bf16 where the
CPU computes it natively: emulated, one bf16 matmul takes minutes and no runner uses it): the
best a dense model could ever do here, so the pipeline's effective GFLOP/s is compared to it.
Run as a child process (`python -m benchmarks.machine OUT.json`) so its threads and memory
never mix with the serving processes.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import psutil

MATMUL_N = 2048
INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo (empty off Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def describe() -> dict[str, Any]:
    """CPU model and features, cores, RAM, OS and the versions that matter for speed."""
    import bentoml
    import torch

    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "cpu_model": info.get("model name", platform.processor() or "unknown"),
        "cpu_flags": [f for f in INTERESTING_FLAGS if f in flags],
        "hypervisor": "hypervisor" in flags,
        "logical_cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bentoml": bentoml.__version__,
    }


def matmul_gflops(dtype_name: str, threads: int, seconds: float = 2.0) -> dict[str, float]:
    """GFLOP/s of an N x N matmul: the best of several ~0.25 s rounds (the ceiling) and
    their median (what the machine gave while other work was running)."""
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_N, MATMUL_N, generator=gen).to(dtype)
    b = torch.randn(MATMUL_N, MATMUL_N, generator=gen).to(dtype)
    flops = 2 * MATMUL_N**3
    for _ in range(3):
        torch.mm(a, b)
    rates: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(rates) < 5:
        start = time.perf_counter()
        reps = 0
        while time.perf_counter() - start < 0.25:
            torch.mm(a, b)
            reps += 1
        rates.append(flops * reps / (time.perf_counter() - start) / 1e9)
    rates.sort()
    return {"best": round(rates[-1], 1), "median": round(rates[len(rates) // 2], 1)}


def ceiling_dtypes() -> tuple[str, ...]:
    """The dtypes the service computes in on this CPU (see runners.serving.precision)."""
    from runners.serving.precision import cpu_has_native_bf16

    return ("float32", "bfloat16") if cpu_has_native_bf16() else ("float32",)


def probe(threads: int) -> dict[str, Any]:
    return {
        **describe(),
        "matmul_threads": threads,
        "matmul_n": MATMUL_N,
        "matmul_gflops": {dtype: matmul_gflops(dtype, threads) for dtype in ceiling_dtypes()},
    }


def main() -> None:
    out = Path(sys.argv[1])
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else (os.cpu_count() or 1)
    out.write_text(json.dumps(probe(threads), indent=2))


if __name__ == "__main__":
    main()
