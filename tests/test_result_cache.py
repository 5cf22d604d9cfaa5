"""The result cache on a real redis-server: what its key depends on, and Redis going away."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from festora.config import Settings
from festora.result_cache import ResultCache
from festora.schemas import AnalysisFlags, ImageAnalysisResult, ModelStatus
from festora.shared_state import connect
from tests.redis_server import RedisServer

SHA = "ab" * 32
CLIP = ModelStatus(name="clip", loaded=True, tag="festora-clip:v1", engine="openvino-bf16")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


def cache_for(server: RedisServer) -> ResultCache:
    settings = Settings(redis_url=server.url, cache_ttl_seconds=60, redis_timeout_seconds=10)
    redis = connect(settings)
    assert redis is not None
    return ResultCache(redis, settings)


def test_the_key_changes_with_everything_a_result_depends_on(redis_server: RedisServer) -> None:
    cache = cache_for(redis_server)
    flags = AnalysisFlags()
    key = cache.key(SHA, flags, {"clip": CLIP})
    assert key == cache.key(SHA, AnalysisFlags(), {"clip": CLIP})
    others = [
        cache.key("cd" * 32, flags, {"clip": CLIP}),
        cache.key(SHA, AnalysisFlags(run_blur=False), {"clip": CLIP}),
        cache.key(SHA, flags, {"clip": CLIP.model_copy(update={"tag": "festora-clip:v2"})}),
        cache.key(SHA, flags, {"clip": CLIP.model_copy(update={"engine": "torch-fp32"})}),
        ResultCache(cache._redis, Settings(blur_threshold=20)).key(SHA, flags, {"clip": CLIP}),
    ]
    assert len({key, *others}) == len(others) + 1


def test_a_result_round_trips_and_expires(redis_server: RedisServer) -> None:
    result = ImageAnalysisResult(width_px=640, height_px=480, warnings=["w"])

    async def scenario() -> tuple[ImageAnalysisResult | None, ImageAnalysisResult | None, int]:
        cache = cache_for(redis_server)
        key = cache.key(SHA, AnalysisFlags(), {"clip": CLIP})
        missing = await cache.get(key)
        await cache.put(key, result)
        found = await cache.get(key)
        ttl = await cache._redis.ttl(key)
        await cache._redis.aclose()
        assert missing is None
        return found, missing, ttl

    found, _, ttl = asyncio.run(scenario())
    assert found == result
    assert 0 < ttl <= 60


def test_redis_away_is_a_miss_never_an_error(redis_server: RedisServer) -> None:
    async def scenario() -> ImageAnalysisResult | None:
        cache = cache_for(redis_server)
        key = cache.key(SHA, AnalysisFlags(), {"clip": CLIP})
        redis_server.stop()
        try:
            await cache.put(key, ImageAnalysisResult())
            return await cache.get(key)
        finally:
            redis_server.start()
            await cache._redis.aclose()

    assert asyncio.run(scenario()) is None
