"""What the API service knows of its runners: each one's `ModelStatus`, the /health verdict,
readiness, and the 503 a route answers when a model it needs is not loaded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from festora.config import Settings
from festora.errors import ModelNotReady
from festora.schemas import HealthResponse, ModelStatus

STATUS_TIMEOUT_SECONDS = 3.0
UNREACHABLE = "runner unavailable"


def is_reachable(status: ModelStatus) -> bool:
    return not (status.error or "").startswith(UNREACHABLE)


class RunnerHealth:
    def __init__(self, runners: Callable[[], dict[str, Any]], settings: Settings) -> None:
        """`runners` returns the runner clients by /health name (resolved lazily: BentoML
        wires a service's dependencies after its `__init__`)."""
        self._runners = runners
        self._settings = settings
        self._loaded: dict[str, ModelStatus] = {}
        self.started = time.monotonic()

    async def statuses(self) -> dict[str, ModelStatus]:
        """Every runner's status; once a model reports loaded it is not asked again."""

        async def ask(name: str, runner: Any) -> ModelStatus:
            if name in self._loaded:
                return self._loaded[name]
            try:
                with anyio.fail_after(STATUS_TIMEOUT_SECONDS):
                    status = ModelStatus.model_validate(await runner.to_async.status())
            except Exception as exc:  # noqa: BLE001 - an unreachable runner is a status
                return ModelStatus(name=name, loaded=False, error=f"{UNREACHABLE}: {exc}")
            if status.loaded:
                self._loaded[name] = status
            return status

        runners = self._runners()
        found = await asyncio.gather(*(ask(n, r) for n, r in runners.items()))
        return dict(zip(runners, found, strict=True))

    async def missing(self, needed: Sequence[str]) -> list[str]:
        if not needed:
            return []
        statuses = await self.statuses()
        return [name for name in needed if not statuses[name].loaded]

    async def require(self, needed: Sequence[str]) -> None:
        """Raise ModelNotReady (503) naming the needed models that are not loaded."""
        missing = await self.missing(needed)
        if missing:
            raise ModelNotReady(
                f"model not loaded: {', '.join(missing)}; see /health", detail={"models": missing}
            )

    async def report(self) -> HealthResponse:
        statuses = list((await self.statuses()).values())
        if not any(map(is_reachable, statuses)):
            overall = "unhealthy"
        elif all(s.loaded and s.weights == "real" for s in statuses):
            overall = "ok"
        else:
            overall = "degraded"
        return HealthResponse(
            status=overall,
            version=self._settings.app_version,
            environment=self._settings.environment,
            uptime_seconds=round(time.monotonic() - self.started, 3),
            models=statuses,
        )

    async def ready(self) -> bool:
        return all(map(is_reachable, (await self.statuses()).values()))
