"""Load shedding: at most MAX_CONCURRENT_REQUESTS /v1 requests are worked on at once.

Past that the service is slower than its callers, and every queued request would only wait
longer (up to the 300 s timeout) while making the ones ahead of it slower too. So a request
over the limit is answered at once, 503 `overloaded` with `Retry-After`, and clients retry;
health, readiness and metrics are never limited, so probes stay fast under any load.
"""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from festora.errors import Overloaded
from festora.middleware import is_guarded

logger = logging.getLogger("festora.overload")


class ConcurrencyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, limit: int, retry_after: int) -> None:
        self.app = app
        self.limit = limit
        self.retry_after = retry_after
        self.active = 0  # one event loop per worker: a plain counter is exact

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_guarded(scope):
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            logger.warning("overloaded", extra={"path": scope["path"], "active": self.active})
            refusal = Overloaded(
                f"the service is at capacity ({self.limit} requests in progress); "
                f"retry in {self.retry_after} s",
                retry_after=self.retry_after,
            )
            await refusal.to_response()(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
