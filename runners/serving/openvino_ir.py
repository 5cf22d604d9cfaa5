"""NIMA and CLIP (both towers) on OpenVINO: exported once at import, compiled in a second at load.

Why: PyTorch's eager CPU kernels repack every weight on every call, which dominates the small
batches a serving runner sees. OpenVINO packs the weights once, fuses the graph and runs bf16
on AMX cores: NIMA (InceptionResNetV2, 299 px) 55 ms per image alone and 37 ms in
batches of 8, against 100 and 60 ms for torch bf16; CLIP ViT-B/32 32 and 17 ms against 51 and
18-31 ms (one thread, Xeon with AMX). Exporting traces the model (10 s for NIMA), so
`scripts/import_models.py` does it and stores the IR beside the weights; a runner without an
IR in its stored model, or with FESTORA_ENGINE=torch, computes with torch as before.

    FESTORA_ENGINE=auto      OpenVINO where the stored model has an IR (default)
    FESTORA_ENGINE=torch     always torch (the reference forward passes)

Each exported image graph takes the runner's own input, N x S x S x 3 uint8 RGB, and does the
pixel scaling and normalisation inside, so the runner hands its batch over as it is; the CLIP
text graph takes N x L int64 token ids (L up to the model's context length). Precision follows
FESTORA_PRECISION (`runners.serving.precision`): bf16 or f32 inference, or the int8 copy of an
image graph that the import quantised and checked (`runners.serving.int8`).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from festora.config import env_value
from runners.serving.precision import PRECISION_ENV, Precision, wanted_precision, wants_int8

if TYPE_CHECKING:
    import torch

IR_FILE = "openvino_model.xml"  # and openvino_model.bin beside it
INT8_IR_FILE = "openvino_model_int8.xml"  # where the import kept an int8 copy of IR_FILE
ENGINE_ENV = "FESTORA_ENGINE"

logger = logging.getLogger(__name__)


def wanted_engine() -> Literal["auto", "torch"]:
    raw = env_value(ENGINE_ENV).lower() or "auto"
    if raw not in ("auto", "torch"):
        raise ValueError(f"{ENGINE_ENV} must be auto or torch, got {raw!r}")
    return raw  # type: ignore[return-value]


def export_ir(forward: torch.nn.Module, size: int, model_dir: Path) -> Path:
    """Trace `forward` (N x size x size x 3 uint8 -> outputs) and save it as OpenVINO IR in
    `model_dir`, weights in fp32 exactly as they are (no fp16 compression)."""
    import openvino as ov
    import torch

    example = torch.zeros((1, size, size, 3), dtype=torch.uint8)
    return save_ir(forward, example, ov.PartialShape([-1, size, size, 3]), model_dir / IR_FILE)


def save_ir(forward: torch.nn.Module, example: torch.Tensor, shape: Any, path: Path) -> Path:
    """Trace `forward` on `example`, with the input shape `shape` (an `ov.PartialShape`, -1
    where a dimension varies), and save it as OpenVINO IR at `path`, weights in fp32."""
    import openvino as ov
    import torch

    # Tracing warns about every Python-level branch it freezes; at this fixed input size
    # those branches are constants.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        model = ov.convert_model(forward.eval(), example_input=example, input=[shape])
    ov.save_model(model, path, compress_to_fp16=False)
    return path


def compile_ir(
    model_dir: Path, precision: Precision, num_threads: int, file: str = IR_FILE
) -> Any | None:
    """The stored IR `file` compiled for this CPU, or None when torch should compute instead
    (FESTORA_ENGINE=torch, a GPU in FESTORA_DEVICE, or a model imported before IRs were
    stored)."""
    path = model_dir / (INT8_IR_FILE if precision == "int8" else file)
    if not computes_with_openvino() or not path.is_file():
        return None
    import openvino as ov

    core = ov.Core()
    return core.compile_model(core.read_model(path), "CPU", cpu_config(precision, num_threads))


def computes_with_openvino() -> bool:
    from runners.serving.device import on_gpu

    return wanted_engine() == "auto" and not on_gpu()


def image_precision(model_dir: Path, float_precision: Precision) -> Precision:
    """int8 where FESTORA_PRECISION wants it and the stored model holds an int8 IR that
    OpenVINO will compute with, else `float_precision`."""
    if not wants_int8() or not computes_with_openvino():
        return float_precision
    if (model_dir / INT8_IR_FILE).is_file():
        return "int8"
    if wanted_precision() == "int8":
        logger.warning(
            "%s=int8 but %s holds no int8 IR (imported before int8, or its int8 copy was not "
            "faithful: see the model's metadata); computing in %s",
            PRECISION_ENV,
            model_dir,
            float_precision,
        )
    return float_precision


def cpu_config(precision: Precision, num_threads: int) -> dict[Any, Any]:
    """How every model is compiled for the CPU: the runner's precision and thread count, one
    stream (a runner computes one batch at a time), latency first, threads left to the OS
    scheduler. An int8 graph computes what it left unquantised in fp32 (bf16 there was slower
    and no more faithful).

    By default OpenVINO pins a thread to a core while it computes, and every runner process
    picks the same first core: served, the face model and both NIMAs took turns on core 0
    (and each other's caches) while the other core waited; unpinned, the full pipeline went
    from 5.2 to 5.9 images/s at 8 clients (tests/test_runners.py checks it stays off)."""
    import openvino as ov
    import openvino.properties as props
    import openvino.properties.hint as hints

    return {
        hints.inference_precision: ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
        hints.performance_mode: hints.PerformanceMode.LATENCY,
        props.inference_num_threads: num_threads,
        props.num_streams: 1,
        hints.enable_cpu_pinning: False,
    }


def input_size(compiled: Any) -> int:
    """S of the N x S x S x 3 input an exported graph takes."""
    return int(compiled.input(0).get_partial_shape()[1].get_length())
