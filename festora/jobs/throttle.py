"""Synchronous requests first: how job images give way to the requests a client waits on.

Every analysis, synchronous or not, shares the same image workers and runner batches. Jobs may
keep up to JOB_CONCURRENCY images in flight while no synchronous request is running (enough to
fill the runners' batches, so an idle machine works at full speed on jobs), but only
JOB_CONCURRENCY_UNDER_LOAD while any is (a small share, so jobs still move). A synchronous
request then waits behind at most the job images already started, never behind a job's queue.
The small share holds for `hold_seconds` after the last synchronous request, so that a client
sending one request after another does not find the jobs back at full strength each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.types import ASGIApp, Receive, Scope, Send


class JobThrottle:
    def __init__(
        self, concurrency: int, concurrency_under_load: int, hold_seconds: float = 2.0
    ) -> None:
        self.concurrency = concurrency
        self.concurrency_under_load = concurrency_under_load
        self.hold_seconds = hold_seconds
        self.interactive = 0  # synchronous requests in flight
        self.job_images = 0  # job images in flight
        self._quiet_at = 0.0  # monotonic time the small share ends once no request runs
        self._changed = asyncio.Event()

    def limit(self) -> int:
        busy = self.interactive or time.monotonic() < self._quiet_at
        return self.concurrency_under_load if busy else self.concurrency

    async def acquire(self) -> None:
        """Wait for a job image slot; give it back with `release`."""
        while self.job_images >= self.limit():
            timeout = max(0.05, self._quiet_at - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        self.job_images += 1

    def release(self) -> None:
        self.job_images -= 1
        self._broadcast()

    @asynccontextmanager
    async def interactive_request(self) -> AsyncIterator[None]:
        self.interactive += 1
        try:
            yield
        finally:
            self.interactive -= 1
            self._quiet_at = time.monotonic() + self.hold_seconds
            self._broadcast()

    def _broadcast(self) -> None:
        """Wake every waiter to re-check; later waiters wait on a fresh event."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


class InteractiveRequestsMiddleware:
    """Counts the synchronous /v1 requests in flight (every POST but the jobs routes)."""

    def __init__(self, app: ASGIApp, *, throttle: JobThrottle) -> None:
        self.app = app
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not path.startswith("/v1/")
            or path.startswith("/v1/jobs")
        ):
            await self.app(scope, receive, send)
            return
        async with self.throttle.interactive_request():
            await self.app(scope, receive, send)
