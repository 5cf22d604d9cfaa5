"""Zero-shot tags: CLIP's own classifier over labels the caller names.

Each label is written into a prompt (by default "a photo of {label}", the template CLIP's
authors used for ImageNet) and embedded by the text tower; an image's probabilities are the
softmax over labels of its cosine similarity to each prompt times the checkpoint's logit scale:
exactly `CLIPModel(...).logits_per_image.softmax(-1)`. They are relative to the labels sent.
"""

from __future__ import annotations

import asyncio
import time

import anyio
import numpy as np

from festora.embeddings import image_matrix
from festora.schemas import LABEL_PLACEHOLDER, ImageTags, Tag, TagsRequest, TagsResponse
from festora.text_embedding import TextEmbedder


async def tag_images(req: TagsRequest, text: TextEmbedder, model_name: str) -> TagsResponse:
    """Each image's most probable labels; 422 for bad embeddings."""
    started = time.perf_counter()
    model = await text.model()
    images, labels = await asyncio.gather(
        anyio.to_thread.run_sync(lambda: image_matrix(req, model.dimensions)),
        text.embed(prompts(req.labels, req.prompt_template)),
    )
    probs = probabilities(images, labels.vectors, model.logit_scale)
    return TagsResponse(
        model=model_name,
        prompt_template=req.prompt_template,
        logit_scale=model.logit_scale,
        results=top_tags(probs, req.labels, req.image_ids, req.top_k),
        warnings=model.truncation_warnings("labels", labels.truncated),
        processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
    )


def prompts(labels: list[str], template: str) -> list[str]:
    """One prompt per label (plain replacement, so other braces in a template stay as they
    are)."""
    return [template.replace(LABEL_PLACEHOLDER, label) for label in labels]


def probabilities(images: np.ndarray, label_vectors: np.ndarray, logit_scale: float) -> np.ndarray:
    """(n images, n labels) softmax of `logit_scale` times the cosine similarities of unit
    image vectors and the labels' unit prompt vectors."""
    logits = logit_scale * (images.astype(np.float64) @ label_vectors.astype(np.float64).T)
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def top_tags(
    probs: np.ndarray, labels: list[str], image_ids: list[str], top_k: int
) -> list[ImageTags]:
    """Each image's `top_k` labels, most probable first (ties in label order)."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    return [
        ImageTags(
            image_id=image_id,
            tags=[Tag(label=labels[j], probability=round(float(row[j]), 6)) for j in best],
        )
        for image_id, row, best in zip(image_ids, probs, order, strict=True)
    ]
