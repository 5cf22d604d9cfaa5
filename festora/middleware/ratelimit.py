"""Per-client rate limit: a token bucket like nginx's `limit_req rate=N/m burst=B`.

A client may send `RATE_LIMIT_PER_MINUTE / 60` requests a second on average and up to
`RATE_LIMIT_BURST` more back to back; beyond that it gets 429 with `Retry-After`. Clients are
told apart by their address. Buckets that have refilled are dropped, so memory stays bounded
by the number of clients active in the last minute or so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from festora.errors import error_response
from festora.middleware import is_protected


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


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, per_minute: int, burst: int) -> None:
        self.app = app
        self.limiter = TokenBucketLimiter(per_minute=per_minute, burst=burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] == "OPTIONS"
            or not is_protected(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.limiter.acquire(client[0] if client else "unknown")
        if wait == 0.0:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        response = error_response(
            429,
            "rate_limited",
            f"rate limit exceeded: retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
        await response(scope, receive, send)
