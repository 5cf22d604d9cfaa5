"""ASGI middleware of the API service, outermost first: body cap, auth, rate limit, load
shedding, envelope."""

from __future__ import annotations

OPEN_PATHS = frozenset({"/health", "/v1/health"})


def is_protected(path: str) -> bool:
    """Only the /v1 API is guarded; health, readiness, metrics and docs stay open."""
    return path.startswith("/v1/") and path not in OPEN_PATHS
