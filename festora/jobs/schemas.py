"""The jobs wire format (API.md, "Jobs: whole events")."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from festora.cull.schemas import CullOptions
from festora.jobs.store import JobKind, JobStatus, StoredJob
from festora.schemas import AnalysisFlags, ImageAnalysisResult, ImageInput

RESULTS_PAGE_MAX = 1000


class JobRequest(AnalysisFlags, CullOptions):
    """Kind `cull` culls the job's analyses with the cull options once every image is done."""

    kind: JobKind = "analyze"
    # The upper bound is JOB_MAX_IMAGES, checked by the service (422 job_too_large).
    images: list[ImageInput] = Field(..., min_length=1)


class JobCreated(BaseModel):
    job_id: str
    status: JobStatus
    total: int


class JobProgress(BaseModel):
    total: int
    done: int = Field(description="Images finished, failed ones included")
    failed: int


class JobState(BaseModel):
    job_id: str
    kind: JobKind
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: JobProgress
    error: str | None

    @classmethod
    def of(cls, job: StoredJob) -> JobState:
        return cls(
            job_id=job.job_id,
            kind=job.kind,
            status=job.status,
            created_at=datetime.fromtimestamp(job.created_at, UTC),
            started_at=_utc(job.started_at),
            finished_at=_utc(job.finished_at),
            progress=JobProgress(total=job.total, done=job.done, failed=job.failed),
            error=job.error,
        )


class JobResultsQuery(BaseModel):
    offset: int = Field(0, ge=0)
    limit: int = Field(100, ge=1, le=RESULTS_PAGE_MAX)


class JobResultsPage(BaseModel):
    total: int
    offset: int
    results: list[ImageAnalysisResult | None] = Field(
        description="Input order, from `offset`; null for an image not finished yet"
    )


def _utc(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
