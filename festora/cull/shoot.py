"""Cull a shoot: group it, rank each group, and say what to keep and why.

`cull` is a plain function over analyses (as /v1/analyze/batch returns them), so the route,
jobs and the CLI all cull the same way. It reads only what the analyses carry; nothing is
fetched or decoded here.
"""

from __future__ import annotations

import math
import time
from collections import Counter

from festora.cull.grouping import Group, group_frames
from festora.cull.ranking import rank
from festora.cull.schemas import CulledImage, CullGroup, CullOptions, CullResponse
from festora.cull.signals import DEFAULT_WEIGHTS, SIGNAL_SOURCES, Frame, frame_of
from festora.cull.verdicts import failed, judge
from festora.errors import ApiError
from festora.schemas import ImageAnalysisResult

_NAMED = 5  # ids named in an error message


class CullError(ApiError):
    status_code = 422
    code = "cull_error"


def cull(analyses: list[ImageAnalysisResult], options: CullOptions | None = None) -> CullResponse:
    """Raises CullError for ids missing or repeated, analyses without a fingerprint, or
    without a signal that a requested weight needs."""
    started = time.perf_counter()
    options = options or CullOptions()
    check_ids([a.image_id for a in analyses])
    weights, warnings = resolve_weights(analyses, options.weights)
    frames = [frame_of(i, a) for i, a in enumerate(analyses)]
    analysed = [f for f in frames if not f.failed]
    unhashed = [f.image_id for f in analysed if f.phash is None]
    if unhashed:
        raise CullError(
            f"{len(unhashed)} analyses have no 'fingerprint' (nothing to group by): "
            f"{_names(unhashed)}; analyse with run_fingerprint=true",
            detail={"missing": "fingerprint", "image_ids": unhashed[:100]},
        )

    groups = sorted(group_frames(analysed, options), key=lambda g: _group_key(g, analysed))
    results: list[CulledImage | None] = [None] * len(frames)
    wire_groups = []
    for group_id, group in enumerate(groups, start=1):
        members = [analysed[p] for p in group.members]
        order, scores, values = rank(members, weights)
        judged = judge(group, members, order, scores, values["sharpness"], group_id)
        for member, image in zip(members, judged, strict=True):
            results[member.index] = image
        wire_groups.append(_wire_group(group_id, group.kind, [members[i] for i in order]))
    for frame in sorted((f for f in frames if f.failed), key=lambda f: f.image_id):
        group_id = len(wire_groups) + 1
        results[frame.index] = failed(frame, group_id)
        wire_groups.append(_wire_group(group_id, "single", [frame]))

    return CullResponse(
        total_images=len(frames),
        groups=wire_groups,
        images=results,  # type: ignore[arg-type]
        weights_used=weights,
        warnings=warnings,
        processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
    )


def check_ids(image_ids: list[str | None]) -> None:
    missing = [i for i, image_id in enumerate(image_ids) if not image_id]
    if missing:
        raise CullError(
            f"{len(missing)} images have no image_id (positions {missing[:_NAMED]}); "
            "every image of a cull needs a unique image_id",
            detail={"positions": missing[:100]},
        )
    repeated = sorted(i for i, n in Counter(image_ids).items() if n > 1)  # type: ignore[type-var]
    if repeated:
        raise CullError(
            f"image_id repeated: {_names(repeated)}; every image of a cull needs a unique id",
            detail={"repeated": repeated[:100]},
        )


def resolve_weights(
    analyses: list[ImageAnalysisResult], requested: dict[str, float] | None
) -> tuple[dict[str, float], list[str]]:
    """The defaults overridden by the request. A requested weight whose analysis is missing
    from any successful analysis is an error; a default one whose analysis no image has is
    left out (weight 0) with a warning."""
    requested = requested or {}
    weights = {**DEFAULT_WEIGHTS, **requested}
    if not any(w > 0 for w in weights.values()):
        raise CullError("every weight is zero: nothing to rank by", detail={"weights": weights})
    analysed = [a for a in analyses if a.error is None]
    warnings = []
    for name, source in SIGNAL_SOURCES.items():
        if weights[name] <= 0:
            continue
        lacking = [a.image_id for a in analysed if getattr(a, source) is None]
        if not lacking:
            continue
        if name in requested:
            raise CullError(
                f"weight {name!r} needs '{source}' in every analysis; {len(lacking)} have "
                f"none: {_names(lacking)}",
                detail={"weight": name, "missing": source, "image_ids": lacking[:100]},
            )
        if len(lacking) == len(analysed):
            weights[name] = 0.0
            warnings.append(f"signal {name!r} left out: no analysis has '{source}'")
    return weights, warnings


def _group_key(group: Group, frames: list[Frame]) -> tuple[float, str]:
    """Groups in shooting order (groups without a capture time after), ties by id."""
    members = [frames[p] for p in group.members]
    times = [f.captured for f in members if f.captured is not None]
    return (min(times) if times else math.inf, min(f.image_id for f in members))


def _wire_group(group_id: int, kind: str, best_first: list[Frame]) -> CullGroup:
    ids = [f.image_id for f in best_first]
    return CullGroup(group_id=group_id, kind=kind, image_ids=ids, best_image_id=ids[0])  # type: ignore[arg-type]


def _names(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_NAMED])
    return shown + (f" and {len(ids) - _NAMED} more" if len(ids) > _NAMED else "")
