"""Festora Vision: the API service.

It owns HTTP (the v1 contract in API.md), validation, auth, rate limiting and image ingestion,
decodes each image once, derives every model's small input from that one decode and fans out to
the model runners (`runners/`), which batch across concurrent requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import anyio
import bentoml
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from festora import __version__, preprocess
from festora.blur import measure_blur
from festora.clustering import cluster_embeddings
from festora.config import get_settings
from festora.critique import (
    LLM_IMAGE_MAX_SIDE,
    LlmAnalyzeRequest,
    LlmAnalyzeResponse,
    critique_photo,
)
from festora.errors import ApiError, ImageTooLarge, ModelNotReady
from festora.images import DecodedImage, decode_image
from festora.ingest import read_image_bytes
from festora.labels import aesthetic_label, quality_label
from festora.logs import configure_logging
from festora.middleware.auth import ApiKeyMiddleware
from festora.middleware.body_limit import BodyLimitMiddleware
from festora.middleware.envelope import ErrorEnvelopeMiddleware
from festora.middleware.ratelimit import RateLimitMiddleware
from festora.schemas import (
    AestheticResult,
    AnalysisFlags,
    AnalyzeRequest,
    AnalyzeResponse,
    BatchAnalyzeRequest,
    BatchAnalyzeResponse,
    ClusterRequest,
    ClusterResponse,
    EmbeddingResult,
    EmotionResult,
    FaceEmotion,
    HealthResponse,
    ImageAnalysisResult,
    ImageInput,
    ModelStatus,
    QualityResult,
)
from runners.brisque import Brisque
from runners.clip import CLIPEncoder
from runners.emotion import EmotionDetector
from runners.serving.memory import trim_after_batch
from runners.nima import NimaAesthetic, NimaTechnical

logger = logging.getLogger("festora.service")
settings = get_settings()
configure_logging(settings)

STATUS_TIMEOUT_SECONDS = 3.0
# Images decoded and resized at once: one per core (more only adds decoded images in memory).
IMAGE_WORKERS = (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
UNREACHABLE = "runner unavailable"
T = TypeVar("T")

health_app = Starlette()


@bentoml.asgi_app(health_app, path="/")
@bentoml.service(
    name="festora-vision",
    workers=1,
    traffic={"timeout": 300},
    http={
        "cors": {
            "enabled": True,
            "access_control_allow_origins": list(settings.cors_allow_origins),
            "access_control_allow_methods": ["GET", "POST", "OPTIONS"],
            "access_control_allow_headers": ["Content-Type", "X-Api-Key", "Authorization"],
            "access_control_expose_headers": ["Retry-After"],
        }
    },
)
class FestoraVision:
    clip = bentoml.depends(CLIPEncoder)
    nima_technical = bentoml.depends(NimaTechnical)
    nima_aesthetic = bentoml.depends(NimaAesthetic)
    brisque = bentoml.depends(Brisque)
    emotion = bentoml.depends(EmotionDetector)

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._loaded: dict[str, ModelStatus] = {}

    # ---- model status -------------------------------------------------------------------

    def _runners(self) -> dict[str, Any]:
        return {
            "clip": self.clip,
            "nima_technical": self.nima_technical,
            "nima_aesthetic": self.nima_aesthetic,
            "brisque": self.brisque,
            "emotion": self.emotion,
        }

    async def model_statuses(self) -> dict[str, ModelStatus]:
        """Every runner's status; once a model reports loaded it is not asked again."""

        async def ask(name: str, runner: Any) -> ModelStatus:
            if name in self._loaded:
                return self._loaded[name]
            try:
                with anyio.fail_after(STATUS_TIMEOUT_SECONDS):
                    status = ModelStatus.model_validate(await runner.to_async.status())
            except Exception as exc:  # noqa: BLE001 - an unreachable runner is a status
                return ModelStatus(name=name, loaded=False, error=f"{UNREACHABLE}: {exc}")
            if status.loaded:
                self._loaded[name] = status
            return status

        names = list(self._runners())
        found = await asyncio.gather(*(ask(n, r) for n, r in self._runners().items()))
        return dict(zip(names, found, strict=True))

    async def missing_models(self, flags: AnalysisFlags) -> list[str]:
        needed = required_models(flags)
        if not needed:
            return []
        statuses = await self.model_statuses()
        return [name for name in needed if not statuses[name].loaded]

    async def health(self) -> HealthResponse:
        statuses = list((await self.model_statuses()).values())
        if not any(map(is_reachable, statuses)):
            overall = "unhealthy"
        elif all(s.loaded and s.weights == "real" for s in statuses):
            overall = "ok"
        else:
            overall = "degraded"
        return HealthResponse(
            status=overall,
            version=__version__,
            environment=settings.environment,
            uptime_seconds=round(time.monotonic() - self.started, 3),
            models=statuses,
        )

    async def __is_ready__(self) -> bool:
        statuses = await self.model_statuses()
        return all(map(is_reachable, statuses.values()))

    # ---- analysis -------------------------------------------------------------------------

    async def analyze_image(self, image: ImageInput, flags: AnalysisFlags) -> ImageAnalysisResult:
        started = time.perf_counter()
        data = await read_image_bytes(image, settings)
        result = await self.analyze_prepared(await prepare(data, flags), flags)
        result.image_id = image.image_id
        result.source_url = image.url
        result.processing_time_ms = round((time.perf_counter() - started) * 1000, 3)
        logger.info(
            "image analysed",
            extra={
                "image_id": image.image_id,
                "width_px": result.width_px,
                "height_px": result.height_px,
                "processing_time_ms": result.processing_time_ms,
            },
        )
        return result

    async def analyze_prepared(
        self, prepared: PreparedImage, flags: AnalysisFlags
    ) -> ImageAnalysisResult:
        inputs = prepared.inputs
        result = ImageAnalysisResult(width_px=prepared.width, height_px=prepared.height)
        jobs: dict[str, Any] = {}
        if flags.run_quality:
            jobs["brisque"] = self.brisque.to_async.score([inputs["brisque"]])
            jobs["nima_technical"] = self.nima_technical.to_async.score(inputs["nima"][None])
            jobs["nima_aesthetic"] = self.nima_aesthetic.to_async.score(inputs["nima"][None])
        if flags.run_emotion:
            jobs["emotion"] = self.emotion.to_async.detect([inputs["emotion"]])
        if flags.run_embedding:
            jobs["clip"] = self.clip.to_async.encode(inputs["clip"][None])
        outputs = dict(zip(jobs, await asyncio.gather(*jobs.values()), strict=True))

        if flags.run_blur:
            result.blur = inputs["blur"]
        if flags.run_quality:
            technical = float(outputs["nima_technical"][0])
            aesthetic = float(outputs["nima_aesthetic"][0])
            brisque = outputs["brisque"][0]
            if brisque is None:
                result.warnings.append(
                    "quality omitted: BRISQUE is undefined for this image (no local contrast, "
                    "or a side under 16 px at the analysis size)"
                )
            else:
                result.quality = QualityResult(
                    brisque_score=round(float(brisque), 4),
                    nima_technical_score=round(technical, 4),
                    overall_quality=quality_label(float(brisque), technical),
                )
            result.aesthetic = AestheticResult(
                nima_aesthetic_score=round(aesthetic, 4),
                aesthetic_label=aesthetic_label(aesthetic),
            )
        if flags.run_emotion:
            faces = preprocess.scale_faces(
                outputs["emotion"][0], inputs["emotion_scale"], prepared.width, prepared.height
            )
            if faces:
                result.emotion = EmotionResult(
                    faces_detected=len(faces), faces=[FaceEmotion.model_validate(f) for f in faces]
                )
        if flags.run_embedding:
            vector = np.asarray(outputs["clip"][0], dtype=np.float32)
            result.embedding = EmbeddingResult(
                model=settings.clip_model_name, dimensions=vector.size, vector=vector.tolist()
            )
        return result

    async def analyze_isolated(
        self, image: ImageInput, flags: AnalysisFlags
    ) -> ImageAnalysisResult:
        """One image of a batch: its failure becomes its `error`, never the batch's."""
        started = time.perf_counter()
        try:
            return await self.analyze_image(image, flags)
        except ApiError as exc:
            error, code = exc.message, exc.code
            logger.warning(
                "batch image rejected", extra={"image_id": image.image_id, "error": code}
            )
        except Exception:
            logger.exception("batch image failed", extra={"image_id": image.image_id})
            error, code = "internal error while analysing this image", "internal_error"
        return ImageAnalysisResult(
            image_id=image.image_id,
            source_url=image.url,
            processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
            error=error,
            error_code=code,
        )

    async def require_models(self, flags: AnalysisFlags) -> None:
        missing = await self.missing_models(flags)
        if missing:
            raise ModelNotReady(
                f"model not loaded: {', '.join(missing)}; see /health", detail={"models": missing}
            )

    # ---- routes ---------------------------------------------------------------------------

    @bentoml.api(route="/v1/analyze")
    async def analyze(self, req: AnalyzeRequest, /) -> AnalyzeResponse:
        try:
            await self.require_models(req)
            return AnalyzeResponse(result=await self.analyze_image(req.image, req))
        except ApiError as exc:
            return exc.to_response()  # type: ignore[return-value]

    @bentoml.api(route="/v1/analyze/upload")
    async def analyze_upload(
        self,
        image: Path,
        image_id: str | None = None,
        run_blur: bool = True,
        run_quality: bool = True,
        run_emotion: bool = True,
        run_embedding: bool = True,
    ) -> AnalyzeResponse:
        flags = AnalysisFlags(
            run_blur=run_blur,
            run_quality=run_quality,
            run_emotion=run_emotion,
            run_embedding=run_embedding,
        )
        started = time.perf_counter()
        try:
            if image.stat().st_size > settings.max_image_size_bytes:
                raise ImageTooLarge(
                    f"image is larger than the limit of {settings.max_image_size_bytes} bytes"
                )
            await self.require_models(flags)
            result = await self.analyze_prepared(await prepare(image.read_bytes(), flags), flags)
        except ApiError as exc:
            return exc.to_response()  # type: ignore[return-value]
        result.image_id = image_id
        result.processing_time_ms = round((time.perf_counter() - started) * 1000, 3)
        return AnalyzeResponse(result=result)

    @bentoml.api(route="/v1/analyze/batch")
    async def analyze_batch(self, req: BatchAnalyzeRequest, /) -> BatchAnalyzeResponse:
        if len(req.images) > settings.max_batch_size:
            return ApiError(  # type: ignore[return-value]
                f"{len(req.images)} images sent; at most {settings.max_batch_size} per batch",
                status_code=422,
                code="batch_too_large",
                detail={"max_batch_size": settings.max_batch_size, "received": len(req.images)},
            ).to_response()
        started = time.perf_counter()
        missing = await self.missing_models(req)
        if missing:
            error = f"model not loaded: {', '.join(missing)}; see /health"
            results = [
                ImageAnalysisResult(
                    image_id=i.image_id, source_url=i.url, error=error, error_code="model_not_ready"
                )
                for i in req.images
            ]
        else:
            results = list(
                await asyncio.gather(*(self.analyze_isolated(i, req) for i in req.images))
            )
        failed = sum(r.error is not None for r in results)
        return BatchAnalyzeResponse(
            total=len(results),
            succeeded=len(results) - failed,
            failed=failed,
            results=results,
            total_processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    @bentoml.api(route="/v1/cluster")
    async def cluster(self, req: ClusterRequest, /) -> ClusterResponse:
        eps = req.eps if req.eps is not None else settings.dbscan_eps_default
        min_samples = (
            req.min_samples if req.min_samples is not None else settings.dbscan_min_samples_default
        )
        try:
            return await anyio.to_thread.run_sync(
                lambda: cluster_embeddings(req, eps=eps, min_samples=min_samples)
            )
        except ApiError as exc:
            return exc.to_response()  # type: ignore[return-value]

    @bentoml.api(route="/v1/analyze/llm")
    async def analyze_llm(self, req: LlmAnalyzeRequest, /) -> LlmAnalyzeResponse:
        """The image is always ingested here (safe fetch) and sent inline: providers, and
        LiteLLM's own downloader, never fetch a caller's URL from inside our network."""
        try:
            flags = AnalysisFlags(run_embedding=False)
            if req.include_metrics:
                await self.require_models(flags)
            data = await read_image_bytes(req.image or ImageInput(url=req.image_url), settings)
            size = max(LLM_IMAGE_MAX_SIDE, decode_size(flags))
            decoded = await in_image_worker(lambda: decode(data, size))
            metrics: dict[str, Any] | None = None
            if req.include_metrics:
                prepared = await in_image_worker(lambda: prepare_inputs(decoded, flags))
                analysis = await self.analyze_prepared(prepared, flags)
                metrics = analysis.model_dump(
                    include={"width_px", "height_px", "blur", "quality", "aesthetic", "emotion"}
                )
            return await critique_photo(req, settings, image=decoded.rgb, metrics=metrics)
        except ApiError as exc:
            return exc.to_response()  # type: ignore[return-value]


def is_reachable(status: ModelStatus) -> bool:
    return not (status.error or "").startswith(UNREACHABLE)


async def in_image_worker(work: Callable[[], T]) -> T:
    """Run decoding or resizing off the event loop, at most IMAGE_WORKERS at a time: the work
    is CPU-bound, and a burst of photos then waits as compressed bytes rather than as decoded
    megapixels. Heap pages freed by finished images go back to the system (at most once a
    second), so the process does not stay as large as its busiest moment."""

    def work_then_trim() -> T:
        try:
            return work()
        finally:
            trim_after_batch()  # in the worker: a trim takes milliseconds

    return await anyio.to_thread.run_sync(work_then_trim, limiter=image_workers())


@cache
def image_workers() -> anyio.CapacityLimiter:
    return anyio.CapacityLimiter(IMAGE_WORKERS)


@dataclass(frozen=True)
class PreparedImage:
    """What the analyses need of one image: its size and each model's small input array."""

    width: int
    height: int
    inputs: dict[str, Any]


async def prepare(data: bytes, flags: AnalysisFlags) -> PreparedImage:
    """Decode once, at the smallest size the analyses allow, and derive every model's input;
    the decoded pixels never outlive this call."""

    return await in_image_worker(lambda: prepare_inputs(decode(data, decode_size(flags)), flags))


def decode(data: bytes, min_long_side: int) -> DecodedImage:
    """Decode at reduced size where the format allows, within the pixel limit (run it
    in_image_worker)."""
    return decode_image(data, max_pixels=settings.max_image_pixels, min_long_side=min_long_side)


def required_models(flags: AnalysisFlags) -> list[str]:
    models: list[str] = []
    if flags.run_quality:
        models += ["brisque", "nima_technical", "nima_aesthetic"]
    if flags.run_emotion:
        models.append("emotion")
    if flags.run_embedding:
        models.append("clip")
    return models


def decode_size(flags: AnalysisFlags) -> int:
    """The smallest long side the requested analyses need, so JPEGs decode at reduced size."""
    sizes = [preprocess.CLIP_SIZE]
    if flags.run_blur:
        sizes.append(settings.blur_analysis_size)
    if flags.run_quality:
        sizes += [preprocess.NIMA_SIZE, preprocess.BRISQUE_LONG_SIDE]
    if flags.run_emotion:
        sizes.append(preprocess.EMOTION_LONG_SIDE)
    return max(sizes)


def prepare_inputs(decoded: DecodedImage, flags: AnalysisFlags) -> PreparedImage:
    """Every requested model's input, derived from the one decode (run it in_image_worker)."""
    rgb = decoded.rgb
    inputs: dict[str, Any] = {}
    if flags.run_blur:
        inputs["blur"] = measure_blur(
            rgb, analysis_size=settings.blur_analysis_size, threshold=settings.blur_threshold
        )
    if flags.run_quality:
        inputs["nima"] = preprocess.nima_input(rgb)
        inputs["brisque"] = preprocess.brisque_input(rgb)
    if flags.run_emotion:
        face_image, scale = preprocess.emotion_input(rgb)
        inputs["emotion"] = face_image
        inputs["emotion_scale"] = scale * rgb.shape[1] / decoded.width
    if flags.run_embedding:
        inputs["clip"] = preprocess.clip_input(rgb)
    return PreparedImage(width=decoded.width, height=decoded.height, inputs=inputs)


async def _health(request: Request) -> JSONResponse:
    service: FestoraVision = bentoml.get_current_service()
    health = await service.health()
    return JSONResponse(health.model_dump(mode="json"))


async def _docs(request: Request) -> RedirectResponse:
    """BentoML serves its Swagger UI at `/`; `/docs` is where FastAPI users look for it."""
    return RedirectResponse("/")


health_app.router.routes.extend(
    [
        Route("/health", _health, methods=["GET"]),
        Route("/v1/health", _health, methods=["GET"]),
        Route("/docs", _docs, methods=["GET"]),
    ]
)

FestoraVision.add_asgi_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_body_bytes)
if settings.auth_enabled:
    FestoraVision.add_asgi_middleware(
        ApiKeyMiddleware, api_key=settings.api_key.get_secret_value().strip()
    )
if settings.rate_limit_enabled:
    FestoraVision.add_asgi_middleware(
        RateLimitMiddleware,
        per_minute=settings.rate_limit_per_minute,
        burst=settings.rate_limit_burst,
    )
FestoraVision.add_asgi_middleware(ErrorEnvelopeMiddleware)
