"""Analyses of photos already seen, kept in Redis for every replica (CACHE_TTL_SECONDS), so a
re-sent photo skips decoding and the models.

A result is reused only when nothing it depends on changed: the key is a digest of the file's
sha256, the requested analyses, the tag and engine of each model they need (as its runner
reports them), the settings that change a verdict and the service version. Redis going away
only turns hits into misses.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from festora import __version__
from festora.config import Settings
from festora.schemas import AnalysisFlags, ImageAnalysisResult, ModelStatus
from festora.shared_state import KEY_PREFIX

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("festora.cache")


class ResultCache:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._ttl = settings.cache_ttl_seconds
        self._settings = {
            "blur_analysis_size": settings.blur_analysis_size,
            "blur_threshold": settings.blur_threshold,
            "clip_model_name": settings.clip_model_name,
            "version": __version__,
        }

    def key(
        self, image_sha256: str, flags: AnalysisFlags, models: Mapping[str, ModelStatus]
    ) -> str:
        """The cache key of this photo analysed with these flags by these models."""
        parts = {
            "image": image_sha256,
            "flags": flags.model_dump(mode="json", include=set(AnalysisFlags.model_fields)),
            "models": {name: [s.tag, s.engine] for name, s in sorted(models.items())},
            "settings": self._settings,
        }
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        return f"{KEY_PREFIX}result:{digest}"

    async def get(self, key: str) -> ImageAnalysisResult | None:
        from redis.exceptions import RedisError

        try:
            raw = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            logger.warning("result cache unavailable", extra={"error": type(exc).__name__})
            return None
        return None if raw is None else ImageAnalysisResult.model_validate_json(raw)

    async def put(self, key: str, result: ImageAnalysisResult) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.set(key, result.model_dump_json(), ex=self._ttl)
        except (RedisError, OSError) as exc:
            logger.warning("result cache unavailable", extra={"error": type(exc).__name__})
