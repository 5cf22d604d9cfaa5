"""The wire shape of POST /v1/cull (API.md "POST /v1/cull"): options, request and response."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from festora.cull.signals import DEFAULT_WEIGHTS
from festora.schemas import API_VERSION, ImageAnalysisResult, ImageInput

# Published practice for CLIP ViT-B/32 cosine similarity (random-init test weights cannot be
# calibrated, see PLATFORM.md): Immich's duplicate detection defaults to a cosine distance of
# 0.01 (similarity 0.99) and its settings call 0.1 the distance where false positives begin.
DUPLICATE_SIMILARITY = 0.99
BURST_SIMILARITY = 0.90
# pHash bits (of 64) on the packages' photos: burst variants <= 10 apart, different photos >= 24.
MAX_PHASH_DISTANCE = 16
BURST_GAP_SECONDS = 2.0

ReasonCode = Literal[
    "blurry",
    "face_blurry",
    "eyes_closed",
    "underexposed",
    "overexposed",
    "low_quality",
    "low_aesthetic",
    "duplicate",
    "not_best_in_group",
    "llm_pick",
    "analysis_failed",
]
GroupKind = Literal["duplicate", "burst", "similar", "single"]
Verdict = Literal["keep", "maybe", "reject"]


class CullOptions(BaseModel):
    """How a shoot is grouped and ranked; every field optional."""

    burst_gap_seconds: float = Field(
        BURST_GAP_SECONDS, ge=0, le=3600, description="Largest gap between frames of one burst"
    )
    duplicate_similarity: float = Field(
        DUPLICATE_SIMILARITY, ge=0, le=1, description="CLIP cosine that pixel duplicates reach"
    )
    burst_similarity: float = Field(
        BURST_SIMILARITY, ge=0, le=1, description="CLIP cosine that frames of one scene reach"
    )
    max_phash_distance: int = Field(
        MAX_PHASH_DISTANCE, ge=0, le=64, description="Largest pHash distance of similar frames"
    )
    weights: dict[str, float] | None = Field(
        None, description=f"Ranking signal weights by name (defaults: {DEFAULT_WEIGHTS})"
    )
    llm_model: str | None = Field(
        None, min_length=1, max_length=256, description="LiteLLM model id comparing finalists"
    )

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, weights: dict[str, float] | None) -> dict[str, float] | None:
        if weights is None:
            return None
        unknown = sorted(set(weights) - set(DEFAULT_WEIGHTS))
        if unknown:
            raise ValueError(f"unknown weight name(s) {unknown}; known: {sorted(DEFAULT_WEIGHTS)}")
        if any(not 0 <= w <= 100 for w in weights.values()):
            raise ValueError("weights must be between 0 and 100")
        return weights


class CullRequest(CullOptions):
    """Exactly one of `images` (analysed here first) or `analyses` (from /v1/analyze/batch)."""

    images: list[ImageInput] | None = Field(None, min_length=1)
    analyses: list[ImageAnalysisResult] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> CullRequest:
        if (self.images is None) == (self.analyses is None):
            raise ValueError("provide exactly one of 'images' or 'analyses'")
        return self


class CullGroup(BaseModel):
    group_id: int
    kind: GroupKind
    image_ids: list[str] = Field(description="Best first")
    best_image_id: str


class Reason(BaseModel):
    code: ReasonCode
    message: str


class CulledImage(BaseModel):
    image_id: str
    group_id: int
    rank: int = Field(description="1 = best in its group")
    score: float = Field(description="0-1, relative to the image's group")
    verdict: Verdict
    reasons: list[Reason]
    duplicate_of: str | None = None


class CullResponse(BaseModel):
    api_version: str = API_VERSION
    total_images: int
    groups: list[CullGroup]
    images: list[CulledImage] = Field(description="Input order")
    weights_used: dict[str, float]
    warnings: list[str] = Field(default_factory=list)
    processing_time_ms: float
