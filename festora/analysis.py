"""How one image is analysed: decode once, derive each model's small input, fan out to the
runners concurrently, assemble the v1 `ImageAnalysisResult`.

Every route that analyses (single, upload, batch, LLM metrics, cull) goes through
`ImageAnalyzer`, so they all see the same numbers. The decoded pixels never outlive `prepare`:
only the small arrays the runners need cross a process boundary.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from festora import preprocess
from festora.blur import blur_of_gray, to_analysis_gray
from festora.config import Settings
from festora.errors import TRANSIENT_ERRORS, ApiError
from festora.exposure import measure_exposure
from festora.fingerprint import fingerprint
from festora.health import RunnerHealth
from festora.image_workers import in_image_worker
from festora.images import DecodedImage, decode_image
from festora.ingest import read_image_bytes
from festora.labels import aesthetic_label, quality_label
from festora.metadata import read_metadata
from festora.result_cache import ResultCache
from festora.schemas import (
    AestheticResult,
    AnalysisFlags,
    EmbeddingResult,
    EmotionResult,
    FaceEmotion,
    ImageAnalysisResult,
    ImageInput,
    QualityResult,
)

logger = logging.getLogger("festora.analysis")


class ModelClients(Protocol):
    """The runner clients an analysis calls (the API service's `bentoml.depends`)."""

    clip: Any
    nima_technical: Any
    nima_aesthetic: Any
    brisque: Any
    faces: Any


def required_models(flags: AnalysisFlags) -> list[str]:
    """The runners (by /health name) the requested analyses need."""
    models: list[str] = []
    if flags.run_quality:
        models += ["brisque", "nima_technical", "nima_aesthetic"]
    if flags.run_emotion:
        models.append("faces")
    if flags.run_embedding:
        models.append("clip")
    return models


@dataclass(frozen=True)
class PreparedImage:
    """What the analyses need of one image: its size and each model's small input array."""

    width: int
    height: int
    inputs: dict[str, Any]


class DecodeSize(NamedTuple):
    """What the requested analyses need of the decode: the longest long side one shrinks to
    (faces, BRISQUE, blur) and the longest short side one resizes to (CLIP, NIMA)."""

    long_side: int
    short_side: int


def decode_size(
    flags: AnalysisFlags, settings: Settings, clip_size: int = preprocess.CLIP_SIZE
) -> DecodeSize:
    """The least the requested analyses need, so JPEGs decode at reduced size."""
    long_sides, short_sides = [clip_size], [0]
    if flags.run_blur:
        long_sides.append(settings.blur_analysis_size)
    if flags.run_quality:
        long_sides += [preprocess.NIMA_SIZE, preprocess.BRISQUE_LONG_SIDE]
        short_sides.append(preprocess.NIMA_SIZE)
    if flags.run_emotion:
        long_sides.append(preprocess.FACE_LONG_SIDE)
    if flags.run_embedding:
        short_sides.append(clip_size)
    return DecodeSize(max(long_sides), max(short_sides))


def decode(data: bytes, size: DecodeSize, flags: AnalysisFlags, settings: Settings) -> DecodedImage:
    """Decode at reduced size where the format allows, within the pixel limit, hashing the
    bytes only for a fingerprint (run it in_image_worker)."""
    return decode_image(
        data,
        max_pixels=settings.max_image_pixels,
        min_long_side=size.long_side,
        min_short_side=size.short_side,
        digest=flags.run_fingerprint,
    )


def prepare_inputs(
    decoded: DecodedImage,
    flags: AnalysisFlags,
    settings: Settings,
    clip_size: int = preprocess.CLIP_SIZE,
) -> PreparedImage:
    """Every requested model's input, and the cheap analyses, derived from the one decode (run
    it in_image_worker); `clip_size` is the CLIP runner's input size."""
    rgb = decoded.rgb
    inputs: dict[str, Any] = {}
    if flags.run_blur or flags.run_exposure or flags.run_fingerprint:
        # one grayscale copy at the blur analysis size serves all three
        gray = to_analysis_gray(rgb, settings.blur_analysis_size)
        if flags.run_blur:
            inputs["blur"] = blur_of_gray(gray, settings.blur_threshold)
        if flags.run_exposure:
            inputs["exposure"] = measure_exposure(gray)
        if flags.run_fingerprint:
            if decoded.sha256 is None:
                raise ValueError("a fingerprint needs the image decoded with digest=True")
            inputs["fingerprint"] = fingerprint(gray, decoded.sha256)
    if flags.run_metadata:
        inputs["metadata"] = read_metadata(decoded.exif)
    if flags.run_quality:
        inputs["nima"] = preprocess.nima_input(rgb)
        inputs["brisque"] = preprocess.brisque_input(rgb)
    if flags.run_emotion:
        face_image, scale = preprocess.face_input(rgb)
        inputs["faces"] = face_image
        inputs["faces_scale"] = scale * rgb.shape[1] / decoded.width
    if flags.run_embedding:
        inputs["clip"] = preprocess.clip_input(rgb, clip_size)
    return PreparedImage(width=decoded.width, height=decoded.height, inputs=inputs)


async def prepare(
    data: bytes, flags: AnalysisFlags, settings: Settings, clip_size: int = preprocess.CLIP_SIZE
) -> PreparedImage:
    """Decode once, at the smallest size the analyses allow, and derive every model's input;
    the decoded pixels never outlive this call."""
    size = decode_size(flags, settings, clip_size)
    return await in_image_worker(
        lambda: prepare_inputs(decode(data, size, flags, settings), flags, settings, clip_size)
    )


class ImageAnalyzer:
    def __init__(
        self,
        models: ModelClients,
        settings: Settings,
        health: RunnerHealth,
        *,
        cache: ResultCache | None = None,
    ) -> None:
        self.models = models
        self.settings = settings
        self.health = health
        self.cache = cache

    async def clip_size(self) -> int:
        """The CLIP runner's input size (its processor's crop size), as it reports it."""
        return await self.health.input_size("clip") or preprocess.CLIP_SIZE

    async def analyze(self, image: ImageInput, flags: AnalysisFlags) -> ImageAnalysisResult:
        """Fetch or decode the input, then analyse it; raises ApiError for a bad image."""
        started = time.perf_counter()
        data = await read_image_bytes(image, self.settings)
        result = await self.analyze_bytes(data, flags)
        result.image_id = image.image_id
        result.source_url = image.url
        result.processing_time_ms = _ms_since(started)
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

    async def analyze_bytes(self, data: bytes, flags: AnalysisFlags) -> ImageAnalysisResult:
        started = time.perf_counter()
        key = await self._cache_key(data, flags)
        result = await self.cache.get(key) if self.cache and key else None
        if result is not None:
            logger.info("analysis from cache", extra={"width_px": result.width_px})
        else:
            clip_size = await self.clip_size() if flags.run_embedding else preprocess.CLIP_SIZE
            prepared = await prepare(data, flags, self.settings, clip_size)
            result = await self.analyze_prepared(prepared, flags)
            if self.cache and key:
                await self.cache.put(key, result)
        result.processing_time_ms = _ms_since(started)
        return result

    async def _cache_key(self, data: bytes, flags: AnalysisFlags) -> str | None:
        """The photo's result-cache key, or None without a cache or while a model it needs
        cannot say which weights it runs (nothing could vouch for a cached answer)."""
        if self.cache is None:
            return None
        statuses = await self.health.statuses()
        needed = {name: statuses[name] for name in required_models(flags)}
        if not all(status.loaded for status in needed.values()):
            return None
        image_sha256 = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        return self.cache.key(image_sha256, flags, needed)

    async def analyze_isolated(
        self, image: ImageInput, flags: AnalysisFlags
    ) -> ImageAnalysisResult:
        """One image of many: its failure becomes its `error`, never the whole request's."""
        started = time.perf_counter()
        try:
            return await self.analyze(image, flags)
        except ApiError as exc:
            error, code = exc.message, exc.code
            logger.warning("image rejected", extra={"image_id": image.image_id, "error": code})
        except Exception:
            logger.exception("image failed", extra={"image_id": image.image_id})
            error, code = "internal error while analysing this image", "internal_error"
        return ImageAnalysisResult(
            image_id=image.image_id,
            source_url=image.url,
            processing_time_ms=_ms_since(started),
            error=error,
            error_code=code,
        )

    async def analyze_all(
        self, images: list[ImageInput], flags: AnalysisFlags
    ) -> list[ImageAnalysisResult]:
        """Every image of a request, in order, each isolated from the others. An image that
        failed only for a transient reason (typically a runner's queue refusing what it could
        not start in time while the request's other images were queued) is tried once more
        after the rest are done, one at a time, so the retries queue behind nothing of ours."""
        results = list(await asyncio.gather(*(self.analyze_isolated(i, flags) for i in images)))
        again = [n for n, result in enumerate(results) if result.error_code in TRANSIENT_ERRORS]
        if again:
            logger.info("images tried again", extra={"images": len(again)})
        for n in again:
            results[n] = await self.analyze_isolated(images[n], flags)
        return results

    async def analyze_prepared(
        self, prepared: PreparedImage, flags: AnalysisFlags
    ) -> ImageAnalysisResult:
        """Send each requested runner its input, all at once, and assemble what they return."""
        inputs, models = prepared.inputs, self.models
        calls: dict[str, Callable[[], Awaitable[Any]]] = {}
        if flags.run_quality:
            calls["brisque"] = lambda: models.brisque.to_async.score([inputs["brisque"]])
            calls["nima_technical"] = lambda: models.nima_technical.to_async.score(
                inputs["nima"][None]
            )
            calls["nima_aesthetic"] = lambda: models.nima_aesthetic.to_async.score(
                inputs["nima"][None]
            )
        if flags.run_emotion:
            calls["faces"] = lambda: models.faces.to_async.analyze([inputs["faces"]])
        if flags.run_embedding:
            calls["clip"] = lambda: models.clip.to_async.encode(inputs["clip"][None])
        found = await asyncio.gather(*(self.health.call(n, c) for n, c in calls.items()))
        outputs = dict(zip(calls, found, strict=True))

        result = ImageAnalysisResult(
            width_px=prepared.width,
            height_px=prepared.height,
            blur=inputs.get("blur"),
            exposure=inputs.get("exposure"),
            fingerprint=inputs.get("fingerprint"),
            metadata=inputs.get("metadata"),
        )
        if flags.run_quality:
            self._add_quality(result, outputs)
        if flags.run_emotion:
            found = outputs["faces"][0]
            faces = preprocess.scale_faces(
                found["faces"], inputs["faces_scale"], prepared.width, prepared.height
            )
            if faces:
                result.emotion = EmotionResult(
                    faces_detected=len(faces),
                    faces=[FaceEmotion.model_validate(f) for f in faces],
                    detector=found["detector"],
                )
        if flags.run_embedding:
            vector = np.asarray(outputs["clip"][0], dtype=np.float32)
            result.embedding = EmbeddingResult(
                model=self.settings.clip_model_name, dimensions=vector.size, vector=vector.tolist()
            )
        return result

    @staticmethod
    def _add_quality(result: ImageAnalysisResult, outputs: dict[str, Any]) -> None:
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
            nima_aesthetic_score=round(aesthetic, 4), aesthetic_label=aesthetic_label(aesthetic)
        )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
