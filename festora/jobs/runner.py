"""The background worker: claims active jobs from the store and analyses their images.

It runs inside the API process, so a job's images go through the same `ImageAnalyzer` as
/v1/analyze and share the runners' adaptive batches with synchronous requests (the throttle
says who goes first). Progress lives in the store, one commit per image: after a crash, the
next process claims the job once its lease has run out and analyses only what has no result.
An image that was in flight during the crash is analysed again; a finished one never is.
A cull job, once every image is done, is culled exactly as /v1/cull culls `analyses`.

BentoML's own task mechanism (`@bentoml.task`) cannot do this part: its tasks run as
in-memory background tasks of one request and are lost with the process (a task running at a
restart stays "in_progress" forever), it has no progress or partial results, and the local
server cannot cancel them. So jobs live in our store, and the service's `run_job` task is only
a convenience on top (see service.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

from festora.analysis import ImageAnalyzer, required_models
from festora.config import Settings
from festora.cull.request import cull_request
from festora.cull.schemas import CullRequest
from festora.errors import TRANSIENT_ERRORS, ApiError
from festora.health import RunnerHealth
from festora.jobs.store import JobStore, PendingImage, StoredJob
from festora.jobs.throttle import JobThrottle
from festora.schemas import AnalysisFlags, ImageAnalysisResult, ImageInput

logger = logging.getLogger("festora.jobs")

PENDING_CHUNK = 64  # images read from the store at a time: bounds memory for base64 jobs
# Images that failed only because a runner was down are tried again, in up to PASSES passes
# over the job, RETRY_AFTER_SECONDS x pass apart; after the last they keep their error.
PASSES = 4
RETRY_AFTER_SECONDS = 5.0
EXPIRE_EVERY_SECONDS = 60.0  # or a quarter of the retention, if shorter


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        analyzer: ImageAnalyzer,
        health: RunnerHealth,
        throttle: JobThrottle,
        settings: Settings,
        *,
        max_running_jobs: int,
        lease_seconds: float,
        retention_seconds: float,
        poll_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.analyzer = analyzer
        self.health = health
        self.throttle = throttle
        self.settings = settings
        self.max_running_jobs = max_running_jobs
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.retention_seconds = retention_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._last_expiry = 0.0

    def wake(self) -> None:
        """A job was created here: claim it now rather than at the next poll."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop this process's work on a job the store already marks cancelled."""
        task = self._running.get(job_id)
        if task is not None:
            task.cancel()

    async def run(self) -> None:
        """Claim and work jobs until cancelled; starts once the runners answer, so that a
        job resumed at startup does not fail its images on runners still starting."""
        while not await self.health.ready():
            await asyncio.sleep(1.0)
        logger.info("job runner started", extra={"owner": self.owner})
        while True:
            self._wake.clear()
            try:
                await self._expire()
                while len(self._running) < self.max_running_jobs:
                    job = await self.store.claim(self.owner, self.lease_seconds)
                    if job is None:
                        break
                    self._running[job.job_id] = asyncio.create_task(self._work(job))
            except Exception:
                logger.exception("job runner: store unavailable, retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_seconds)

    async def stop(self) -> None:
        """Stop every job here and release its lease, so a restart resumes it at once."""
        tasks = list(self._running.items())
        for _, task in tasks:
            task.cancel()
        await asyncio.gather(*(task for _, task in tasks), return_exceptions=True)
        for job_id, _ in tasks:
            await self.store.release(job_id, self.owner)

    async def _work(self, job: StoredJob) -> None:
        job_id = job.job_id
        logger.info("job claimed", extra={"job_id": job_id, "done": job.done, "total": job.total})
        lease = asyncio.create_task(self._keep_lease(job_id, asyncio.current_task()))
        try:
            flags = AnalysisFlags.model_validate(job.options)
            if missing := await self.health.missing(required_models(flags)):
                error = f"model not loaded: {', '.join(missing)}; see /health"
                await self.store.finish(job_id, "failed", error=error)
                return
            for attempt in range(1, PASSES + 1):
                if not await self._pass(job_id, flags, final=attempt == PASSES):
                    break
                await asyncio.sleep(RETRY_AFTER_SECONDS * attempt)
            culled = await self._cull(job) if job.kind == "cull" else None
            if await self.store.finish(job_id, "done", cull=culled):
                logger.info("job done", extra={"job_id": job_id})
        except asyncio.CancelledError:
            logger.info("job stopped here", extra={"job_id": job_id})
            raise
        except ApiError as exc:  # the cull refused the analyses (e.g. a weight without signal)
            logger.warning("job failed", extra={"job_id": job_id, "error": exc.code})
            await self.store.finish(job_id, "failed", error=f"{exc.code}: {exc.message}")
        except Exception:
            logger.exception("job failed", extra={"job_id": job_id})
            await self.store.finish(job_id, "failed", error="internal error while running the job")
        finally:
            lease.cancel()
            self._running.pop(job_id, None)
            self.wake()

    async def _cull(self, job: StoredJob) -> dict[str, Any]:
        """The /v1/cull answer over the job's analyses, with the job's cull options."""
        results = await self.store.results(job.job_id, 0, job.total)
        analyses = [ImageAnalysisResult.model_validate(r) for r in results]
        req = CullRequest.model_validate({**job.options, "analyses": analyses})
        response = await cull_request(req, self.analyzer, self.settings)
        return response.model_dump(mode="json")

    async def _pass(self, job_id: str, flags: AnalysisFlags, *, final: bool) -> bool:
        """Analyse every image still without a result; True if some were left for later."""
        left: list[int] = []
        async with asyncio.TaskGroup() as images:
            after = -1
            while chunk := await self.store.pending(job_id, after, PENDING_CHUNK):
                for pending in chunk:
                    await self.throttle.acquire()
                    images.create_task(self._analyze(job_id, pending, flags, final, left))
                after = chunk[-1].index
        return bool(left)

    async def _analyze(
        self,
        job_id: str,
        pending: PendingImage,
        flags: AnalysisFlags,
        final: bool,
        left: list[int],
    ) -> None:
        try:
            image = ImageInput.model_validate(pending.image)
            result = await self.analyzer.analyze_isolated(image, flags)
            if result.error_code in TRANSIENT_ERRORS and not final:
                left.append(pending.index)  # a runner restarting: try this image again later
                return
            await self.store.record(
                job_id, pending.index, result.model_dump(mode="json"), result.error is not None
            )
        finally:
            self.throttle.release()

    async def _keep_lease(self, job_id: str, work: asyncio.Task[None] | None) -> None:
        """Renew the lease; stop the work once the job is no longer ours (cancelled through
        another replica, or taken over after we stalled past the lease)."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            if not await self.store.renew(job_id, self.owner, self.lease_seconds):
                if work is not None:
                    work.cancel()
                return

    async def _expire(self) -> None:
        now = time.time()
        if now - self._last_expiry < min(EXPIRE_EVERY_SECONDS, self.retention_seconds / 4):
            return
        self._last_expiry = now
        if expired := await self.store.expire(now - self.retention_seconds):
            logger.info("jobs expired", extra={"count": expired})
