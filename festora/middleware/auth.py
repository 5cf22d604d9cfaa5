"""API-key check: `X-Api-Key: <key>` or `Authorization: Bearer <key>`, compared in constant time."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from festora.errors import error_response
from festora.middleware import is_guarded


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, *, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_guarded(scope) or self._accepts(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401,
            "unauthorized",
            "missing or invalid API key: send it in the X-Api-Key header",
            headers={"WWW-Authenticate": "ApiKey"},
        )
        await response(scope, receive, send)

    def _accepts(self, headers: Headers) -> bool:
        offered = headers.get("x-api-key")
        if offered is None:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            offered = token.strip() if scheme.lower() == "bearer" else ""
        return hmac.compare_digest(offered.encode(), self._key)
