"""The API side of the CLIP text runner: what the text routes (embed, search, tags) share.

It checks the runner is loaded (503 model_not_ready otherwise), asks it once for the model's
dimensions, context length and logit scale, and turns its per-text answers into one matrix
and the list of texts the tokenizer had to cut to CLIP's context (77 tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from festora.health import RunnerHealth

RUNNER = "clip_text"  # its /health name


@dataclass(frozen=True)
class TextModel:
    dimensions: int
    context_length: int  # tokens, start and end tokens included
    logit_scale: float  # what zero-shot tags multiply cosine similarities by

    def truncation_warnings(self, field: str, truncated: list[int]) -> list[str]:
        """One warning per text the tokenizer cut to the context length."""
        return [
            f"{field}[{i}] is longer than the text model's {self.context_length} tokens: only "
            "its beginning was embedded"
            for i in truncated
        ]


@dataclass(frozen=True)
class TextVectors:
    vectors: np.ndarray  # (n, dimensions) float32, unit rows
    truncated: list[int]  # indices of the texts cut to the context length


class TextEmbedder:
    def __init__(self, runner: Callable[[], Any], health: RunnerHealth) -> None:
        """`runner` returns the API service's client to `runners.clip_text.CLIPTextEncoder`
        (resolved lazily: BentoML wires a service's dependencies after its `__init__`)."""
        self._runner = runner
        self._health = health
        self._model: TextModel | None = None

    async def model(self) -> TextModel:
        """The loaded text model's figures; ModelNotReady (503) while it is not loaded."""
        await self._health.require([RUNNER])
        if self._model is None:
            described = await self._health.call(RUNNER, self._runner().to_async.describe)
            self._model = TextModel(**described)
        return self._model

    async def embed(self, texts: list[str]) -> TextVectors:
        encoded = await self._health.call(RUNNER, lambda: self._runner().to_async.encode(texts))
        return TextVectors(
            vectors=np.asarray([e["vector"] for e in encoded], dtype=np.float32),
            truncated=[i for i, e in enumerate(encoded) if e["truncated"]],
        )
