"""Give every /v1 error the documented envelope, including the ones BentoML answers itself.

BentoML rejects a body that fails pydantic validation with 400 and a body of its own, and some
4xx bodies as JSON arrays; the v1 contract says 422 `validation_error` and
`{"error", "message", "detail"}`. Our own handlers already answer in the envelope and pass through.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from festora.errors import error_response

_CODES = {
    400: "validation_error",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "service_unavailable",
    504: "timeout",
}


def is_envelope(body: Any) -> bool:
    return isinstance(body, dict) and isinstance(body.get("error"), str) and "message" in body


def to_envelope(status: int, body: Any) -> tuple[int, str, str, Any]:
    """(status, code, message, detail) for an error body that is not in the envelope."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    text = body.get("error") if isinstance(body, dict) else None
    detail = body.get("detail") if isinstance(body, dict) else None
    if status == 400:
        return 422, "validation_error", "request body failed validation", _field_errors(detail)
    if status >= 500 and status not in _CODES:
        return status, "internal_error", "an unexpected error occurred", None
    code = _CODES.get(status, HTTPStatus(status).phrase.lower().replace(" ", "_"))
    return status, code, str(text or HTTPStatus(status).phrase), None


def _field_errors(detail: Any) -> Any:
    if not isinstance(detail, list):
        return detail
    return [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        if isinstance(e, dict)
        else e
        for e in detail
    ]


class ErrorEnvelopeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return

        start: Message | None = None
        chunks: list[bytes] = []

        async def rewriting_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_error(start, b"".join(chunks), scope, receive, send)

        await self.app(scope, receive, rewriting_send)

    @staticmethod
    async def _send_error(
        start: Message, raw: bytes, scope: Scope, receive: Receive, send: Send
    ) -> None:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = {"error": raw[:200].decode("utf-8", "replace")}
        if is_envelope(body):
            await send(start)
            await send({"type": "http.response.body", "body": raw})
            return
        status, code, message, detail = to_envelope(start["status"], body)
        kept = {
            k.decode().lower(): v.decode()
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-length", b"content-type")
        }
        await error_response(status, code, message, detail, kept)(scope, receive, send)
