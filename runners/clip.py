"""CLIP image embeddings (ViT-B/32 by default) for similarity search and clustering."""

from __future__ import annotations

from typing import TYPE_CHECKING

import bentoml
import numpy as np

from festora.config import get_settings
from festora.models import CLIP, Provenance, runner_config
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
from runners.serving.openvino_ir import input_size as ir_input_size

if TYPE_CHECKING:
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

_CONFIG = runner_config(CLIP)


def uint8_forward(
    model: CLIPVisionModelWithProjection, processor: CLIPImageProcessor
) -> torch.nn.Module:
    """The processor's rescale and normalisation, then the vision tower and projection, on the
    runner's own input (N x S x S x 3 uint8 RGB, resized and cropped by `clip_input`): the
    graph exported to OpenVINO (`runners.serving.openvino_ir`). Returns unnormalised embeddings."""
    import torch

    scale = float(processor.rescale_factor) if processor.do_rescale else 1.0
    mean = torch.tensor(processor.image_mean if processor.do_normalize else [0.0] * 3)
    std = torch.tensor(processor.image_std if processor.do_normalize else [1.0] * 3)

    class Uint8Clip(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.permute(0, 3, 1, 2).float() * scale
            x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
            return self.model(pixel_values=x).image_embeds

    return Uint8Clip()


@bentoml.service(**service_options(_CONFIG))
class CLIPEncoder(ModelRunner):
    """The CLIP vision tower and projection (`CLIPVisionModelWithProjection`): the same vector
    as `CLIPModel.get_image_features`, without loading the text tower."""

    spec = CLIP

    def _load(self, provenance: Provenance) -> None:
        self.model_id = str(provenance.metadata.get("model_id", ""))
        self.precision = image_precision(provenance.path, device_precision())
        self._compiled = compile_ir(provenance.path, self.precision, self.config.num_threads)
        if self._compiled is not None:
            self.engine = f"openvino-{self.precision}"
            self.input_size = ir_input_size(self._compiled)
            self.dimensions = int(self._compiled.output(0).get_partial_shape()[1].get_length())
            self._embed(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))  # warm-up
            return
        self.engine = engine_name(self.precision)
        skip_unused_gpu_compiler()  # before torch: see runners.serving.memory
        import torch
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        self._device = torch_device()
        from transformers.utils import logging as hf_logging

        set_threads(self.config.num_threads)
        self._torch = torch
        self._processor = CLIPImageProcessor.from_pretrained(provenance.path)
        self.input_size = int(self._processor.crop_size["height"])
        # bf16: weights and activations in bf16, read from the fp32 file straight into bf16
        # (no fp32 copy in memory); the embedding is normalised in fp32 (see _embed)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the unused text tower is listed as "UNEXPECTED" keys
        hf_logging.disable_progress_bar()
        try:
            model = CLIPVisionModelWithProjection.from_pretrained(provenance.path, dtype=dtype)
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
        self._model = model.eval().to(self._device)
        self.dimensions = int(model.config.projection_dim)
        self._embed(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))  # warm-up

    def _warnings(self) -> list[str]:
        wanted = get_settings().clip_model_name
        if self.provenance and self.provenance.weights == "real" and self.model_id != wanted:
            return [f"CLIP_MODEL_NAME={wanted} but the store holds {self.model_id or 'unknown'}"]
        return []

    def _embed(self, images: np.ndarray) -> np.ndarray:
        if self._compiled is not None:
            vectors = np.asarray(self._compiled(images)[0], dtype=np.float32)
            norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
            return vectors / np.maximum(norms, 1e-12)  # as torch's normalize
        torch = self._torch
        # Resize and crop were done by festora.preprocess.clip_input; this is rescale+normalise.
        pixels = self._processor(
            images=list(images), do_resize=False, do_center_crop=False, return_tensors="pt"
        )["pixel_values"]
        with torch.inference_mode():
            pixels = pixels.to(self._device, self._model.dtype)
            vectors = self._model(pixel_values=pixels).image_embeds
            vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
        return vectors.cpu().numpy().astype(np.float32, copy=False)

    @bentoml.api(
        batchable=True,
        max_batch_size=_CONFIG.max_batch_size,
        max_latency_ms=_CONFIG.max_latency_ms,
    )
    def encode(self, images: Uint8Array) -> Float32Array:
        """N x S x S x 3 uint8 RGB (from `clip_input`; S = `input_size`, 224 for ViT-B/32)
        -> N x 512 float32, L2-normalised."""
        self._require_loaded()
        check_images(images, self.input_size)
        vectors = self._embed(images)
        trim_after_batch()
        return vectors
