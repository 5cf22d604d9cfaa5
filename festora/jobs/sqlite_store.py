"""The embedded job store: one SQLite file in JOBS_DIR, no server needed.

WAL journaling with `synchronous=NORMAL` keeps every committed result through a crash of the
process (SIGKILL included; only a power cut may lose the last commits). Several processes may
share the file on one machine: claims take SQLite's write lock, and leases say who works on
what. For several machines, implement `JobStore` on a shared store (e.g. Redis) instead.
SQLite calls block, so each runs in a worker thread behind one lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio

from festora.jobs.store import JobKind, JobStatus, PendingImage, StoredJob

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    options TEXT NOT NULL,
    total INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    cull TEXT,
    lease_owner TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS jobs_active ON jobs (status, created_at);
CREATE TABLE IF NOT EXISTS images (
    job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    input TEXT,
    result TEXT,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
"""
_JOB_COLUMNS = (
    "job_id, kind, status, options, total, done, failed, created_at, started_at, finished_at, error"
)


class SqliteJobStore:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "jobs.sqlite3"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._db)

        return await anyio.to_thread.run_sync(locked)

    async def create(
        self, job_id: str, kind: JobKind, options: dict[str, Any], images: list[dict[str, Any]]
    ) -> StoredJob:
        def create(db: sqlite3.Connection) -> None:
            with _transaction(db):
                db.execute(
                    "INSERT INTO jobs (job_id, kind, status, options, total, created_at)"
                    " VALUES (?, ?, 'queued', ?, ?, ?)",
                    (job_id, kind, json.dumps(options), len(images), time.time()),
                )
                db.executemany(
                    "INSERT INTO images (job_id, idx, input) VALUES (?, ?, ?)",
                    ((job_id, i, json.dumps(image)) for i, image in enumerate(images)),
                )

        await self._run(create)
        job = await self.get(job_id)
        assert job is not None
        return job

    async def get(self, job_id: str) -> StoredJob | None:
        def get(db: sqlite3.Connection) -> StoredJob | None:
            row = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,))
            return _job(row.fetchone())

        return await self._run(get)

    async def claim(self, owner: str, lease_seconds: float) -> StoredJob | None:
        def claim(db: sqlite3.Connection) -> StoredJob | None:
            now = time.time()
            with _transaction(db):
                row = db.execute(
                    "UPDATE jobs SET status = 'running', lease_owner = ?, lease_until = ?,"
                    " started_at = COALESCE(started_at, ?)"
                    " WHERE job_id = (SELECT job_id FROM jobs"
                    "   WHERE status IN ('queued', 'running')"
                    "   AND (lease_until IS NULL OR lease_until < ?)"
                    "   ORDER BY created_at LIMIT 1)"
                    f" RETURNING {_JOB_COLUMNS}",
                    (owner, now + lease_seconds, now, now),
                ).fetchone()
            return _job(row)

        return await self._run(claim)

    async def renew(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        def renew(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE jobs SET lease_until = ? WHERE job_id = ? AND lease_owner = ?"
                " AND status = 'running'",
                (time.time() + lease_seconds, job_id, owner),
            )
            return cursor.rowcount == 1

        return await self._run(renew)

    async def release(self, job_id: str, owner: str) -> None:
        def release(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_until = NULL"
                " WHERE job_id = ? AND lease_owner = ?",
                (job_id, owner),
            )

        await self._run(release)

    async def pending(self, job_id: str, after: int, limit: int) -> list[PendingImage]:
        def pending(db: sqlite3.Connection) -> list[PendingImage]:
            rows = db.execute(
                "SELECT idx, input FROM images WHERE job_id = ? AND result IS NULL AND idx > ?"
                " ORDER BY idx LIMIT ?",
                (job_id, after, limit),
            )
            return [PendingImage(index, json.loads(image)) for index, image in rows]

        return await self._run(pending)

    async def record(self, job_id: str, index: int, result: dict[str, Any], failed: bool) -> None:
        def record(db: sqlite3.Connection) -> None:
            with _transaction(db):
                # The input is no longer needed: a base64 image stops taking disk space.
                cursor = db.execute(
                    "UPDATE images SET result = ?, input = NULL"
                    " WHERE job_id = ? AND idx = ? AND result IS NULL",
                    (json.dumps(result), job_id, index),
                )
                if cursor.rowcount == 1:
                    db.execute(
                        "UPDATE jobs SET done = done + 1, failed = failed + ? WHERE job_id = ?",
                        (int(failed), job_id),
                    )

        await self._run(record)

    async def results(self, job_id: str, offset: int, limit: int) -> list[dict[str, Any] | None]:
        def results(db: sqlite3.Connection) -> list[dict[str, Any] | None]:
            rows = db.execute(
                "SELECT result FROM images WHERE job_id = ? AND idx >= ? AND idx < ? ORDER BY idx",
                (job_id, offset, offset + limit),
            )
            return [json.loads(result) if result is not None else None for (result,) in rows]

        return await self._run(results)

    async def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None = None,
        cull: dict[str, Any] | None = None,
    ) -> bool:
        def finish(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE jobs SET status = ?, error = ?, cull = ?, finished_at = ?,"
                " lease_owner = NULL, lease_until = NULL"
                " WHERE job_id = ? AND status IN ('queued', 'running')",
                (status, error, json.dumps(cull) if cull else None, time.time(), job_id),
            )
            return cursor.rowcount == 1

        return await self._run(finish)

    async def cull(self, job_id: str) -> dict[str, Any] | None:
        def cull(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute("SELECT cull FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            return json.loads(row[0]) if row and row[0] else None

        return await self._run(cull)

    async def expire(self, finished_before: float) -> int:
        def expire(db: sqlite3.Connection) -> int:
            with _transaction(db):
                cursor = db.execute(
                    "DELETE FROM jobs WHERE status NOT IN ('queued', 'running')"
                    " AND finished_at < ?",
                    (finished_before,),
                )
            return cursor.rowcount

        return await self._run(expire)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE takes the write lock up front, so two processes never both read a job
    as free before claiming it."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _job(row: tuple[Any, ...] | None) -> StoredJob | None:
    if row is None:
        return None
    (job_id, kind, status, options, total, done, failed, created, started, finished, error) = row
    return StoredJob(
        job_id=job_id,
        kind=kind,
        status=status,
        options=json.loads(options),
        total=total,
        done=done,
        failed=failed,
        created_at=created,
        started_at=started,
        finished_at=finished,
        error=error,
    )
