"""What the API service knows of its runners: each one's `ModelStatus`, the /health verdict,
readiness, the 503 a route answers when a model it needs is not there, and calls to them that
survive a runner restarting.

A runner can die and be restarted by BentoML at any time, so nothing it said is believed for
long: each answer stands for STATUS_TTL_SECONDS, concurrent askers share one question, and a
failed call to a runner (`forget`) makes the next caller ask again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import anyio
from bentoml.exceptions import ServiceUnavailable

from festora.config import Settings
from festora.errors import ModelNotReady, ModelUnavailable, Overloaded
from festora.schemas import HealthResponse, ModelStatus

logger = logging.getLogger("festora.health")

STATUS_TIMEOUT_SECONDS = 3.0
STATUS_TTL_SECONDS = 2.0
# What a caller is told to wait when a runner is down: about what a runner takes to restart.
RETRY_AFTER_SECONDS = 10
# Before a call is sent again: lets the event loop drop the connections a dead runner closed.
RECONNECT_DELAY_SECONDS = 0.2
UNREACHABLE = "runner unavailable"
# Under the 4 s the API's pooled runner connections are kept idle (client_keepalive).
HOLD_INTERVAL_SECONDS = 2.0


def is_reachable(status: ModelStatus) -> bool:
    return not (status.error or "").startswith(UNREACHABLE)


def _down(name: str, exc: BaseException) -> ModelStatus:
    reason = str(exc) or type(exc).__name__
    return ModelStatus(name=name, loaded=False, error=f"{UNREACHABLE}: {reason}")


class RunnerHealth:
    def __init__(self, runners: Callable[[], dict[str, Any]], settings: Settings) -> None:
        """`runners` returns the runner clients by /health name (resolved lazily: BentoML
        wires a service's dependencies after its `__init__`)."""
        self._runners = runners
        self._settings = settings
        self._answers: dict[str, tuple[float, ModelStatus]] = {}
        self._asking: dict[str, asyncio.Future[ModelStatus]] = {}
        self.started = time.monotonic()

    async def _ask(self, name: str, runner: Any) -> ModelStatus:
        try:
            status = await self._query(runner)
        except aiohttp.ClientConnectionError:  # a pooled connection to a runner that restarted
            status = await self._query_or_down(name, runner)
        except Exception as exc:  # noqa: BLE001 - an unreachable runner is a status
            status = _down(name, exc)
        self._answers[name] = (time.monotonic(), status)
        return status

    async def _query_or_down(self, name: str, runner: Any) -> ModelStatus:
        await asyncio.sleep(RECONNECT_DELAY_SECONDS)
        try:
            return await self._query(runner)
        except Exception as exc:  # noqa: BLE001 - an unreachable runner is a status
            return _down(name, exc)

    @staticmethod
    async def _query(runner: Any) -> ModelStatus:
        with anyio.fail_after(STATUS_TIMEOUT_SECONDS):
            return ModelStatus.model_validate(await runner.to_async.status())

    async def status(self, name: str) -> ModelStatus:
        """The runner's status, at most STATUS_TTL_SECONDS old."""
        answer = self._answers.get(name)
        if answer is not None and time.monotonic() - answer[0] < STATUS_TTL_SECONDS:
            return answer[1]
        asking = self._asking.get(name)
        if asking is None:
            asking = asyncio.ensure_future(self._ask(name, self._runners()[name]))
            self._asking[name] = asking
            asking.add_done_callback(lambda _: self._asking.pop(name, None))
        return await asyncio.shield(asking)

    def forget(self, name: str) -> None:
        """A call to this runner failed: the next caller asks it again."""
        self._answers.pop(name, None)

    async def statuses(self) -> dict[str, ModelStatus]:
        names = list(self._runners())
        found = await asyncio.gather(*(self.status(n) for n in names))
        return dict(zip(names, found, strict=True))

    async def missing(self, needed: Sequence[str]) -> dict[str, ModelStatus]:
        """The needed models that are not loaded, with their statuses."""
        if not needed:
            return {}
        found = await asyncio.gather(*(self.status(n) for n in needed))
        return {s.name: s for s in found if not s.loaded}

    async def require(self, needed: Sequence[str]) -> None:
        """Raise ModelUnavailable (503, Retry-After) if a needed runner is down, or
        ModelNotReady (503) naming the needed models that are not loaded."""
        missing = await self.missing(needed)
        if not missing:
            return
        down = [name for name, s in missing.items() if not is_reachable(s)]
        if down:
            raise ModelUnavailable(
                f"model unavailable: {', '.join(down)} (restarting); retry shortly",
                retry_after=RETRY_AFTER_SECONDS,
                detail={"models": down},
            )
        raise ModelNotReady(
            f"model not loaded: {', '.join(missing)}; see /health", detail={"models": [*missing]}
        )

    async def call(self, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """`call()` to the runner `name`, surviving a runner restart (`_reconnecting`). A runner
        past its latency budget (its batch queue refuses, or it does not answer in its timeout)
        makes the caller's answer a 503 overloaded to retry."""
        try:
            return await self._reconnecting(name, call)
        except (ServiceUnavailable, TimeoutError) as exc:
            logger.warning("runner overloaded", extra={"model": name, "error": repr(exc)})
            raise Overloaded(
                f"model overloaded: {name} cannot take more work in time; retry shortly",
                retry_after=RETRY_AFTER_SECONDS,
                detail={"models": [name]},
            ) from exc

    async def _reconnecting(self, name: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Every runner verb is idempotent, so a call cut off by its runner dying (or
        restarting) is sent once more on a fresh connection; if that fails too the caller gets
        a 503 model_unavailable to retry."""
        try:
            return await call()
        except aiohttp.ClientConnectionError as exc:
            self.forget(name)
            logger.warning("runner call failed", extra={"model": name, "error": repr(exc)})
        await asyncio.sleep(RECONNECT_DELAY_SECONDS)
        try:
            return await call()
        except aiohttp.ClientConnectionError as exc:
            self.forget(name)
            logger.warning("runner unavailable", extra={"model": name, "error": repr(exc)})
            raise ModelUnavailable(
                f"model unavailable: {name} (restarting); retry shortly",
                retry_after=RETRY_AFTER_SECONDS,
                detail={"models": [name]},
            ) from exc

    async def hold_runners(self) -> None:
        """Keep every runner serving while this worker drains after SIGTERM: a status call to
        each every HOLD_INTERVAL_SECONDS keeps one of our connections to it in use, and a
        runner stops only once it has none (runners/serving/drain.py)."""
        while True:
            runners = self._runners().values()
            await asyncio.gather(*(self._query(r) for r in runners), return_exceptions=True)
            await asyncio.sleep(HOLD_INTERVAL_SECONDS)

    async def input_size(self, name: str) -> int | None:
        """The side of the square images this runner takes, as it reports it."""
        return (await self.status(name)).input_size

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
