"""Where NIMA and CLIP compute: FESTORA_DEVICE.

    FESTORA_DEVICE=auto      the first NVIDIA GPU torch sees, else the CPU (default)
    FESTORA_DEVICE=cpu       OpenVINO (or torch with FESTORA_ENGINE=torch) on the CPU
    FESTORA_DEVICE=cuda[:N]  torch on that NVIDIA GPU (the Kubernetes GPU overlay sets it)

OpenVINO's CPU plugin is what makes these models fast on a CPU; on a GPU node torch's CUDA
kernels are, so a CUDA device always computes with torch. `auto` precision there means bf16
where the GPU supports it. The runner's engine names the device, e.g. "torch-bf16-cuda".
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from runners.serving.precision import PRECISION_ENV, Precision, compute_precision

if TYPE_CHECKING:
    import torch

DEVICE_ENV = "FESTORA_DEVICE"


def wanted_device() -> str:
    raw = os.environ.get(DEVICE_ENV, "").strip().lower() or "auto"
    if raw == "auto":
        return "cuda" if cuda_available() else "cpu"
    if raw != "cpu" and not re.fullmatch(r"cuda(:\d+)?", raw):
        raise ValueError(f"{DEVICE_ENV} must be auto, cpu, cuda or cuda:N, got {raw!r}")
    return raw


NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")


@functools.cache
def cuda_available() -> bool:
    """Whether torch sees a GPU, asked only where NVIDIA's kernel driver is loaded: asking
    torch loads the CUDA runtime, about 260 MB more per runner on a machine without one."""
    if not NVIDIA_DRIVER.exists():
        return False
    import torch

    return torch.cuda.is_available()


def on_gpu() -> bool:
    return wanted_device() != "cpu"


def torch_device() -> torch.device:
    """The torch device to compute on; raises if it is a GPU torch cannot see."""
    import torch

    device = wanted_device()
    if device != "cpu" and not torch.cuda.is_available():
        raise RuntimeError(f"{DEVICE_ENV}={device} but torch sees no CUDA device")
    return torch.device(device)


def device_precision() -> Precision:
    """FESTORA_PRECISION for the wanted device: the CPU's rule on a CPU; on a GPU, `auto`
    is bf16 where the GPU computes it."""
    if not on_gpu():
        return compute_precision()
    raw = os.environ.get(PRECISION_ENV, "").strip().lower() or "auto"
    if raw != "auto":
        return compute_precision()
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def engine_name(precision: Precision) -> str:
    return f"torch-{precision}" + ("" if not on_gpu() else f"-{wanted_device()}")
