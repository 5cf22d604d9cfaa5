"""The CLI's view of a running Festora service: analyse one photo, cull a set of analyses,
search a set of embeddings by text, tag them zero-shot.

Plain httpx on the documented v1 routes (the wire contract in API.md), so the CLI needs nothing
from the server's code (only the domain's packing of embeddings, `embeddings_base64`). One
`httpx.Client` is shared by every worker thread (it is thread-safe and pools connections).
"Busy" answers (429 rate_limited, 503 overloaded / model_unavailable) are retried after the
server's Retry-After, because a whole event is worth waiting for. A request cut off without a
response (an API worker killed mid-request: the supervisor starts a new one, and new
connections wait for it) or not connected is sent again, a few seconds apart: every route the
CLI calls is idempotent.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pybase64

from festora import __version__
from festora.embeddings import encode_base64

# Statuses that mean "try again later", with the server's Retry-After when it sends one.
_BUSY = frozenset({429, 503})
_MAX_ATTEMPTS = 8
_MAX_CONNECT_ATTEMPTS = 4
_MAX_WAIT_SECONDS = 30.0
# Per-image refusals: the photo itself is the problem, so it is recorded as failed for good.
PHOTO_ERRORS = frozenset({413, 422})


class ServiceError(Exception):
    """The service cannot do the work at all (unreachable, wrong key, server fault)."""


class Unauthorized(ServiceError):
    pass


class Unreachable(ServiceError):
    """No connection after a few tries: the run stops rather than fail every photo slowly."""


class PhotoRejected(Exception):
    """The service refused this photo (corrupt, not an image, too large): it stays failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class FestoraClient:
    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 300.0) -> None:
        headers = {"User-Agent": f"festora-cli/{__version__}"}
        if api_key:
            headers["X-Api-Key"] = api_key
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    def __enter__(self) -> FestoraClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def check_ready(self) -> None:
        """Fail early, before any photo is read, when the service is down or not ready."""
        try:
            response = self._http.get("/readyz", timeout=10.0)
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach the service at {self._http.base_url}: {exc}") from exc
        if response.status_code != 200:
            raise ServiceError(
                f"the service at {self._http.base_url} is not ready "
                f"(/readyz answered {response.status_code}); see its /health"
            )

    def analyze(self, data: bytes, image_id: str) -> dict[str, Any]:
        """The v1 `ImageAnalysisResult` of one photo, every analysis on."""
        body = {"image": {"data": pybase64.b64encode(data).decode(), "image_id": image_id}}
        return self._post("/v1/analyze", body)["result"]

    def cull(self, analyses: list[dict[str, Any]]) -> dict[str, Any]:
        """The /v1/cull response for analyses that each carry a unique `image_id`."""
        return self._post("/v1/cull", {"analyses": analyses})

    def search(
        self, query: str, embeddings: list[list[float]], image_ids: list[str], top_k: int
    ) -> list[dict[str, Any]]:
        """/v1/search: the `top_k` of these embeddings closest to the query, best first."""
        body = {"query": query, **_packed(embeddings, image_ids), "top_k": top_k}
        return self._post("/v1/search", body)["results"]

    def tags(
        self, embeddings: list[list[float]], image_ids: list[str], labels: list[str], top_k: int
    ) -> dict[str, list[dict[str, Any]]]:
        """/v1/tags: each image's `top_k` labels (`{"label", "probability"}`, most probable
        first), by image id."""
        body = {**_packed(embeddings, image_ids), "labels": labels, "top_k": top_k}
        results = self._post("/v1/tags", body)["results"]
        return {result["image_id"]: result["tags"] for result in results}

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                response = self._http.post(path, json=body)
            except httpx.TransportError as exc:
                if attempt >= _MAX_CONNECT_ATTEMPTS:
                    raise Unreachable(f"{path}: {exc!r}") from exc
                time.sleep(min(2.0**attempt, _MAX_WAIT_SECONDS))
                continue
            if response.status_code in _BUSY and attempt < _MAX_ATTEMPTS:
                time.sleep(_retry_after(response, attempt))
                continue
            return _json_or_raise(path, response)
        raise AssertionError("unreachable")  # the last attempt always returns or raises


def _packed(embeddings: list[list[float]], image_ids: list[str]) -> dict[str, Any]:
    """Many embeddings travel as `embeddings_base64`: a quarter of the JSON numbers' size, and
    the service reads it without parsing a number."""
    return {"embeddings_base64": encode_base64(embeddings), "image_ids": image_ids}


def _retry_after(response: httpx.Response, attempt: int) -> float:
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        seconds = 2.0**attempt
    return min(max(seconds, 0.5), _MAX_WAIT_SECONDS)


def _json_or_raise(path: str, response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 200:
        return response.json()
    code, message = _envelope(response)
    if response.status_code == 401:
        raise Unauthorized(f"{path}: {message} (pass the service's key with --api-key)")
    if response.status_code in PHOTO_ERRORS and path == "/v1/analyze":
        raise PhotoRejected(code, message)
    raise ServiceError(f"{path} answered {response.status_code} {code}: {message}")


def _envelope(response: httpx.Response) -> tuple[str, str]:
    """`(error, message)` of the v1 error envelope, or of whatever else came back."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        return str(body["error"]), str(body.get("message", ""))
    return f"http_{response.status_code}", response.text[:200] or response.reason_phrase
