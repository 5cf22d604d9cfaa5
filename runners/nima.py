"""NIMA image quality (KonIQ-trained, "technical") and aesthetics (AVA-trained).

Both are pyiqa's own NIMA arch (`pyiqa.archs.nima_arch.NIMA`) with an InceptionResNetV2
backbone, options taken from pyiqa's model registry, and pyiqa's released weight files
(`{'params': state_dict}`). Scales, as reported:

- technical (pyiqa `nima-koniq`): one linear output trained on KonIQ-10k MOS normalised to
  about 0-1; reported as `1 + 9 * clip(x, 0, 1)`, so 0 -> 1 and 1 -> 10.
- aesthetic (pyiqa `nima`): the mean of its 10-bin AVA score distribution, already 1-10.

The runner computes with the OpenVINO IR exported at import (`uint8_forward`, see
`runners.serving.openvino_ir`), or with pyiqa's torch module where there is none.
"""

from __future__ import annotations

import threading
import types
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import bentoml
import numpy as np

from festora.models import NIMA_AESTHETIC, NIMA_TECHNICAL, ModelSpec, Provenance, runner_config
from festora.preprocess import NIMA_SIZE
from runners.serving.base import (
    Float32Array,
    ModelRunner,
    Uint8Array,
    check_images,
    service_options,
    set_threads,
)
from runners.serving.device import device_precision, engine_name, torch_device
from runners.serving.memory import skip_unused_gpu_compiler, trim_after_batch
from runners.serving.openvino_ir import compile_ir, image_precision

if TYPE_CHECKING:
    import torch

# pyiqa registry name of each variant (pyiqa/default_model_configs.py)
PYIQA_METRIC = {NIMA_TECHNICAL.key: "nima-koniq", NIMA_AESTHETIC.key: "nima"}

_TIMM_LOCK = threading.Lock()
# Images per forward pass: a batch of 16 at 299 px peaks ~70 MB higher than one of 8 (bf16:
# +250 vs +180 MB over the loaded model) and runs no faster per image (InceptionResNetV2, one
# thread), so larger batches are computed 8 at a time.
FORWARD_CHUNK = 8


@contextmanager
def backbone_without_download() -> Iterator[None]:
    """pyiqa's NIMA asks timm for ImageNet weights (`pretrained=True`: a hub download).
    The NIMA state dict replaces every backbone weight, so build the backbone untrained."""
    import timm
    from pyiqa.archs import nima_arch

    def create_model(name: str, pretrained: bool = False, **kwargs: object) -> object:
        return timm.create_model(name, pretrained=False, **kwargs)

    with _TIMM_LOCK:
        nima_arch.timm = types.SimpleNamespace(create_model=create_model)
        try:
            yield
        finally:
            nima_arch.timm = timm


def nima_options(spec: ModelSpec) -> dict[str, object]:
    """The NIMA constructor options pyiqa registers for this variant."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    opts = dict(DEFAULT_CONFIGS[PYIQA_METRIC[spec.key]]["metric_opts"])
    opts.pop("type")
    return opts


def build_nima(spec: ModelSpec) -> torch.nn.Module:
    """pyiqa's NIMA for this variant, with untrained weights (load or save them next)."""
    from pyiqa.archs.nima_arch import NIMA

    with backbone_without_download():
        return NIMA(**nima_options(spec), pretrained=False)


def load_nima_weights(net: torch.nn.Module, path: Path) -> None:
    """Load a pyiqa NIMA file strictly (as pyiqa's loader does, but without unpickling code).
    pyiqa's released files are in torch's legacy format, which cannot be memory-mapped; files
    saved by a recent torch are zip archives, mapped rather than read."""
    import torch

    mmap = zipfile.is_zipfile(path)
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    state = state.get("params", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net.load_state_dict(state, strict=True)


def uint8_forward(net: torch.nn.Module) -> torch.nn.Module:
    """pyiqa NIMA's eval forward (at 299 px: normalise, backbone, pool, head, distribution
    mean) on the runner's own input, N x 299 x 299 x 3 uint8 RGB: the graph exported to
    OpenVINO (`runners.serving.openvino_ir`)."""
    import torch
    from pyiqa.archs.arch_util import dist_to_mos

    class Uint8Nima(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.permute(0, 3, 1, 2).float() / 255.0
            x = (x - net.default_mean) / net.default_std
            pooled = net.global_pool(net.base_model(x)[-1])
            return dist_to_mos(net.classifier(pooled)).reshape(-1)

    return Uint8Nima()


def technical_score(raw: np.ndarray) -> np.ndarray:
    """KonIQ NIMA's ~0-1 output on the reported 1-10 scale: 1 + 9 * clip(raw, 0, 1)."""
    return (1.0 + 9.0 * np.clip(raw, 0.0, 1.0)).astype(np.float32)


def aesthetic_score(raw: np.ndarray) -> np.ndarray:
    """AVA NIMA's output is already the 1-10 mean of its score distribution."""
    return raw.astype(np.float32)


def fold_batchnorm(net: torch.nn.Module) -> int:
    """Fold every eval-mode BatchNorm of timm's conv-norm-act blocks into its convolution
    (conv' = conv * gamma / sqrt(var + eps), bias' = beta - mean * gamma / sqrt(var + eps)),
    keeping the activation. Exact up to fp32 rounding, and one pass over memory fewer per
    layer. Returns the number of blocks folded."""
    import torch
    from timm.layers import BatchNormAct2d

    folded = 0
    with torch.no_grad():
        for block in net.modules():
            conv, bn = getattr(block, "conv", None), getattr(block, "bn", None)
            if not isinstance(conv, torch.nn.Conv2d) or not isinstance(bn, BatchNormAct2d):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
            shift = bn.bias - bn.running_mean * scale
            conv.bias = torch.nn.Parameter(
                shift if conv.bias is None else conv.bias * scale + shift, requires_grad=False
            )
            block.bn = torch.nn.Sequential(bn.drop, bn.act)
            folded += 1
    return folded


class _Nima(ModelRunner):
    input_size = NIMA_SIZE

    def _load(self, provenance: Provenance) -> None:
        self.precision = image_precision(provenance.path, device_precision())
        self._compiled = compile_ir(provenance.path, self.precision, self.config.num_threads)
        if self._compiled is not None:
            self.engine = f"openvino-{self.precision}"
            self._raw(np.zeros((1, NIMA_SIZE, NIMA_SIZE, 3), np.uint8))  # warm-up
            return
        self.engine = engine_name(self.precision)
        skip_unused_gpu_compiler()  # before torch: see runners.serving.memory
        import torch

        self._device = torch_device()

        set_threads(self.config.num_threads)
        self._torch = torch
        net = build_nima(self.spec)
        load_nima_weights(net, provenance.path / self.spec.weights_file)
        self._net = net.eval()
        if self.precision == "bf16":
            # The backbone (all of the arithmetic) in bf16, channels-last for oneDNN, with its
            # BatchNorms folded first in fp32; input normalisation, the pooled head, softmax
            # and the distribution mean stay fp32, where bf16 would cost accuracy for nothing.
            fold_batchnorm(self._net.base_model)
            self._net.base_model.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
        self._net.to(self._device)
        self._raw(np.zeros((1, NIMA_SIZE, NIMA_SIZE, 3), np.uint8))  # warm-up

    def _raw(self, images: np.ndarray) -> np.ndarray:
        """pyiqa NIMA's own output: KonIQ ~0-1, or AVA's 10-bin mean 1-10."""
        if self._compiled is not None:
            chunks = range(0, len(images), FORWARD_CHUNK)
            raw = [self._compiled(images[i : i + FORWARD_CHUNK])[0] for i in chunks]
            return np.concatenate(raw).reshape(-1).astype(np.float32)
        torch = self._torch
        # fp32 is pyiqa's own forward (eval: resize/crop are identities at 299, then normalise)
        forward = self._net if self.precision == "fp32" else self._forward_bf16
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(images), FORWARD_CHUNK):
                chunk = images[start : start + FORWARD_CHUNK]
                x = torch.from_numpy(chunk).to(self._device).permute(0, 3, 1, 2)
                outputs.append(forward(x.float().div_(255.0)).reshape(-1).float())
        return torch.cat(outputs).cpu().numpy().astype(np.float32, copy=False)

    def _forward_bf16(self, x: torch.Tensor) -> torch.Tensor:
        """`pyiqa NIMA.forward` with the backbone in bf16 (see `_load`)."""
        from pyiqa.archs.arch_util import dist_to_mos

        torch = self._torch
        net = self._net
        x = net.preprocess(x).to(dtype=torch.bfloat16, memory_format=torch.channels_last)
        pooled = net.global_pool(net.base_model(x)[-1]).float()
        return dist_to_mos(net.classifier(pooled))

    def _scores(self, images: np.ndarray) -> np.ndarray:
        self._require_loaded()
        check_images(images, NIMA_SIZE)
        scores = self._to_scale(self._raw(images))
        trim_after_batch()
        return scores

    _to_scale: ClassVar[Callable[[np.ndarray], np.ndarray]]  # raw output -> reported 1-10


_TECHNICAL_CONFIG = runner_config(NIMA_TECHNICAL)
_AESTHETIC_CONFIG = runner_config(NIMA_AESTHETIC)


@bentoml.service(**service_options(_TECHNICAL_CONFIG))
class NimaTechnical(_Nima):
    """Technical quality: KonIQ-10k-trained NIMA (pyiqa `nima-koniq`), reported on 1-10."""

    spec = NIMA_TECHNICAL
    _to_scale = staticmethod(technical_score)

    @bentoml.api(
        batchable=True,
        max_batch_size=_TECHNICAL_CONFIG.max_batch_size,
        max_latency_ms=_TECHNICAL_CONFIG.max_latency_ms,
    )
    def score(self, images: Uint8Array) -> Float32Array:
        """N x 299 x 299 x 3 uint8 RGB (from `nima_input`) -> N float32 on 1-10."""
        return self._scores(images)


@bentoml.service(**service_options(_AESTHETIC_CONFIG))
class NimaAesthetic(_Nima):
    """Aesthetics: AVA-trained NIMA (pyiqa `nima`), mean of its 10-bin distribution, 1-10."""

    spec = NIMA_AESTHETIC
    _to_scale = staticmethod(aesthetic_score)

    @bentoml.api(
        batchable=True,
        max_batch_size=_AESTHETIC_CONFIG.max_batch_size,
        max_latency_ms=_AESTHETIC_CONFIG.max_latency_ms,
    )
    def score(self, images: Uint8Array) -> Float32Array:
        """N x 299 x 299 x 3 uint8 RGB (from `nima_input`) -> N float32 on 1-10."""
        return self._scores(images)
