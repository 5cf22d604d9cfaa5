"""Rank the frames of one group against each other.

Each signal becomes a 0-1 value relative to the group, then the weighted mean of the signals
the group has is the frame's score:
- `sharpness`, `face_sharpness`: relative to the sharpest sibling on a log scale; each halving
  of the Laplacian variance below it costs 0.25 (a quarter as sharp = 0.5, a sixteenth = 0).
  The frame's variance is divided by its squared mean luminance first (`Frame.focus`), so a
  darker frame is not taken for a softer one. A single photo is its own sharpest.
- `eyes_open`: the fraction of judged faces with open eyes.
- `exposure`: `signals.exposure_quality` (clipping and distance from mid-grey).
- `technical`, `aesthetic`: NIMA's 1-10 scores as 0-1: minor signals by default weight.
A signal no frame of the group has is left out of its mean; a frame lacking a signal its
siblings have gets the group's lowest value for it (no advantage for what was not seen).
Ties go to the larger image, then to the smaller image_id, so the order is deterministic.
"""

from __future__ import annotations

import math

from festora.cull.signals import Frame

_RELATIVE = ("sharpness", "face_sharpness")
_HALVINGS_TO_ZERO = 4
_FIELDS = {"sharpness": "focus"}


def relative_values(frames: list[Frame]) -> dict[str, list[float | None]]:
    """Each signal's 0-1 value per frame (None where the frame lacks it)."""
    values: dict[str, list[float | None]] = {}
    for name in ("sharpness", "face_sharpness", "eyes_open", "exposure", "technical", "aesthetic"):
        raw = [getattr(f, _FIELDS.get(name, name)) for f in frames]
        if name in _RELATIVE:
            best = max((v for v in raw if v is not None), default=None)
            raw = [None if v is None else _relative(v, best) for v in raw]  # type: ignore[arg-type]
        values[name] = raw
    return values


def rank(
    frames: list[Frame], weights: dict[str, float]
) -> tuple[list[int], list[float], dict[str, list[float | None]]]:
    """Positions of `frames` best first, each frame's score, and its signal values (in the
    order given)."""
    values = relative_values(frames)
    total = [0.0] * len(frames)
    weight_sum = 0.0
    for name, weight in weights.items():
        column = values.get(name)
        if weight <= 0 or column is None:
            continue
        present = [v for v in column if v is not None]
        if not present:
            continue
        floor = min(present)
        weight_sum += weight
        for i, value in enumerate(column):
            total[i] += weight * (floor if value is None else value)
    scores = [round(t / weight_sum, 4) if weight_sum else 0.0 for t in total]
    order = sorted(
        range(len(frames)),
        key=lambda i: (-scores[i], -_pixels(frames[i]), frames[i].image_id),
    )
    return order, scores, values


def _relative(value: float, best: float) -> float:
    if best <= 0:
        return 1.0
    if value <= 0:
        return 0.0
    return max(0.0, 1.0 + math.log2(value / best) / _HALVINGS_TO_ZERO)


def _pixels(frame: Frame) -> int:
    return frame.size[0] * frame.size[1] if frame.size else 0
