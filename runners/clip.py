"""CLIP image embeddings (ViT-B/32 by default) for similarity search and clustering."""

from __future__ import annotations

import bentoml
import numpy as np

from festora.config import get_settings
from festora.models import CLIP, Provenance, runner_config
from runners.base import (
    Float32Array,
    ModelRunner,
    Uint8Array,
    check_images,
    service_options,
    set_threads,
)
from runners.memory import skip_unused_gpu_compiler, trim_after_batch
from runners.precision import torch_precision

_CONFIG = runner_config(CLIP)


@bentoml.service(**service_options(_CONFIG))
class CLIPEncoder(ModelRunner):
    """The CLIP vision tower and projection (`CLIPVisionModelWithProjection`): the same vector
    as `CLIPModel.get_image_features`, without loading the text tower."""

    spec = CLIP

    def _load(self, provenance: Provenance) -> None:
        skip_unused_gpu_compiler()  # before torch: see runners.memory
        import torch
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection
        from transformers.utils import logging as hf_logging

        set_threads(self.config.num_threads)
        self._torch = torch
        self._processor = CLIPImageProcessor.from_pretrained(provenance.path)
        self.size = int(self._processor.crop_size["height"])
        # bf16: weights and activations in bf16, read from the fp32 file straight into bf16
        # (no fp32 copy in memory); the embedding is normalised in fp32 (see _embed)
        self.precision = torch_precision()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the unused text tower is listed as "UNEXPECTED" keys
        hf_logging.disable_progress_bar()
        try:
            model = CLIPVisionModelWithProjection.from_pretrained(provenance.path, dtype=dtype)
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
        self._model = model.eval()
        self.dimensions = int(model.config.projection_dim)
        self.model_id = str(provenance.metadata.get("model_id", ""))
        self._embed(np.zeros((1, self.size, self.size, 3), np.uint8))  # warm-up

    def _warnings(self) -> list[str]:
        wanted = get_settings().clip_model_name
        if self.provenance and self.provenance.weights == "real" and self.model_id != wanted:
            return [f"CLIP_MODEL_NAME={wanted} but the store holds {self.model_id or 'unknown'}"]
        return []

    def _embed(self, images: np.ndarray) -> np.ndarray:
        torch = self._torch
        # Resize and crop were done by festora.preprocess.clip_input; this is rescale+normalise.
        pixels = self._processor(
            images=list(images), do_resize=False, do_center_crop=False, return_tensors="pt"
        )["pixel_values"]
        with torch.inference_mode():
            vectors = self._model(pixel_values=pixels.to(self._model.dtype)).image_embeds
            vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
        return vectors.numpy().astype(np.float32, copy=False)

    @bentoml.api(
        batchable=True,
        max_batch_size=_CONFIG.max_batch_size,
        max_latency_ms=_CONFIG.max_latency_ms,
    )
    def encode(self, images: Uint8Array) -> Float32Array:
        """N x 224 x 224 x 3 uint8 RGB (from `clip_input`) -> N x 512 float32, L2-normalised."""
        self._require_loaded()
        check_images(images, self.size)
        vectors = self._embed(images)
        trim_after_batch()
        return vectors
