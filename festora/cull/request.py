"""A /v1/cull request end to end: check it, analyse the images it sent (or take the analyses),
cull, then let the LLM compare finalists when asked."""

from __future__ import annotations

import asyncio
import time

import anyio

from festora.analysis import ImageAnalyzer
from festora.config import Settings
from festora.critique import check_model
from festora.cull.llm import add_llm_picks
from festora.cull.schemas import CullRequest, CullResponse
from festora.cull.shoot import CullError, check_ids, cull
from festora.errors import ApiError
from festora.schemas import AnalysisFlags, ImageAnalysisResult, ImageInput

# Images sent to a cull get every analysis: each one feeds a ranking signal or the grouping.
CULL_FLAGS = AnalysisFlags()


async def cull_request(
    req: CullRequest, analyzer: ImageAnalyzer, settings: Settings
) -> CullResponse:
    """Raises CullError (422) for bad input, ValidationFailed for an unknown `llm_model`."""
    started = time.perf_counter()
    warnings: list[str] = []
    compare = req.llm_model is not None
    if req.llm_model is not None:
        try:
            await asyncio.to_thread(check_model, req.llm_model, settings)
        except ApiError as exc:
            if exc.status_code == 422:
                raise
            compare = False
            warnings.append(f"LLM comparison skipped ({exc.code}): {exc.message}")
    if req.images is not None:
        sources = _named_images(req.images, settings)
        analyses = await _analyse(sources, analyzer)
    else:
        analyses = req.analyses or []
        if len(analyses) > settings.cull_max_analyses:
            raise CullError(
                f"{len(analyses)} analyses sent; at most {settings.cull_max_analyses} per cull "
                "(CULL_MAX_ANALYSES)",
                detail={"max_analyses": settings.cull_max_analyses, "received": len(analyses)},
            )
        sources = {a.image_id: ImageInput(url=a.source_url) for a in analyses if a.source_url}  # type: ignore[misc]
    response = await anyio.to_thread.run_sync(lambda: cull(analyses, req))
    response.warnings += warnings
    if compare:
        await add_llm_picks(response, sources, req.llm_model, settings)  # type: ignore[arg-type]
    response.processing_time_ms = round((time.perf_counter() - started) * 1000, 3)
    return response


def _named_images(images: list[ImageInput], settings: Settings) -> dict[str, ImageInput]:
    """Images by id, in input order; an image without an id is named by its position."""
    if len(images) > settings.max_batch_size:
        raise CullError(
            f"{len(images)} images sent; at most {settings.max_batch_size} per cull "
            "(MAX_BATCH_SIZE); analyse larger shoots with /v1/analyze/batch and cull the analyses",
            detail={"max_images": settings.max_batch_size, "received": len(images)},
        )
    ids = image_names(images)
    check_ids(ids)
    return dict(zip(ids, images, strict=True))


def image_names(images: list[ImageInput]) -> list[str]:
    """Each image's id; an image without one is named by its position (from 1)."""
    return [image.image_id or f"image-{position}" for position, image in enumerate(images, 1)]


async def _analyse(
    sources: dict[str, ImageInput], analyzer: ImageAnalyzer
) -> list[ImageAnalysisResult]:
    results = await analyzer.analyze_all(list(sources.values()), CULL_FLAGS)
    for image_id, result in zip(sources, results, strict=True):
        result.image_id = image_id
    return results
