"""The v1 wire contract (see API.md): request and response bodies.

Field names, types and defaults match the original FastAPI service; fields may be added,
never renamed, retyped or removed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from festora.embeddings import Float32Base64, FloatRows

API_VERSION = "1.0"

Label = Literal["low", "medium", "high"]


def exactly_one_of(*fields: str) -> dict[str, Any]:
    """JSON Schema for "exactly one of these fields is set" (a null counts as unset), which
    client generators and Schemathesis understand; the model validator enforces it."""
    return {
        "oneOf": [
            {"required": [field], "properties": {field: {"not": {"type": "null"}}}}
            for field in fields
        ]
    }


class ImageInput(BaseModel):
    """Exactly one of `url` (http/https) or `data` (standard base64 of the file bytes)."""

    model_config = ConfigDict(json_schema_extra=exactly_one_of("url", "data"))

    url: str | None = Field(None, max_length=4096)
    data: str | None = None
    image_id: str | None = Field(None, max_length=128)

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ImageInput:
        if (self.url is None) == (self.data is None):
            raise ValueError("provide exactly one of 'url' or 'data'")
        return self


class AnalysisFlags(BaseModel):
    run_blur: bool = True
    run_quality: bool = True
    run_emotion: bool = True
    run_embedding: bool = True
    run_exposure: bool = True
    run_fingerprint: bool = True
    run_metadata: bool = True


class AnalyzeRequest(AnalysisFlags):
    image: ImageInput


class BatchAnalyzeRequest(AnalysisFlags):
    # The upper bound is MAX_BATCH_SIZE, checked by the service (422 batch_too_large).
    images: list[ImageInput] = Field(..., min_length=1)


class BlurResult(BaseModel):
    laplacian_variance: float
    is_blurry: bool
    blur_threshold: float
    analysis_size_px: int = Field(description="Long side, in pixels, the variance is measured at")


class QualityResult(BaseModel):
    brisque_score: float = Field(description="BRISQUE, lower is better (about 0-100)")
    nima_technical_score: float = Field(description="KonIQ-trained NIMA on a 1-10 scale")
    overall_quality: Label


class AestheticResult(BaseModel):
    nima_aesthetic_score: float = Field(description="AVA-trained NIMA: mean of its 10 bins, 1-10")
    aesthetic_label: Label


class FaceRegion(BaseModel):
    x: int
    y: int
    w: int
    h: int


class EmotionScores(BaseModel):
    angry: float
    disgust: float
    fear: float
    happy: float
    sad: float
    surprise: float
    neutral: float


Point = list[float]  # [x, y] in original-image pixels


class FaceLandmarks(BaseModel):
    """Named by the subject, as DeepFace names them: the left eye is on the image's right."""

    left_eye: Point
    right_eye: Point
    nose: Point
    mouth_left: Point
    mouth_right: Point


class FaceEyes(BaseModel):
    left_openness: float | None = Field(description="0 shut - 1 wide open; null: not judged")
    right_openness: float | None
    open: bool | None = Field(description="null when it cannot be judged: profile, too small")


class HeadPose(BaseModel):
    yaw: float = Field(description="degrees; > 0: the face turns towards the image's right")
    pitch: float = Field(description="degrees; > 0: the face looks up")
    roll: float = Field(description="degrees; > 0: the head leans clockwise in the image")


class FaceEmotion(BaseModel):
    dominant_emotion: str
    scores: EmotionScores
    face_confidence: float
    region: FaceRegion
    landmarks: FaceLandmarks | None = None
    eyes: FaceEyes | None = None
    sharpness: float | None = Field(
        None, description="Laplacian variance of the face at a 48 px face size; null if smaller"
    )
    is_blurry: bool | None = None
    pose: HeadPose | None = None
    size_fraction: float | None = Field(None, description="face height / image height")


class EmotionResult(BaseModel):
    faces_detected: int
    faces: list[FaceEmotion]
    detector: str | None = Field(None, description='e.g. "blazeface-full", "opencv-haar"')


class EmbeddingResult(BaseModel):
    model: str
    dimensions: int
    vector: list[float]


class ExposureResult(BaseModel):
    mean_luminance: float = Field(description="Mean luma (Rec. 601), 0 = black, 1 = white")
    highlights_clipped: float = Field(description="Fraction of pixels with luma >= 250 of 255")
    shadows_clipped: float = Field(description="Fraction of pixels with luma <= 5 of 255")
    verdict: Literal["underexposed", "ok", "overexposed"]
    analysis_size_px: int = Field(description="Long side, in pixels, the fractions are measured at")


class FingerprintResult(BaseModel):
    sha256: str = Field(description="Hex SHA-256 of the file bytes (exact duplicates)")
    phash: str = Field(description="64-bit DCT perceptual hash, 16 hex chars (similar frames)")


class MetadataResult(BaseModel):
    """From the file's EXIF; each field null when absent or unreadable. GPS is never returned."""

    captured_at: str | None = Field(
        None, description="ISO 8601 from DateTimeOriginal, SubSecTimeOriginal, OffsetTimeOriginal"
    )
    camera_make: str | None = None
    camera_model: str | None = None
    camera_serial: str | None = None
    lens_model: str | None = None
    focal_length_mm: float | None = None
    f_number: float | None = None
    exposure_time_s: float | None = None
    iso: int | None = None
    orientation: int | None = Field(None, description="EXIF orientation 1-8 (already applied)")


class ImageAnalysisResult(BaseModel):
    image_id: str | None = None
    source_url: str | None = None
    width_px: int | None = None
    height_px: int | None = None
    blur: BlurResult | None = None
    quality: QualityResult | None = None
    aesthetic: AestheticResult | None = None
    emotion: EmotionResult | None = None
    embedding: EmbeddingResult | None = None
    exposure: ExposureResult | None = None
    fingerprint: FingerprintResult | None = None
    metadata: MetadataResult | None = None
    processing_time_ms: float = 0.0
    error: str | None = None
    error_code: str | None = Field(None, description="Machine-readable code of `error`")
    warnings: list[str] = Field(default_factory=list, description="Analyses left out, and why")


class AnalyzeResponse(BaseModel):
    api_version: str = API_VERSION
    result: ImageAnalysisResult


class BatchAnalyzeResponse(BaseModel):
    api_version: str = API_VERSION
    total: int
    succeeded: int
    failed: int
    results: list[ImageAnalysisResult]
    total_processing_time_ms: float


class ClusterRequest(BaseModel):
    embeddings: list[list[float]] = Field(..., min_length=2)
    image_ids: list[str]
    eps: float | None = Field(None, ge=0.01, le=2.0)
    min_samples: int | None = Field(None, ge=1, le=50)


class ClusterAssignment(BaseModel):
    image_id: str
    cluster_id: int
    is_noise: bool


class Cluster(BaseModel):
    cluster_id: int
    size: int
    image_ids: list[str]


class ClusterResponse(BaseModel):
    api_version: str = API_VERSION
    algorithm: str = "DBSCAN"
    eps_used: float
    min_samples_used: int
    total_images: int
    num_clusters: int
    num_noise: int
    assignments: list[ClusterAssignment]
    clusters: list[Cluster]
    processing_time_ms: float


# ---- text (CLIP text tower) ------------------------------------------------------------------

MAX_TEXTS = 64
MAX_LABELS = 200
# Far beyond CLIP's 77 tokens (a 77-token caption is rarely 500 characters): longer texts are
# truncated with a warning, and this only bounds the tokenizer's work per text.
MAX_TEXT_CHARS = 10_000
DEFAULT_PROMPT_TEMPLATE = "a photo of {label}"
LABEL_PLACEHOLDER = "{label}"


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or only whitespace")
    return text


Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS), AfterValidator(_not_blank)]


class EmbedTextRequest(BaseModel):
    texts: list[Text] = Field(..., min_length=1, max_length=MAX_TEXTS)


class EmbedTextResponse(BaseModel):
    api_version: str = API_VERSION
    model: str
    dimensions: int
    vectors: list[list[float]] = Field(description="L2-normalised, in the image embeddings' space")
    warnings: list[str] = Field(default_factory=list, description="Texts truncated to fit CLIP")


class EmbeddingsInput(BaseModel):
    """Image embeddings as `/v1/analyze` returned them, in exactly one of two forms."""

    model_config = ConfigDict(json_schema_extra=exactly_one_of("embeddings", "embeddings_base64"))

    embeddings: FloatRows | None = Field(
        None, description="One vector per image, as JSON numbers (the v1 form)"
    )
    embeddings_base64: Float32Base64 | None = Field(
        None,
        description="The same vectors packed: standard base64 of little-endian float32 values, "
        "one vector after another (len(image_ids) x the model's dimensions x 4 bytes); about a "
        "quarter of the JSON form's size and far quicker to read. Send this or `embeddings`.",
    )
    image_ids: list[str] = Field(description="One per embedding, in the same order")

    @model_validator(mode="after")
    def _exactly_one_form(self) -> EmbeddingsInput:
        if (self.embeddings is None) == (self.embeddings_base64 is None):
            raise ValueError("send exactly one of embeddings or embeddings_base64")
        return self


class SearchRequest(EmbeddingsInput):
    query: Text
    top_k: int = Field(10, ge=1, description="At most this many results (all when fewer)")


class SearchHit(BaseModel):
    image_id: str
    score: float = Field(description="Cosine similarity between the query and the image")


class SearchResponse(BaseModel):
    api_version: str = API_VERSION
    model: str
    results: list[SearchHit] = Field(description="Best first")
    warnings: list[str] = Field(default_factory=list)
    processing_time_ms: float


class TagsRequest(EmbeddingsInput):
    labels: list[Annotated[Text, Field(max_length=200)]] = Field(
        ..., min_length=2, max_length=MAX_LABELS
    )
    top_k: int = Field(5, ge=1, le=MAX_LABELS)
    prompt_template: str = Field(
        DEFAULT_PROMPT_TEMPLATE,
        max_length=500,
        description="Each label is put in place of {label} before it is embedded",
    )

    @field_validator("labels")
    @classmethod
    def _unique(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be unique")
        return labels

    @field_validator("prompt_template")
    @classmethod
    def _has_placeholder(cls, template: str) -> str:
        if LABEL_PLACEHOLDER not in template:
            raise ValueError(f"must contain {LABEL_PLACEHOLDER}")
        return template


class Tag(BaseModel):
    label: str
    probability: float = Field(description="CLIP zero-shot probability over the labels sent")


class ImageTags(BaseModel):
    image_id: str
    tags: list[Tag] = Field(description="Most probable first")


class TagsResponse(BaseModel):
    api_version: str = API_VERSION
    model: str
    prompt_template: str
    logit_scale: float
    results: list[ImageTags] = Field(description="Input order")
    warnings: list[str] = Field(default_factory=list)
    processing_time_ms: float


class ModelStatus(BaseModel):
    name: str
    loaded: bool
    load_time_ms: float | None = None
    error: str | None = None
    tag: str | None = None
    weights: Literal["real", "random-init"] | None = None
    engine: str | None = None  # e.g. "openvino-bf16", "torch-fp32"
    # Side in pixels of the square images the model takes (CLIP: its processor's crop size)
    input_size: int | None = None
    warning: str | None = None


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "unhealthy"]
    version: str
    environment: str
    uptime_seconds: float
    models: list[ModelStatus]
