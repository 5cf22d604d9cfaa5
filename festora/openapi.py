"""The OpenAPI 3.1 document served at `/docs.json`, generated from the routes themselves.

Every `@bentoml.api` route contributes its own request and response pydantic models, every
mounted Starlette route its path, methods, parameters and (when marked with `responds_with`)
its response model, so a route that lands appears with its real schema. What the models cannot
say is added here: the statuses each route answers in the error envelope, the API-key schemes
(only while `API_KEY` is set), and the product's title, version and description. pydantic's
JSON Schema is 2020-12, the dialect of OpenAPI 3.1, so schemas are used as pydantic writes them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, get_type_hints

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute, Route

from festora.config import Settings
from festora.middleware import is_protected

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
E = TypeVar("E", bound=Callable[..., Any])

# Routes tagged by purpose: the first matching path prefix wins.
TAGS: Sequence[tuple[str, str, str]] = (
    ("/v1/analyze/llm", "LLM critique", "A photo judged by a vision LLM through LiteLLM"),
    ("/v1/analyze", "Analysis", "Blur, quality, aesthetics, faces and CLIP embeddings"),
    ("/v1/cluster", "Grouping", "Clustering and culling of analysed photos"),
    ("/v1/cull", "Grouping", ""),
    ("/v1/jobs", "Jobs", "Whole events, analysed in the background"),
    ("/v1/embed", "Text and search", "CLIP text tower: embeddings, search, zero-shot tags"),
    ("/v1/search", "Text and search", ""),
    ("/v1/tags", "Text and search", ""),
    ("/health", "Health", "Service and per-model status, never authenticated"),
    ("/v1/health", "Health", ""),
    ("/", "Other", ""),
)

# Error codes by status, as every /v1 POST route may answer them.
COMMON_ERRORS: dict[int, list[str]] = {
    413: ["request_too_large"],
    415: ["unsupported_media_type"],
    422: ["validation_error"],
    500: ["internal_error"],
    503: ["model_not_ready", "model_unavailable", "overloaded"],
    504: ["timeout"],
}
# What a route answers besides the common errors.
ROUTE_ERRORS: dict[str, dict[int, list[str]]] = {
    "/v1/analyze": {413: ["image_too_large"], 422: ["image_fetch_error", "image_decode_error"]},
    "/v1/analyze/upload": {413: ["image_too_large"], 422: ["image_decode_error"]},
    "/v1/analyze/batch": {422: ["batch_too_large"]},
    "/v1/analyze/llm": {
        413: ["image_too_large"],
        422: ["image_fetch_error", "image_decode_error", "llm_invalid_response"],
        502: ["llm_provider_error"],
        503: ["llm_not_configured"],
        504: ["llm_timeout"],
    },
    "/v1/cluster": {422: ["clustering_error"]},
    "/v1/cull": {422: ["cull_error"]},
    "/v1/jobs": {404: ["job_not_found"], 409: ["not_a_cull_job", "job_not_done"]},
}
# A success status other than 200.
SUCCESS_STATUS: dict[str, int] = {"/v1/jobs": 202}
STATUS_TEXT = {
    401: "Missing or wrong API key",
    404: "Not found",
    409: "Not possible in the job's present state",
    413: "Too large",
    415: "Unsupported media type",
    422: "The request cannot be processed",
    429: "Rate limit exceeded: retry after `Retry-After` seconds",
    500: "Unexpected error (never a stack trace or a secret)",
    502: "The LLM provider failed",
    503: "Not available now: retry after `Retry-After` seconds when given",
    504: "Timed out",
}


class ErrorEnvelope(BaseModel):
    """Every error: a machine-readable code, a human-readable message, optional detail."""

    error: str = Field(description="snake_case error code")
    message: str
    detail: Any = Field(
        None,
        description="For validation_error, FastAPI-style entries "
        "`{type, loc, msg, input, ctx}`; otherwise whatever helps (limits, model names)",
    )


def responds_with(model: type[BaseModel], status: int = 200) -> Callable[[E], E]:
    """Mark a Starlette endpoint with the model of its success response, for the document."""

    def mark(endpoint: E) -> E:
        endpoint.__openapi_response__ = (status, model)  # type: ignore[attr-defined]
        return endpoint

    return mark


def openapi_document(service: Any, routes: Iterable[BaseRoute], settings: Settings) -> dict:
    """The document of `service` (a BentoML service) and the Starlette `routes` it mounts."""
    schemas = _Schemas()
    schemas.ref(ErrorEnvelope, "validation")
    paths: dict[str, dict[str, Any]] = {}
    for api in service.apis.values():
        # A task's route also answers a plain POST; its /submit, /status, /get, /retry and
        # /cancel companions are BentoML's protocol for its generated client, not documented here.
        paths[api.route] = {"post": _api_operation(service, api, schemas, settings)}
    for route in routes:
        if not isinstance(route, Route) or not route.include_in_schema:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            item = paths.setdefault(route.path, {})
            item[method.lower()] = _route_operation(route, method, schemas, settings)
    used_tags = {op["tags"][0] for item in paths.values() for op in item.values()}
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Festora Vision",
            "version": settings.app_version,
            "summary": "Image analysis for photo-heavy products",
            "description": _description(settings),
        },
        "tags": [
            {"name": name, "description": text}
            for name, text in _tag_descriptions().items()
            if name in used_tags
        ],
        "paths": dict(sorted(paths.items())),
    }
    document["components"] = {"schemas": schemas.components()}
    if settings.auth_enabled:
        document["components"]["securitySchemes"] = {
            "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            "BearerAuth": {"type": "http", "scheme": "bearer"},
        }
    return document


class _Schemas:
    """Models referenced while the document is built; `components()` writes them out and
    points every reference at its model's schema (pydantic names a model used for input and
    output `Name-Input` / `Name-Output` when the two differ)."""

    def __init__(self) -> None:
        self._refs: list[tuple[tuple[type[BaseModel], str], dict[str, str]]] = []

    def ref(self, model: type[BaseModel], mode: str) -> dict[str, str]:
        ref: dict[str, str] = {}
        self._refs.append(((model, mode), ref))
        return ref

    def components(self) -> dict[str, Any]:
        keys = list(dict.fromkeys(key for key, _ in self._refs))
        refs, defs = models_json_schema(keys, ref_template=REF)  # type: ignore[arg-type]
        for key, ref in self._refs:
            ref.update(refs[key])
        return dict(sorted(defs.get("$defs", {}).items()))


def _api_operation(service: Any, api: Any, schemas: _Schemas, settings: Settings) -> dict:
    success = SUCCESS_STATUS.get(api.route, 200)
    if getattr(api.input_spec, "__root_input__", False):
        body = {"application/json": {"schema": schemas.ref(_root_model(api), "validation")}}
    else:
        body = {"multipart/form-data": _multipart(api.input_spec)}
    output = get_type_hints(api.func).get("return")
    content = (
        {"application/json": {"schema": schemas.ref(output, "serialization")}}
        if inspect.isclass(output) and issubclass(output, BaseModel)
        else {"application/json": {"schema": {}}}
    )
    errors = _merge(COMMON_ERRORS, ROUTE_ERRORS.get(api.route, {}))
    operation = {
        "operationId": api.name,
        "summary": _summary(api.func),
        "description": inspect.getdoc(api.func) or "",
        "tags": [_tag(api.route)],
        "requestBody": {"required": True, "content": body},
        "responses": {
            str(success): {"description": "Success", "content": content},
            **_error_responses(api.route, errors, schemas, settings),
        },
    }
    return _secured(operation, api.route, settings)


def _route_operation(route: Route, method: str, schemas: _Schemas, settings: Settings) -> dict:
    status, model = getattr(route.endpoint, "__openapi_response__", (200, None))
    schema = schemas.ref(model, "serialization") if model else {"type": "object"}
    errors = dict(ROUTE_ERRORS.get(_route_prefix(route.path), {}))
    if is_protected(route.path):
        errors = _merge({500: ["internal_error"], 503: ["overloaded"]}, errors)
    operation: dict[str, Any] = {
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method} {route.path}").strip("_").lower(),
        "summary": _summary(route.endpoint),
        "description": inspect.getdoc(route.endpoint) or "",
        "tags": [_tag(route.path)],
        "responses": {
            str(status): {
                "description": "Success",
                "content": {"application/json": {"schema": schema}},
            },
            **_error_responses(route.path, errors, schemas, settings),
        },
    }
    if route.param_convertors:
        operation["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in route.param_convertors
        ]
    return _secured(operation, route.path, settings)


def _error_responses(
    path: str, errors: dict[int, list[str]], schemas: _Schemas, settings: Settings
) -> dict[str, Any]:
    if is_protected(path):
        if settings.auth_enabled:
            errors = _merge(errors, {401: ["unauthorized"]})
        if settings.rate_limit_enabled:
            errors = _merge(errors, {429: ["rate_limited"]})
    responses = {}
    for status in sorted(errors):
        codes = ", ".join(f"`{code}`" for code in errors[status])
        response: dict[str, Any] = {
            "description": f"{STATUS_TEXT.get(status, 'Error')}: {codes}",
            "content": {"application/json": {"schema": schemas.ref(ErrorEnvelope, "validation")}},
        }
        header = {401: "WWW-Authenticate", 429: "Retry-After", 503: "Retry-After"}.get(status)
        if header:
            response["headers"] = {header: {"schema": {"type": "string"}}}
        responses[str(status)] = response
    return responses


def _secured(operation: dict, path: str, settings: Settings) -> dict:
    if settings.auth_enabled and is_protected(path):
        operation["security"] = [{"ApiKeyHeader": []}, {"BearerAuth": []}]
    return operation


def _root_model(api: Any) -> type[BaseModel]:
    """The route's own request model (BentoML wraps it in an IO descriptor subclass)."""
    hints = get_type_hints(api.func)
    params = [p for p in inspect.signature(api.func).parameters.values() if p.name != "self"]
    return hints[params[0].name]


def _multipart(spec: type[BaseModel]) -> dict[str, Any]:
    schema = spec.model_json_schema(ref_template=REF)
    for name in spec.multipart_fields:  # type: ignore[attr-defined]
        schema["properties"][name] = {"type": "string", "format": "binary"}
    schema.pop("title", None)
    return {
        "schema": schema,
        "encoding": {name: {"contentType": "*/*"} for name in spec.multipart_fields},  # type: ignore[attr-defined]
    }


def _merge(*tables: dict[int, list[str]]) -> dict[int, list[str]]:
    merged: dict[int, list[str]] = {}
    for table in tables:
        for status, codes in table.items():
            merged.setdefault(status, [])
            merged[status] += [c for c in codes if c not in merged[status]]
    return merged


def _route_prefix(path: str) -> str:
    return next((p for p in ROUTE_ERRORS if path == p or path.startswith(p + "/")), path)


def _tag(path: str) -> str:
    return next(name for prefix, name, _ in TAGS if path.startswith(prefix))


def _tag_descriptions() -> dict[str, str]:
    """Each tag's description, in reading order: analysis first, health last."""
    descriptions: dict[str, str] = {}
    for _, name, text in TAGS:
        if text or name not in descriptions:
            descriptions.setdefault(name, text)
    order = ["Analysis", "LLM critique", "Grouping", "Jobs", "Text and search", "Health"]
    return dict(sorted(descriptions.items(), key=lambda kv: [*order, kv[0]].index(kv[0])))


def _summary(func: Callable[..., Any]) -> str:
    name = re.sub(r"^_+", "", func.__name__).replace("_", " ")
    return name[:1].upper() + name[1:]


def _description(settings: Settings) -> str:
    auth = (
        "**Auth**: every `/v1` route except `/v1/health` needs `X-Api-Key: <key>` "
        "(or `Authorization: Bearer <key>`); a missing or wrong key is a 401."
        if settings.auth_enabled
        else "**Auth**: open mode (no `API_KEY` set); when one is set, send it as "
        "`X-Api-Key: <key>` or `Authorization: Bearer <key>`."
    )
    rate = (
        f"{settings.rate_limit_per_minute} requests a minute per client with bursts of "
        f"{settings.rate_limit_burst} (429 with `Retry-After` beyond)"
        if settings.rate_limit_enabled
        else "no rate limit"
    )
    return f"""Blur, technical quality (BRISQUE, NIMA), aesthetics (NIMA on AVA), facial emotion,
CLIP embeddings, batches, DBSCAN clustering and a vision-LLM critique, for one photo or many.

**Quick examples**

```
curl -s $HOST/v1/analyze -H 'Content-Type: application/json' \\
  -d '{{"image": {{"url": "https://example.com/photo.jpg", "image_id": "IMG_0001"}}}}'
curl -s $HOST/v1/analyze/upload -F image=@photo.jpg -F run_emotion=false
```

{auth}

**Limits**: images up to {settings.max_image_size_bytes:,} bytes and
{settings.max_image_pixels:,} pixels (413 `image_too_large`), request bodies up to
{settings.max_request_body_bytes:,} bytes (413 `request_too_large`), up to
{settings.max_batch_size} images a batch (422 `batch_too_large`), {rate}.

**Errors** always come as `{{"error": "<code>", "message": "...", "detail": ...}}`; a body that
fails validation is a 422 `validation_error` whose `detail` lists FastAPI-style entries."""


def swagger_page(title: str, document_url: str) -> str:
    """Swagger UI on BentoML's own copy of its assets, with the product's title and without
    BentoML's page furniture (its tag-manager script reaches out to the internet)."""
    assets = "/static_content"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <title>{title}</title>
  <link rel="stylesheet" type="text/css" href="{assets}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{assets}/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{document_url}", dom_id: "#swagger-ui", deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"
    }});
  </script>
</body>
</html>"""
