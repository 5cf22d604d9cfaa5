"""Say what to keep: a verdict and reason codes for every frame of a ranked group.

- Hard faults reject a frame wherever it ranks: `blurry` (the blur analysis says so, or the
  frame is under a quarter as sharp as the sharpest of its group) and `face_blurry` (a face
  that counts is out of focus). `analysis_failed` and `duplicate` (another copy of the same
  picture is kept) reject too.
- Soft faults are reported and weigh only through the score: `eyes_closed`, `underexposed`,
  `overexposed`, `low_quality`, `low_aesthetic`.
- The best of a group is `keep` unless it has a hard fault. Another frame is `maybe` when its
  score is within `MAYBE_MARGIN` of the best's and it has no hard fault, else `reject`; both
  carry `not_best_in_group`.
"""

from __future__ import annotations

from festora.cull.grouping import Group
from festora.cull.schemas import CulledImage, Reason, Verdict
from festora.cull.signals import Frame

MAYBE_MARGIN = 0.15
# Relative sharpness (see ranking) at or below which a frame counts as blurred within its
# group: a quarter of the sharpest sibling's Laplacian variance.
RELATIVE_BLUR = 0.5
HARD_FAULTS = frozenset({"blurry", "face_blurry", "duplicate", "analysis_failed"})


def judge(
    group: Group,
    frames: list[Frame],
    order: list[int],
    scores: list[float],
    relative_sharpness: list[float | None],
    group_id: int,
) -> list[CulledImage]:
    """CulledImage for each frame of `group` (`frames`, `scores` and `relative_sharpness` are
    in group member order; `order` is best first)."""
    rank_of = {position: r for r, position in enumerate(order, start=1)}
    kept_copy = _duplicate_representatives(group, frames, rank_of)
    best = order[0]
    sharpest = max((f.focus for f in frames if f.focus is not None), default=None)
    images = []
    for position, frame in enumerate(frames):
        reasons = _faults(frame, relative_sharpness[position], sharpest)
        duplicate_of = kept_copy.get(position)
        if duplicate_of is not None:
            reasons.insert(
                0, Reason(code="duplicate", message=f"the same picture as {duplicate_of}")
            )
        elif position != best:
            reasons.append(
                not_best(rank_of[position], len(frames), group.kind, frames[best].image_id)
            )
        hard = any(r.code in HARD_FAULTS for r in reasons)
        verdict: Verdict
        if hard:
            verdict = "reject"
        elif position == best:
            verdict = "keep"
        else:
            verdict = "maybe" if scores[position] >= scores[best] - MAYBE_MARGIN else "reject"
        images.append(
            CulledImage(
                image_id=frame.image_id,
                group_id=group_id,
                rank=rank_of[position],
                score=scores[position],
                verdict=verdict,
                reasons=reasons,
                duplicate_of=duplicate_of,
            )
        )
    return images


def not_best(rank: int, size: int, kind: str, best_id: str) -> Reason:
    return Reason(
        code="not_best_in_group",
        message=f"rank {rank} of {size} in its {kind} group; the best is {best_id}",
    )


def failed(frame: Frame, group_id: int) -> CulledImage:
    return CulledImage(
        image_id=frame.image_id,
        group_id=group_id,
        rank=1,
        score=0.0,
        verdict="reject",
        reasons=[Reason(code="analysis_failed", message=frame.error or "the analysis failed")],
    )


def _duplicate_representatives(
    group: Group, frames: list[Frame], rank_of: dict[int, int]
) -> dict[int, str]:
    """Each duplicate that is not the best-ranked copy of its set -> the kept copy's id."""
    member_index = {member: i for i, member in enumerate(group.members)}
    copies: dict[int, str] = {}
    for duplicate_set in group.duplicate_sets:
        positions = sorted((member_index[m] for m in duplicate_set), key=rank_of.__getitem__)
        for position in positions[1:]:
            copies[position] = frames[positions[0]].image_id
    return copies


def _faults(frame: Frame, relative: float | None, sharpest: float | None) -> list[Reason]:
    reasons = []
    if frame.is_blurry:
        reasons.append(
            Reason(code="blurry", message=f"blurred (Laplacian variance {frame.sharpness:.1f})")
        )
    elif relative is not None and relative <= RELATIVE_BLUR and frame.focus and sharpest:
        reasons.append(
            Reason(
                code="blurry",
                message=f"{sharpest / frame.focus:.1f}x less sharp than the sharpest "
                "frame of its group",
            )
        )
    if frame.face_blurry:
        reasons.append(Reason(code="face_blurry", message="a face is out of focus"))
    if frame.eyes_closed:
        reasons.append(Reason(code="eyes_closed", message="closed eyes on a face"))
    if frame.exposure_verdict in ("underexposed", "overexposed"):
        reasons.append(Reason(code=frame.exposure_verdict, message=frame.exposure_verdict))  # type: ignore[arg-type]
    if frame.low_quality:
        reasons.append(Reason(code="low_quality", message="low technical quality (BRISQUE/NIMA)"))
    if frame.low_aesthetic:
        reasons.append(Reason(code="low_aesthetic", message="low NIMA aesthetic score"))
    return reasons
