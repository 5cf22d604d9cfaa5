"""Per-client rate limit: a token bucket like nginx's `limit_req rate=N/m burst=B`.

A client may send `RATE_LIMIT_PER_MINUTE / 60` requests a second on average and up to
`RATE_LIMIT_BURST` more back to back; beyond that it gets 429 with `Retry-After`. Clients are
told apart by their address. Buckets that have refilled are dropped, so memory stays bounded
by the number of clients active in the last minute or so.

With REDIS_URL the bucket lives in Redis, one per client for every replica together. While
Redis is away, `RATE_LIMIT_REDIS_FAILURE` decides: "open" falls back to this replica's own
bucket (the limit then holds per replica, as without Redis), "closed" refuses with 503.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from festora.errors import error_response
from festora.middleware import is_guarded
from festora.shared_state import KEY_PREFIX

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("festora.ratelimit")

# Refill, take a token and say how long to wait, in one atomic step on Redis's own clock (the
# replicas' clocks never meet). Numbers go back as strings: Lua numbers become integers.
TAKE_TOKEN = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(bucket[1]) or capacity
local updated = tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return tostring(wait)
"""
REDIS_RETRY_AFTER_SECONDS = 5


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    def __init__(
        self,
        *,
        per_minute: int,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst + 1)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._last_prune = clock()

    def acquire(self, client: str) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is free."""
        now = self._clock()
        self._prune(now)
        bucket = self._buckets.setdefault(client, _Bucket(self.capacity, now))
        bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _prune(self, now: float) -> None:
        refill_seconds = self.capacity / self.rate
        if now - self._last_prune < refill_seconds:
            return
        self._last_prune = now
        self._buckets = {
            client: bucket
            for client, bucket in self._buckets.items()
            if now - bucket.updated < refill_seconds
        }


class RedisTokenBucket:
    """The same token bucket kept in Redis, shared by every replica; an idle client's key
    expires once its bucket would be full again."""

    def __init__(self, redis: Redis, *, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst + 1)
        self._take = redis.register_script(TAKE_TOKEN)

    async def acquire(self, client: str) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is free."""
        key = f"{KEY_PREFIX}ratelimit:{client}"
        return float(await self._take(keys=[key], args=[self.rate, self.capacity]))


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        per_minute: int,
        burst: int,
        redis: Redis | None = None,
        redis_failure: Literal["open", "closed"] = "open",
    ) -> None:
        self.app = app
        self.limiter = TokenBucketLimiter(per_minute=per_minute, burst=burst)
        self.shared = RedisTokenBucket(redis, per_minute=per_minute, burst=burst) if redis else None
        self.redis_failure = redis_failure
        self._redis_down = False

    async def _acquire(self, client: str) -> float | None:
        """Seconds to wait (0: go ahead), or None when Redis is away and the policy is closed."""
        if self.shared is None:
            return self.limiter.acquire(client)
        from redis.exceptions import RedisError

        try:
            wait = await self.shared.acquire(client)
        except (RedisError, OSError) as exc:
            if not self._redis_down:
                self._redis_down = True
                logger.error(
                    "rate limit store unavailable",
                    extra={"error": type(exc).__name__, "policy": self.redis_failure},
                )
            return self.limiter.acquire(client) if self.redis_failure == "open" else None
        if self._redis_down:
            self._redis_down = False
            logger.info("rate limit store back")
        return wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_guarded(scope):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = await self._acquire(client[0] if client else "unknown")
        if wait == 0.0:
            await self.app(scope, receive, send)
            return
        if wait is None:
            response = error_response(
                503,
                "rate_limit_unavailable",
                "the rate limit cannot be checked right now; retry shortly",
                headers={"Retry-After": str(REDIS_RETRY_AFTER_SECONDS)},
            )
            await response(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        response = error_response(
            429,
            "rate_limited",
            f"rate limit exceeded: retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
        await response(scope, receive, send)
