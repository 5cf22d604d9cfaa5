"""The job store in Redis (REDIS_URL), shared by every API replica: a job submitted through one
replica is readable, cancellable and resumable through any other.

Per job: a hash of its fields, a hash of the inputs still pending, a sorted set of their
indices and a hash of results; two sorted sets list the active jobs (by creation, for claims)
and the finished ones (by end, for expiry). Every step that reads then writes (claim, renew,
record, finish) is one Lua script, so replicas never both claim a job or count an image twice;
leases run on Redis's clock. Durability is Redis's own: run it with an append-only file.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from festora.jobs.store import JobKind, JobStatus, PendingImage, StoredJob
from festora.shared_state import KEY_PREFIX

if TYPE_CHECKING:
    from redis.asyncio import Redis

ACTIVE_JOBS = f"{KEY_PREFIX}jobs:active"
FINISHED_JOBS = f"{KEY_PREFIX}jobs:finished"

# The Lua below builds a job's keys from this prefix: KEYS[1] is always the job's hash.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""
_CLAIM = (
    _NOW
    + """
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[3] .. id
  local job = redis.call('HMGET', key, 'status', 'lease_until')
  local free = job[2] == false or tonumber(job[2]) < now
  if (job[1] == 'queued' or job[1] == 'running') and free then
    redis.call('HSET', key, 'status', 'running', 'lease_owner', ARGV[1],
               'lease_until', tostring(now + tonumber(ARGV[2])))
    redis.call('HSETNX', key, 'started_at', tostring(now))
    return id
  end
end
return false
"""
)
_RENEW = (
    _NOW
    + """
local job = redis.call('HMGET', KEYS[1], 'status', 'lease_owner')
if job[1] ~= 'running' or job[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', tostring(now + tonumber(ARGV[2])))
return 1
"""
)
_RELEASE = """
if redis.call('HGET', KEYS[1], 'lease_owner') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_until')
end
return 1
"""
# KEYS: job, results, inputs, pending; ARGV: index, result, failed (0/1)
_RECORD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'done', 1)
redis.call('HINCRBY', KEYS[1], 'failed', tonumber(ARGV[3]))
return 1
"""
# KEYS: job, active, finished; ARGV: job_id, status, error, cull
_FINISH = (
    _NOW
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', tostring(now))
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'cull', ARGV[4]) end
redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_until')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now, ARGV[1])
return 1
"""
)
_EXPIRE = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for _, id in ipairs(gone) do
  local key = ARGV[2] .. id
  redis.call('DEL', key, key .. ':inputs', key .. ':pending', key .. ':results')
  redis.call('ZREM', KEYS[1], id)
end
return #gone
"""


class RedisJobStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._record = redis.register_script(_RECORD)
        self._finish = redis.register_script(_FINISH)
        self._expire = redis.register_script(_EXPIRE)

    @staticmethod
    def _key(job_id: str) -> str:
        return f"{KEY_PREFIX}job:{job_id}"

    async def create(
        self, job_id: str, kind: JobKind, options: dict[str, Any], images: list[dict[str, Any]]
    ) -> StoredJob:
        key, created = self._key(job_id), time.time()
        async with self._redis.pipeline(transaction=True) as tx:
            tx.hset(
                key,
                mapping={
                    "kind": kind,
                    "status": "queued",
                    "options": json.dumps(options),
                    "total": len(images),
                    "done": 0,
                    "failed": 0,
                    "created_at": repr(created),
                },
            )
            if images:
                tx.hset(
                    f"{key}:inputs", mapping={str(i): json.dumps(im) for i, im in enumerate(images)}
                )
                tx.zadd(f"{key}:pending", {str(i): i for i in range(len(images))})
            tx.zadd(ACTIVE_JOBS, {job_id: created})
            await tx.execute()
        job = await self.get(job_id)
        assert job is not None
        return job

    async def get(self, job_id: str) -> StoredJob | None:
        fields = await self._redis.hgetall(self._key(job_id))
        return _job(job_id, fields) if fields else None

    async def claim(self, owner: str, lease_seconds: float) -> StoredJob | None:
        prefix = f"{KEY_PREFIX}job:"
        job_id = await self._claim(keys=[ACTIVE_JOBS], args=[owner, lease_seconds, prefix])
        return None if job_id is None else await self.get(job_id.decode())

    async def renew(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        return bool(await self._renew(keys=[self._key(job_id)], args=[owner, lease_seconds]))

    async def release(self, job_id: str, owner: str) -> None:
        await self._release(keys=[self._key(job_id)], args=[owner])

    async def pending(self, job_id: str, after: int, limit: int) -> list[PendingImage]:
        key = self._key(job_id)
        indices = await self._redis.zrangebyscore(
            f"{key}:pending", f"({after}", "+inf", start=0, num=limit
        )
        if not indices:
            return []
        inputs = await self._redis.hmget(f"{key}:inputs", indices)
        return [
            PendingImage(int(i), json.loads(image))
            for i, image in zip(indices, inputs, strict=True)
            if image is not None
        ]

    async def record(self, job_id: str, index: int, result: dict[str, Any], failed: bool) -> None:
        key = self._key(job_id)
        await self._record(
            keys=[key, f"{key}:results", f"{key}:inputs", f"{key}:pending"],
            args=[index, json.dumps(result), int(failed)],
        )

    async def results(self, job_id: str, offset: int, limit: int) -> list[dict[str, Any] | None]:
        key = self._key(job_id)
        total = int(await self._redis.hget(key, "total") or 0)
        indices = [str(i) for i in range(offset, min(offset + limit, total))]
        if not indices:
            return []
        found = await self._redis.hmget(f"{key}:results", indices)
        return [json.loads(r) if r is not None else None for r in found]

    async def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        error: str | None = None,
        cull: dict[str, Any] | None = None,
    ) -> bool:
        keys = [self._key(job_id), ACTIVE_JOBS, FINISHED_JOBS]
        args = [job_id, status, error or "", json.dumps(cull) if cull else ""]
        return bool(await self._finish(keys=keys, args=args))

    async def cull(self, job_id: str) -> dict[str, Any] | None:
        raw = await self._redis.hget(self._key(job_id), "cull")
        return json.loads(raw) if raw else None

    async def expire(self, finished_before: float) -> int:
        prefix = f"{KEY_PREFIX}job:"
        return int(await self._expire(keys=[FINISHED_JOBS], args=[finished_before, prefix]))


def _job(job_id: str, raw: dict[bytes, bytes]) -> StoredJob:
    fields = {k.decode(): v.decode() for k, v in raw.items()}

    def moment(name: str) -> float | None:
        return float(fields[name]) if name in fields else None

    return StoredJob(
        job_id=job_id,
        kind=fields["kind"],  # type: ignore[arg-type]
        status=fields["status"],  # type: ignore[arg-type]
        options=json.loads(fields["options"]),
        total=int(fields["total"]),
        done=int(fields["done"]),
        failed=int(fields["failed"]),
        created_at=float(fields["created_at"]),
        started_at=moment("started_at"),
        finished_at=moment("finished_at"),
        error=fields.get("error"),
    )
