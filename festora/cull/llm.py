"""Optional: a vision LLM compares the finalists of each group of several frames.

One multi-image call per group through the same LiteLLM path as /v1/analyze/llm
(`festora.critique.ask_for_json`: provider routing, repair round, error mapping): images are
ingested here with the same SSRF-safe fetch, downsized and sent inline. The LLM's pick becomes
the group's best (`keep`, reason `llm_pick` with the LLM's reason) unless it has a hard fault;
the pixel ranking's best becomes `maybe`. Any failure leaves the pixel ranking as it is and
adds a warning: the LLM never fails a cull.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import BaseModel, Field

from festora.config import Settings
from festora.critique import (
    LLM_IMAGE_MAX_SIDE,
    UnusableReply,
    ask_for_json,
    jpeg_data_url,
    parse_reply,
)
from festora.critique_prompt import LANGUAGE_NAMES, prompt_text
from festora.cull.schemas import CulledImage, CullGroup, CullResponse, Reason
from festora.cull.verdicts import HARD_FAULTS, not_best
from festora.errors import ApiError
from festora.image_workers import in_image_worker
from festora.images import decode_image
from festora.ingest import read_image_bytes
from festora.schemas import ImageInput

logger = logging.getLogger(__name__)

FINALISTS = 3
_CONCURRENT_GROUPS = 4
_MAX_TOKENS = 300

_PROMPT = (
    "You are a professional photo editor culling an event shoot. The {count} photos below "
    "are frames of the same moment. Pick the one frame to keep for the client's gallery: the "
    "sharpest where it matters, everyone's eyes open, the best expressions, exposure and "
    "composition. Reply with one JSON object and nothing else: "
    '{{"best": the number of the chosen photo (1 to {count}), "reason": one sentence in '
    "{language} saying why}}."
)


class LlmComparison(BaseModel):
    best: int = Field(ge=1)
    reason: str = Field(min_length=1, max_length=500)


async def add_llm_picks(
    response: CullResponse, sources: dict[str, ImageInput], model: str, settings: Settings
) -> None:
    """Compare the finalists of every group of several frames (at most CULL_LLM_MAX_GROUPS,
    in group order) and apply the picks to `response` in place."""
    images = {image.image_id: image for image in response.images}
    candidates = [g for g in response.groups if len(_finalists(g, images)) > 1]
    if len(candidates) > settings.cull_llm_max_groups:
        response.warnings.append(
            f"LLM comparison limited to the first {settings.cull_llm_max_groups} of "
            f"{len(candidates)} groups (CULL_LLM_MAX_GROUPS)"
        )
    limit = asyncio.Semaphore(_CONCURRENT_GROUPS)

    async def compare(group: CullGroup) -> None:
        async with limit:
            try:
                await _compare_group(group, images, sources, model, settings)
            except ApiError as exc:
                response.warnings.append(
                    f"LLM comparison of group {group.group_id} failed ({exc.code}): "
                    f"{exc.message}; the pixel ranking stands"
                )
            except Exception:
                logger.exception("LLM comparison of group %d failed", group.group_id)
                response.warnings.append(
                    f"LLM comparison of group {group.group_id} failed (internal error); "
                    "the pixel ranking stands"
                )

    await asyncio.gather(*(compare(g) for g in candidates[: settings.cull_llm_max_groups]))


def _finalists(group: CullGroup, images: dict[str, CulledImage]) -> list[str]:
    """The best frames of a group that could be kept: no duplicates, no hard faults."""
    eligible = [
        i for i in group.image_ids if not any(r.code in HARD_FAULTS for r in images[i].reasons)
    ]
    return eligible[:FINALISTS]


async def _compare_group(
    group: CullGroup,
    images: dict[str, CulledImage],
    sources: dict[str, ImageInput],
    model: str,
    settings: Settings,
) -> None:
    finalists = _finalists(group, images)
    unsourced = [i for i in finalists if i not in sources]
    if unsourced:
        raise ApiError(
            f"no image to show for {', '.join(unsourced)} (send 'images', or analyses "
            "with 'source_url')",
            code="llm_no_image",
        )
    urls = await asyncio.gather(*(_inline(sources[i], settings) for i in finalists))
    language = LANGUAGE_NAMES.get(settings.llm_language.split("-")[0].lower(), "English")
    content: list[dict[str, object]] = [
        {"type": "text", "text": _PROMPT.format(count=len(finalists), language=language)}
    ]
    for number, url in enumerate(urls, start=1):
        content.append({"type": "text", "text": f"Photo {number}:"})
        content.append({"type": "image_url", "image_url": {"url": url}})

    def parse(reply: str) -> LlmComparison:
        comparison = parse_reply(reply, LlmComparison)
        if comparison.best > len(finalists):
            raise UnusableReply(f"best must be a photo number from 1 to {len(finalists)}")
        return comparison

    reply = await ask_for_json(
        [{"role": "user", "content": content}],
        parse,
        model=model,
        max_tokens=_MAX_TOKENS,
        settings=settings,
        repair_request=prompt_text(settings.llm_language).repair_request,
    )
    _apply_pick(group, images, finalists[reply.value.best - 1], reply.value.reason)


async def _inline(source: ImageInput, settings: Settings) -> str:
    data = await read_image_bytes(source, settings)

    def encode() -> str:
        decoded = decode_image(
            data, max_pixels=settings.max_image_pixels, min_long_side=LLM_IMAGE_MAX_SIDE
        )
        return jpeg_data_url(decoded.rgb)

    return await in_image_worker(encode)


def _apply_pick(group: CullGroup, images: dict[str, CulledImage], pick: str, reason: str) -> None:
    chosen = images[pick]
    chosen.reasons = [r for r in chosen.reasons if r.code != "not_best_in_group"]
    chosen.reasons.append(Reason(code="llm_pick", message=reason))
    previous = group.best_image_id
    if pick == previous:
        return
    chosen.verdict = "keep"
    images[previous].verdict = "maybe"
    group.image_ids = [pick] + [i for i in group.image_ids if i != pick]
    group.best_image_id = pick
    size = len(group.image_ids)
    for rank, image_id in enumerate(group.image_ids, start=1):
        image = images[image_id]
        image.rank = rank
        if image_id == pick or image.duplicate_of is not None:
            continue
        image.reasons = [r for r in image.reasons if r.code != "not_best_in_group"]
        image.reasons.append(not_best(rank, size, group.kind, pick))
