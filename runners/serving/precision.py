"""Which precision NIMA and CLIP compute in, with OpenVINO or torch: FESTORA_PRECISION.

    FESTORA_PRECISION=auto   bf16 where the CPU computes bf16 natively, else fp32 (default)
    FESTORA_PRECISION=bf16   bfloat16 weights and activations in the heavy layers
    FESTORA_PRECISION=fp32   the reference pipeline, bit for bit what pyiqa/transformers compute

Why: on CPUs with AVX512_BF16 or AMX, oneDNN runs bf16 convolutions and matmuls 3-4x faster
than fp32 (NIMA's InceptionResNetV2 and CLIP's ViT dominate the service's arithmetic), and the
scores stay faithful (tests/test_precision.py: CLIP cosine >= 0.999, NIMA within 0.05 on its
1-10 scale). Without native bf16 the same code would be emulated and slower, so `auto` keeps
fp32 there.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Literal

from festora.config import env_value

logger = logging.getLogger(__name__)

Precision = Literal["bf16", "fp32"]
PRECISION_ENV = "FESTORA_PRECISION"
# CPU flags (Linux /proc/cpuinfo) that mean bf16 dot products run in hardware.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(NATIVE_BF16_FLAGS & set(line.split(":", 1)[1].split()))
    return False


def compute_precision() -> Precision:
    """The precision from FESTORA_PRECISION (auto when unset or blank)."""
    raw = env_value(PRECISION_ENV).lower() or "auto"
    if raw == "auto":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if raw in ("bf16", "fp32"):
        if raw == "bf16" and not cpu_has_native_bf16():
            logger.warning(
                "%s=bf16 on a CPU without native bf16: expect it to be slow", PRECISION_ENV
            )
        return raw  # type: ignore[return-value]
    raise ValueError(f"{PRECISION_ENV} must be auto, bf16 or fp32, got {raw!r}")
