"""Text-to-photo search: rank caller-supplied image embeddings by cosine similarity to a query's
CLIP text embedding (both towers map into one space, so the best match scores highest)."""

from __future__ import annotations

import asyncio
import time

import anyio
import numpy as np

from festora.embeddings import image_matrix
from festora.schemas import SearchHit, SearchRequest, SearchResponse
from festora.text_embedding import TextEmbedder


async def search_images(req: SearchRequest, text: TextEmbedder, model_name: str) -> SearchResponse:
    """The request's images ranked by similarity to its query; 422 for bad embeddings."""
    started = time.perf_counter()
    model = await text.model()
    # the checks (norms of 10,000 x 512 floats) run off the event loop while the query embeds
    images, query = await asyncio.gather(
        anyio.to_thread.run_sync(lambda: image_matrix(req, model.dimensions)),
        text.embed([req.query]),
    )
    return SearchResponse(
        model=model_name,
        results=best_matches(query.vectors[0], images, req.image_ids, req.top_k),
        warnings=model.truncation_warnings("query", query.truncated),
        processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
    )


def best_matches(
    query: np.ndarray, images: np.ndarray, image_ids: list[str], top_k: int
) -> list[SearchHit]:
    """The `top_k` images most similar to the unit vector `query`, best first (ties in input
    order)."""
    scores = images @ query.astype(np.float32)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [SearchHit(image_id=image_ids[i], score=round(float(scores[i]), 6)) for i in order]
