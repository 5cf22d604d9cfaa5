"""Load shedding (festora/middleware/overload.py) on a real ASGI app, without a server."""

from __future__ import annotations

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from festora.middleware.overload import ConcurrencyLimitMiddleware


def test_requests_over_the_limit_are_shed_at_once_and_health_is_never_limited() -> None:
    release = asyncio.Event()

    async def slow(request: Request) -> JSONResponse:
        await release.wait()
        return JSONResponse({"ok": True})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/v1/analyze", slow, methods=["POST"]),
            Route("/health", health),
            Route("/v1/health", health),
        ]
    )
    limited = ConcurrencyLimitMiddleware(app, limit=2, retry_after=3)

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=limited)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            working = [asyncio.create_task(client.post("/v1/analyze")) for _ in range(2)]
            while limited.active < 2:
                await asyncio.sleep(0.01)
            shed = await client.post("/v1/analyze")
            assert shed.status_code == 503
            assert shed.headers["retry-after"] == "3"
            assert shed.json()["error"] == "overloaded"
            for path in ("/health", "/v1/health"):
                assert (await client.get(path)).status_code == 200
            release.set()
            assert [r.status_code for r in await asyncio.gather(*working)] == [200, 200]
            assert limited.active == 0
            assert (await client.post("/v1/analyze")).status_code == 200  # capacity is back

    asyncio.run(scenario())
