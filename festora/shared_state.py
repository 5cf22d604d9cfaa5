"""The Redis that API replicas share state through (`REDIS_URL`): rate limits, cached
analyses, jobs. Unset, each replica keeps its own state in memory, which is all one machine
needs.

The timeouts are short and nothing is retried, so Redis going away costs a request at most
`REDIS_TIMEOUT_SECONDS`, never a hang; each caller decides what an outage means for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from festora.config import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

KEY_PREFIX = "festora:"


def connect(settings: Settings) -> Redis | None:
    """A client for REDIS_URL (it connects on first use), or None when it is unset."""
    if not settings.redis_enabled or settings.redis_url is None:
        return None
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Redis.from_url(
        settings.redis_url.get_secret_value().strip(),
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        retry=Retry(NoBackoff(), retries=0),
    )
