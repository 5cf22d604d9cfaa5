"""ASGI middleware of the API service, outermost first: body cap, auth, rate limit, load
shedding, envelope."""

from __future__ import annotations

from starlette.types import Scope

OPEN_PATHS = frozenset({"/health", "/v1/health"})


def is_protected(path: str) -> bool:
    """Only the /v1 API is guarded; health, readiness, metrics and docs stay open."""
    return path.startswith("/v1/") and path not in OPEN_PATHS


def is_guarded(scope: Scope) -> bool:
    """A request the guards (auth, rate limit, load shedding) apply to: HTTP, a protected path,
    and not a CORS preflight (OPTIONS must reach the CORS layer unauthenticated)."""
    return scope["type"] == "http" and scope["method"] != "OPTIONS" and is_protected(scope["path"])
