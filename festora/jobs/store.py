"""The job store interface: everything a job is, so that any process can pick it up.

A job's images, its per-image results and its progress live in the store, never only in
memory: a restarted service (or another replica, with a shared store such as Redis) continues
from what the store says. Results are recorded once per image (the first write wins), so a job
that two workers touched still counts every image once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

JobKind = Literal["analyze", "cull"]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
ACTIVE: tuple[JobStatus, ...] = ("queued", "running")


@dataclass(frozen=True)
class StoredJob:
    job_id: str
    kind: JobKind
    status: JobStatus
    options: dict[str, Any]  # the request without its images: flags and cull options
    total: int
    done: int  # images finished, failed ones included
    failed: int
    created_at: float  # Unix time
    started_at: float | None
    finished_at: float | None
    error: str | None


@dataclass(frozen=True)
class PendingImage:
    index: int  # position in the request
    image: dict[str, Any]  # the ImageInput as sent


class JobStore(Protocol):
    async def create(
        self, job_id: str, kind: JobKind, options: dict[str, Any], images: list[dict[str, Any]]
    ) -> StoredJob: ...

    async def get(self, job_id: str) -> StoredJob | None: ...

    async def claim(self, owner: str, lease_seconds: float) -> StoredJob | None:
        """Take the oldest active job nobody holds a live lease on; it becomes `running`."""

    async def renew(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        """Extend `owner`'s lease; False once the job is no longer active or no longer ours."""

    async def release(self, job_id: str, owner: str) -> None:
        """Give up the lease early (on shutdown), so that the job is picked up at once."""

    async def pending(self, job_id: str, after: int, limit: int) -> list[PendingImage]:
        """Images without a result, in input order, with index > `after`."""

    async def record(self, job_id: str, index: int, result: dict[str, Any], failed: bool) -> None:
        """Store one image's result and count it, unless it already has one."""

    async def results(self, job_id: str, offset: int, limit: int) -> list[dict[str, Any] | None]:
        """Results of the images at positions offset..offset+limit-1; None where pending."""

    async def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None = None,
        cull: dict[str, Any] | None = None,
    ) -> bool:
        """End an active job; False when it had already ended (e.g. cancelled meanwhile)."""

    async def cull(self, job_id: str) -> dict[str, Any] | None: ...

    async def expire(self, finished_before: float) -> int:
        """Delete jobs that ended before this time; returns how many."""
