"""Which precision the models compute in, with OpenVINO or torch: FESTORA_PRECISION.

    FESTORA_PRECISION=auto   int8 for NIMA and CLIP's image tower where the import stored a
                             faithful int8 IR and the CPU has int8 dot products; bf16 on CPUs
                             with AMX; else fp32 (default)
    FESTORA_PRECISION=int8   int8 wherever the stored model has an int8 IR (the others: auto)
    FESTORA_PRECISION=bf16   bfloat16 weights and activations in the heavy layers
    FESTORA_PRECISION=fp32   the reference pipeline, bit for bit what pyiqa/transformers compute

Why: NIMA's InceptionResNetV2 and CLIP's ViT dominate the service's arithmetic. With AMX,
oneDNN runs bf16 convolutions and matmuls 3-4x faster than fp32; with AVX512_BF16 alone it
is slower than fp32 (Xeon without AMX, OpenVINO 2026.4, one thread: NIMA 341 against 217 ms
per image, CLIP 121 against 90, the face models 257 against 214 per photo), so `auto` asks
for AMX. int8 (`runners.serving.int8`) is 3-4x faster than fp32 wherever the CPU has VNNI
(same Xeon: NIMA 59 ms, CLIP 29). Both stay faithful: tests/test_precision.py holds bf16 and
int8 to CLIP cosine >= 0.999 and NIMA within 0.05 on its 1-10 scale, and the import keeps an
int8 IR only if it meets the same bounds with the weights it quantised.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Literal

from festora.config import env_value

logger = logging.getLogger(__name__)

Precision = Literal["int8", "bf16", "fp32"]
PRECISION_ENV = "FESTORA_PRECISION"
PRECISIONS = ("auto", "int8", "bf16", "fp32")
# CPU flags (Linux /proc/cpuinfo): bf16 dot products in hardware; bf16 matrix tiles (AMX),
# the only bf16 faster than fp32; int8 dot products (VNNI or AMX).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
FAST_BF16_FLAGS = frozenset({"amx_bf16"})
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    return bool(NATIVE_BF16_FLAGS & cpu_flags())


def cpu_has_fast_bf16() -> bool:
    return bool(FAST_BF16_FLAGS & cpu_flags())


def cpu_has_int8_dot_products() -> bool:
    return bool(INT8_FLAGS & cpu_flags())


def wanted_precision() -> str:
    """FESTORA_PRECISION as set: auto (when unset or blank), int8, bf16 or fp32."""
    raw = env_value(PRECISION_ENV).lower() or "auto"
    if raw not in PRECISIONS:
        raise ValueError(f"{PRECISION_ENV} must be {', '.join(PRECISIONS)}, got {raw!r}")
    return raw


def compute_precision() -> Literal["bf16", "fp32"]:
    """The floating-point precision of a model without an int8 IR: auto and int8 mean bf16
    where the CPU has AMX, else fp32."""
    raw = wanted_precision()
    if raw in ("auto", "int8"):
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    if raw == "bf16" and not cpu_has_native_bf16():
        logger.warning("%s=bf16 on a CPU without native bf16: expect it to be slow", PRECISION_ENV)
    return raw  # type: ignore[return-value]


def wants_int8() -> bool:
    """Whether a model with a stored int8 IR should compute with it."""
    raw = wanted_precision()
    return raw == "int8" or (raw == "auto" and cpu_has_int8_dot_products())
