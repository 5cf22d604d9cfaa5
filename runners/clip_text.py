"""CLIP text embeddings from the text tower of the stored CLIP checkpoint: vectors in the same
space as `runners.clip`'s image embeddings, for text-to-photo search and zero-shot tags."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import bentoml
import numpy as np

from festora.models import (
    CLIP_TEXT,
    CLIP_TEXT_IR_FILE,
    CLIP_TOKENIZER_FILE,
    IMPORT_HINT,
    Provenance,
    runner_config,
)
from runners.serving.base import ModelRunner, service_options, set_threads
from runners.serving.memory import skip_unused_gpu_compiler, trim_after_batch
from runners.serving.openvino_ir import compile_ir
from runners.serving.precision import compute_precision

if TYPE_CHECKING:
    import torch
    from transformers import CLIPTextModelWithProjection

_CONFIG = runner_config(CLIP_TEXT)


def token_forward(model: CLIPTextModelWithProjection) -> torch.nn.Module:
    """The text tower and projection on token ids alone (N x L int64, padded with the
    end-of-text token): the graph exported to OpenVINO. It needs no attention mask: CLIP's
    attention is causal and its pooled output is read at the first end-of-text token, so the
    padding after it never reaches the vector. Returns unnormalised embeddings."""
    import torch

    class TokenClip(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids).text_embeds

    return TokenClip()


def check_texts(texts: list[str]) -> None:
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError("expected a list of strings")


@bentoml.service(**service_options(_CONFIG))
class CLIPTextEncoder(ModelRunner):
    """The CLIP text tower and projection (`CLIPTextModelWithProjection`) with the checkpoint's
    own tokenizer: the same vector as `CLIPModel.get_text_features`, without the image tower.
    It reads the `festora-clip` store entry the image runner reads, so both towers always come
    from one checkpoint; that entry also holds the logit scale zero-shot tags need."""

    spec = CLIP_TEXT

    def _load(self, provenance: Provenance) -> None:
        from tokenizers import Tokenizer

        meta = provenance.metadata
        tokenizer_file = provenance.path / CLIP_TOKENIZER_FILE
        if not tokenizer_file.is_file() or "logit_scale" not in meta:
            raise FileNotFoundError(
                f"{provenance.tag} was imported without the text tower's tokenizer and logit "
                f"scale; {IMPORT_HINT}"
            )
        self.model_id = str(meta.get("model_id", ""))
        self.logit_scale = float(meta["logit_scale"])
        self.context_length = int(meta["text_context_length"])
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core's share
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()  # padded here, with the end-of-text token
        self._tokenizer.enable_truncation(self.context_length)  # keeps start and end tokens
        self._end_of_text = self._tokenizer.encode("").ids[-1]  # "" is [start, end]
        self.precision = compute_precision()
        self._compiled = compile_ir(
            provenance.path, self.precision, self.config.num_threads, CLIP_TEXT_IR_FILE
        )
        if self._compiled is not None:
            self.engine = f"openvino-{self.precision}"
            self.dimensions = int(self._compiled.output(0).get_partial_shape()[1].get_length())
        else:
            self.engine = f"torch-{self.precision}"
            skip_unused_gpu_compiler()  # before torch: see runners.serving.memory
            import torch
            from transformers import CLIPTextModelWithProjection
            from transformers.utils import logging as hf_logging

            set_threads(self.config.num_threads)
            self._torch = torch
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
            verbosity = hf_logging.get_verbosity()
            hf_logging.set_verbosity_error()  # the unused image tower: "UNEXPECTED" keys
            hf_logging.disable_progress_bar()
            try:
                model = CLIPTextModelWithProjection.from_pretrained(provenance.path, dtype=dtype)
            finally:
                hf_logging.set_verbosity(verbosity)
                hf_logging.enable_progress_bar()
            self._model = model.eval()
            self.dimensions = int(model.config.projection_dim)
        self._embed(self._tokens(["a photo"])[0])  # warm-up

    def _tokens(self, texts: list[str]) -> tuple[np.ndarray, list[bool]]:
        """N x L token ids (L: the longest text, at most the context length), padded with the
        end-of-text token, and whether each text was cut to fit the context."""
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.full((len(texts), max(len(e.ids) for e in encodings)), self._end_of_text, np.int64)
        for row, encoding in zip(ids, encodings, strict=True):
            row[: len(encoding.ids)] = encoding.ids
        return ids, [bool(e.overflowing) for e in encodings]

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        if self._compiled is not None:
            vectors = np.asarray(self._compiled(ids)[0], dtype=np.float32)
            norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
            return vectors / np.maximum(norms, 1e-12)  # as torch's normalize
        torch = self._torch
        with torch.inference_mode():
            vectors = self._model(input_ids=torch.from_numpy(ids)).text_embeds
            vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
        return vectors.numpy().astype(np.float32, copy=False)

    @bentoml.api(
        batchable=True,
        max_batch_size=_CONFIG.max_batch_size,
        max_latency_ms=_CONFIG.max_latency_ms,
    )
    def encode(self, texts: list[str]) -> list[dict[str, Any]]:
        """Texts -> per text {"vector": [float] (L2-normalised), "truncated": bool (the text
        was longer than the context length, 77 tokens for CLIP, and was cut to it)}."""
        self._require_loaded()
        check_texts(texts)
        if not texts:
            return []
        ids, truncated = self._tokens(texts)
        vectors = self._embed(ids)
        trim_after_batch()
        return [
            {"vector": vector.tolist(), "truncated": cut}
            for vector, cut in zip(vectors, truncated, strict=True)
        ]

    # async: answered on the event loop, never queued behind a running batch
    @bentoml.api
    async def describe(self) -> dict[str, Any]:
        """What callers need besides vectors: {"dimensions", "context_length", "logit_scale"}
        (the exp of CLIP's learnt temperature, which zero-shot tags multiply cosine
        similarities by before the softmax)."""
        self._require_loaded()
        return {
            "dimensions": self.dimensions,
            "context_length": self.context_length,
            "logit_scale": self.logit_scale,
        }
