"""Festora Vision: the API service, routes and wiring only.

It owns HTTP (the v1 contract in API.md), validation, auth and rate limiting; how an image is
analysed lives in `festora.analysis`, what the runners report in `festora.health`, and each
model in its own runner service (`runners/`), which batches across concurrent requests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import bentoml
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from festora import request_parsing
from festora.analysis import ImageAnalyzer, decode, decode_size, prepare_inputs, required_models
from festora.clustering import cluster_embeddings
from festora.config import get_settings
from festora.critique import (
    LLM_IMAGE_MAX_SIDE,
    LlmAnalyzeRequest,
    LlmAnalyzeResponse,
    critique_photo,
)
from festora.cull import CullRequest, CullResponse
from festora.cull.request import CULL_FLAGS, cull_request
from festora.errors import ApiError, ImageTooLarge
from festora.health import RunnerHealth
from festora.image_workers import in_image_worker
from festora.ingest import read_image_bytes
from festora.jobs.api import JobsApi, open_jobs
from festora.jobs.schemas import JobCreated, JobRequest, JobState
from festora.jobs.throttle import InteractiveRequestsMiddleware, JobThrottle
from festora.logs import configure_logging
from festora.middleware.auth import ApiKeyMiddleware
from festora.middleware.body_limit import BodyLimitMiddleware
from festora.middleware.envelope import ErrorEnvelopeMiddleware
from festora.middleware.overload import ConcurrencyLimitMiddleware
from festora.middleware.ratelimit import RateLimitMiddleware
from festora.openapi import openapi_document, responds_with, swagger_page
from festora.result_cache import ResultCache
from festora.schemas import (
    AnalysisFlags,
    AnalyzeRequest,
    AnalyzeResponse,
    BatchAnalyzeRequest,
    BatchAnalyzeResponse,
    ClusterRequest,
    ClusterResponse,
    EmbedTextRequest,
    EmbedTextResponse,
    HealthResponse,
    ImageAnalysisResult,
    ImageInput,
    SearchRequest,
    SearchResponse,
    TagsRequest,
    TagsResponse,
)
from festora.search import search_images
from festora.shared_state import connect
from festora.tags import tag_images
from festora.text_embedding import TextEmbedder
from runners.brisque import Brisque
from runners.clip import CLIPEncoder
from runners.clip_text import CLIPTextEncoder
from runners.faces import FaceAnalyzer
from runners.nima import NimaAesthetic, NimaTechnical
from runners.serving import drain

logger = logging.getLogger("festora.service")
settings = get_settings()
configure_logging(settings)
shared_state = connect(settings)  # REDIS_URL: state shared by every replica, else None
request_parsing.install()

health_app = Starlette()
job_throttle = JobThrottle(settings.job_concurrency, settings.job_concurrency_under_load)


@bentoml.asgi_app(health_app, path="/")
@bentoml.service(
    name="festora-vision",
    workers=1,
    traffic={"timeout": 300},
    http={
        "port": settings.port,
        "cors": {
            "enabled": True,
            "access_control_allow_origins": list(settings.cors_allow_origins),
            "access_control_allow_methods": ["GET", "POST", "DELETE", "OPTIONS"],
            "access_control_allow_headers": ["Content-Type", "X-Api-Key", "Authorization"],
            "access_control_expose_headers": ["Retry-After"],
        },
    },
)
class FestoraVision:
    # One `bentoml serve` runs each as a local process; served on their own, they are found
    # through BentoML's runner map (`start-http-server --depends Name=URL`, see README).
    clip = bentoml.depends(CLIPEncoder)
    clip_text = bentoml.depends(CLIPTextEncoder)
    nima_technical = bentoml.depends(NimaTechnical)
    nima_aesthetic = bentoml.depends(NimaAesthetic)
    brisque = bentoml.depends(Brisque)
    faces = bentoml.depends(FaceAnalyzer)

    def __init__(self) -> None:
        self.runner_health = RunnerHealth(self._runners, settings)
        cache = (
            ResultCache(shared_state, settings)
            if shared_state and settings.cache_ttl_seconds
            else None
        )
        self.analyzer = ImageAnalyzer(self, settings, self.runner_health, cache=cache)
        self.jobs = open_jobs(
            settings, self.analyzer, self.runner_health, job_throttle, shared_state
        )
        self.text = TextEmbedder(lambda: self.clip_text, self.runner_health)

    def _runners(self) -> dict[str, Any]:
        return {
            "clip": self.clip,
            "clip_text": self.clip_text,
            "nima_technical": self.nima_technical,
            "nima_aesthetic": self.nima_aesthetic,
            "brisque": self.brisque,
            "faces": self.faces,
        }

    async def __is_ready__(self) -> bool:
        return await self.runner_health.ready()

    @bentoml.on_startup
    async def _start_jobs(self) -> None:
        self._job_runner = asyncio.create_task(self.jobs.runner.run())
        drain.on_sigterm(self.runner_health.hold_runners)

    @bentoml.on_shutdown
    async def _stop_jobs(self) -> None:
        self._job_runner.cancel()
        await self.jobs.runner.stop()

    # ---- routes ---------------------------------------------------------------------------

    @bentoml.api(route="/v1/analyze")
    async def analyze(self, req: AnalyzeRequest, /) -> AnalyzeResponse:
        try:
            await self.runner_health.require(required_models(req))
            return AnalyzeResponse(result=await self.analyzer.analyze(req.image, req))
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
        run_exposure: bool = True,
        run_fingerprint: bool = True,
        run_metadata: bool = True,
    ) -> AnalyzeResponse:
        flags = AnalysisFlags(
            run_blur=run_blur,
            run_quality=run_quality,
            run_emotion=run_emotion,
            run_embedding=run_embedding,
            run_exposure=run_exposure,
            run_fingerprint=run_fingerprint,
            run_metadata=run_metadata,
        )
        try:
            if image.stat().st_size > settings.max_image_size_bytes:
                raise ImageTooLarge(
                    f"image is larger than the limit of {settings.max_image_size_bytes} bytes"
                )
            await self.runner_health.require(required_models(flags))
            result = await self.analyzer.analyze_bytes(image.read_bytes(), flags)
        except ApiError as exc:
            return exc.to_response()  # type: ignore[return-value]
        result.image_id = image_id
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
        try:
            await self.runner_health.require(required_models(req))
        except ApiError as exc:
            results = [
                ImageAnalysisResult(
                    image_id=i.image_id, source_url=i.url, error=exc.message, error_code=exc.code
                )
                for i in req.images
            ]
        else:
            results = await self.analyzer.analyze_all(req.images, req)
        failed = sum(r.error is not None for r in results)
        return BatchAnalyzeResponse(
            total=len(results),
            succeeded=len(results) - failed,
            failed=failed,
            results=results,
            total_processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    @bentoml.api(route="/v1/jobs")
    async def create_job(self, req: JobRequest, /) -> JobCreated:
        try:
            created = await self.jobs.create(req)
        except ApiError as exc:
            return exc.to_response()  # type: ignore[return-value]
        return JSONResponse(created.model_dump(mode="json"), status_code=202)  # type: ignore[return-value]

    @bentoml.task(route="/v1/jobs/run")
    async def run_job(self, req: JobRequest, /, ctx: bentoml.Context) -> JobState:
        """The same job through BentoML's task mechanism, for the generated client:
        `client.run_job.submit(req)` starts it, `get_status()` / `get()` follow it, and the
        task id is the job id (progress and results at /v1/jobs/{id}). The job itself lives
        in the store: after a restart it continues, but BentoML forgets the task."""
        task_id = getattr(ctx.request.state, "task_id", None)  # None when called directly
        try:
            created = await self.jobs.create(req, job_id=task_id)
            return await self.jobs.wait(created.job_id)
        except ApiError as exc:
            return exc.to_response()  # type: ignore[return-value]

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

    @bentoml.api(route="/v1/cull")
    async def cull(self, req: CullRequest, /) -> CullResponse:
        """Group a shoot, rank each group, and say what to keep and why."""
        try:
            if req.images is not None:
                await self.runner_health.require(required_models(CULL_FLAGS))
            return await cull_request(req, self.analyzer, settings)
        except ApiError as exc:
            return exc.to_response()  # type: ignore[return-value]

    @bentoml.api(route="/v1/embed/text")
    async def embed_text(self, req: EmbedTextRequest, /) -> EmbedTextResponse:
        try:
            model = await self.text.model()
            embedded = await self.text.embed(req.texts)
        except ApiError as exc:
            return exc.to_response()  # type: ignore[return-value]
        return EmbedTextResponse(
            model=settings.clip_model_name,
            dimensions=model.dimensions,
            vectors=embedded.vectors.tolist(),
            warnings=model.truncation_warnings("texts", embedded.truncated),
        )

    @bentoml.api(route="/v1/search")
    async def search(self, req: SearchRequest, /) -> SearchResponse:
        try:
            return await search_images(req, self.text, settings.clip_model_name)
        except ApiError as exc:
            return exc.to_response()  # type: ignore[return-value]

    @bentoml.api(route="/v1/tags")
    async def tags(self, req: TagsRequest, /) -> TagsResponse:
        try:
            return await tag_images(req, self.text, settings.clip_model_name)
        except ApiError as exc:
            return exc.to_response()  # type: ignore[return-value]

    @bentoml.api(route="/v1/analyze/llm")
    async def analyze_llm(self, req: LlmAnalyzeRequest, /) -> LlmAnalyzeResponse:
        """The image is always ingested here (safe fetch) and sent inline: providers, and
        LiteLLM's own downloader, never fetch a caller's URL from inside our network."""
        try:
            flags = AnalysisFlags(run_embedding=False)
            if req.include_metrics:
                await self.runner_health.require(required_models(flags))
            data = await read_image_bytes(req.image or ImageInput(url=req.image_url), settings)
            needed = decode_size(flags, settings)
            size = needed._replace(long_side=max(LLM_IMAGE_MAX_SIDE, needed.long_side))
            decoded = await in_image_worker(lambda: decode(data, size, flags, settings))
            metrics: dict[str, Any] | None = None
            if req.include_metrics:
                prepared = await in_image_worker(lambda: prepare_inputs(decoded, flags, settings))
                analysis = await self.analyzer.analyze_prepared(prepared, flags)
                metrics = analysis.model_dump(
                    include={"width_px", "height_px", "blur", "quality", "aesthetic", "emotion"}
                )
            return await critique_photo(req, settings, image=decoded.rgb, metrics=metrics)
        except ApiError as exc:
            return exc.to_response()  # type: ignore[return-value]


@responds_with(HealthResponse)
async def _health(request: Request) -> JSONResponse:
    """Service status and each model's: loaded, load time, weights, engine, errors."""
    service: FestoraVision = bentoml.get_current_service()
    health = await service.runner_health.report()
    return JSONResponse(health.model_dump(mode="json"))


@functools.cache
def _openapi() -> dict[str, Any]:
    return openapi_document(FestoraVision, health_app.routes, settings)


async def _openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(_openapi())


async def _docs(request: Request) -> HTMLResponse:
    """Swagger UI where FastAPI users look for it; BentoML's own stays at `/`."""
    return HTMLResponse(swagger_page(f"Festora Vision {settings.app_version}", "/docs.json"))


health_app.router.routes.extend(
    [
        Route("/health", _health, methods=["GET"]),
        Route("/v1/health", _health, methods=["GET"]),
        Route("/docs", _docs, methods=["GET"], include_in_schema=False),
        Route("/docs.json", _openapi_json, methods=["GET"], include_in_schema=False),
        Route("/openapi.json", _openapi_json, methods=["GET"], include_in_schema=False),
    ]
)


async def _job_state(request: Request) -> JSONResponse:
    return await _job_answer(lambda jobs: jobs.state(request.path_params["job_id"]))


async def _job_results(request: Request) -> JSONResponse:
    return await _job_answer(
        lambda jobs: jobs.results(request.path_params["job_id"], request.query_params)
    )


async def _job_cull(request: Request) -> JSONResponse:
    return await _job_answer(lambda jobs: jobs.cull(request.path_params["job_id"]))


async def _job_cancel(request: Request) -> JSONResponse:
    return await _job_answer(lambda jobs: jobs.cancel(request.path_params["job_id"]))


async def _job_answer(
    call: Callable[[JobsApi], Awaitable[BaseModel | dict[str, Any]]],
) -> JSONResponse:
    service: FestoraVision = bentoml.get_current_service()
    try:
        body = await call(service.jobs)
    except ApiError as exc:
        return exc.to_response()
    return JSONResponse(body.model_dump(mode="json") if isinstance(body, BaseModel) else body)


health_app.router.routes.extend(
    [
        Route("/v1/jobs/{job_id}", _job_state, methods=["GET"]),
        Route("/v1/jobs/{job_id}", _job_cancel, methods=["DELETE"]),
        Route("/v1/jobs/{job_id}/results", _job_results, methods=["GET"]),
        Route("/v1/jobs/{job_id}/cull", _job_cull, methods=["GET"]),
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
        redis=shared_state,
        redis_failure=settings.rate_limit_redis_failure,
    )
FestoraVision.add_asgi_middleware(
    ConcurrencyLimitMiddleware,
    limit=settings.max_concurrent_requests,
    retry_after=settings.overload_retry_after_seconds,
)
FestoraVision.add_asgi_middleware(ErrorEnvelopeMiddleware)
FestoraVision.add_asgi_middleware(InteractiveRequestsMiddleware, throttle=job_throttle)
