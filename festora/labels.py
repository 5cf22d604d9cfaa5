"""Verdict labels from scores, with the thresholds of the v1 contract (API.md)."""

from __future__ import annotations

from festora.schemas import Label


def quality_label(brisque_score: float, nima_technical_score: float) -> Label:
    if brisque_score < 25 and nima_technical_score >= 6.0:
        return "high"
    if brisque_score < 50 and nima_technical_score >= 4.5:
        return "medium"
    return "low"


def aesthetic_label(nima_aesthetic_score: float) -> Label:
    if nima_aesthetic_score >= 6.5:
        return "high"
    if nima_aesthetic_score >= 5.0:
        return "medium"
    return "low"
