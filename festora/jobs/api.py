"""What the /v1/jobs routes do, over a store and the local runner."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from festora.analysis import ImageAnalyzer
from festora.config import Settings
from festora.cull.request import image_names
from festora.cull.shoot import CullError, check_ids
from festora.errors import ApiError, ValidationFailed
from festora.health import RunnerHealth
from festora.jobs.redis_store import RedisJobStore
from festora.jobs.runner import JobRunner
from festora.jobs.schemas import (
    JobCreated,
    JobRequest,
    JobResultsPage,
    JobResultsQuery,
    JobState,
)
from festora.jobs.sqlite_store import SqliteJobStore
from festora.jobs.store import ACTIVE, JobStore, StoredJob
from festora.jobs.throttle import JobThrottle
from festora.schemas import ImageInput

if TYPE_CHECKING:
    from redis.asyncio import Redis


class JobNotFound(ApiError):
    status_code = 404
    code = "job_not_found"


def open_jobs(
    settings: Settings,
    analyzer: ImageAnalyzer,
    health: RunnerHealth,
    throttle: JobThrottle,
    shared: Redis | None = None,
) -> JobsApi:
    """The jobs of this process and a runner working them: in Redis when the replicas share
    one (`shared`, from REDIS_URL), else in the embedded store in JOBS_DIR."""
    store: JobStore = (
        RedisJobStore(shared) if shared is not None else SqliteJobStore(settings.jobs_dir)
    )
    runner = JobRunner(
        store,
        analyzer,
        health,
        throttle,
        settings,
        max_running_jobs=settings.job_max_running,
        lease_seconds=settings.job_lease_seconds,
        retention_seconds=settings.job_retention_seconds,
    )
    return JobsApi(store, runner, max_images=settings.job_max_images)


class JobsApi:
    def __init__(self, store: JobStore, runner: JobRunner, *, max_images: int) -> None:
        self.store = store
        self.runner = runner
        self.max_images = max_images

    async def create(self, req: JobRequest, job_id: str | None = None) -> JobCreated:
        if len(req.images) > self.max_images:
            raise ApiError(
                f"{len(req.images)} images sent; at most {self.max_images} per job",
                status_code=422,
                code="job_too_large",
                detail={"max_images": self.max_images, "received": len(req.images)},
            )
        images = req.images
        if req.kind == "cull":
            images = self._named_for_cull(req)
        job = await self.store.create(
            job_id or uuid.uuid4().hex,
            req.kind,
            req.model_dump(mode="json", exclude={"images", "kind"}),
            [image.model_dump(mode="json", exclude_none=True) for image in images],
        )
        self.runner.wake()
        return JobCreated(job_id=job.job_id, status=job.status, total=job.total)

    @staticmethod
    def _named_for_cull(req: JobRequest) -> list[ImageInput]:
        """A cull names every image (as /v1/cull does); checked now, not after the analyses."""
        if not req.run_fingerprint:
            raise CullError("a cull job needs run_fingerprint (duplicates are found by hash)")
        names = image_names(req.images)
        check_ids(names)
        named = zip(req.images, names, strict=True)
        return [image.model_copy(update={"image_id": name}) for image, name in named]

    async def state(self, job_id: str) -> JobState:
        return JobState.of(await self._job(job_id))

    async def results(self, job_id: str, params: Mapping[str, str]) -> JobResultsPage:
        """One page of results; `params` are the query's `offset` and `limit`."""
        try:
            query = JobResultsQuery.model_validate(dict(params))
        except ValidationError as exc:
            raise ValidationFailed(
                "invalid offset or limit",
                detail=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()],
            ) from None
        job = await self._job(job_id)
        results = await self.store.results(job_id, query.offset, query.limit)
        return JobResultsPage.model_validate(
            {"total": job.total, "offset": query.offset, "results": results}
        )

    async def cull(self, job_id: str) -> dict[str, Any]:
        job = await self._job(job_id)
        if job.kind != "cull":
            raise ApiError("this job does not cull", status_code=409, code="not_a_cull_job")
        cull = await self.store.cull(job_id)
        if cull is None:
            raise ApiError(
                f"the cull is ready once the job is done; the job is {job.status}",
                status_code=409,
                code="job_not_done",
                detail={"status": job.status},
            )
        return cull

    async def cancel(self, job_id: str) -> JobState:
        await self._job(job_id)
        if await self.store.finish(job_id, "cancelled"):
            self.runner.cancel(job_id)
        return await self.state(job_id)

    async def wait(self, job_id: str, poll_seconds: float = 1.0) -> JobState:
        """The job's state once it has ended (however long that takes)."""
        while (job := await self._job(job_id)).status in ACTIVE:
            await asyncio.sleep(poll_seconds)
        return JobState.of(job)

    async def _job(self, job_id: str) -> StoredJob:
        job = await self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r} (never created, or expired)")
        return job
