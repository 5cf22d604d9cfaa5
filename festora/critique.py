"""Photo critique by a vision LLM through LiteLLM (POST /v1/analyze/llm).

The LiteLLM model id alone picks the provider ("anthropic/...", "openai/...", "gemini/...",
"ollama/..."). LLM_API_BASE, when set, sends every provider except Anthropic and Gemini to that
OpenAI-compatible server with LLM_API_KEY. The reply must validate as `PhotoCritique`; an unusable
reply gets one repair round with the problem fed back, then 422 `llm_invalid_response`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, Protocol, TypeVar

import httpx
import numpy as np
from PIL import Image
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from festora.config import Settings
from festora.critique_prompt import PromptText, prompt_text
from festora.errors import ApiError, ValidationFailed
from festora.schemas import ImageInput, exactly_one_of

logger = logging.getLogger(__name__)

# Anthropic downsizes anything with a longer side; more pixels cost tokens, not insight.
LLM_IMAGE_MAX_SIDE = 1568
LLM_JPEG_QUALITY = 85
MAX_LIST_ITEMS = 5

_EXCERPT_CHARS = 200
_TIMEOUT_GRACE_SECONDS = 1.0
# The openai SDK refuses to send a request without a key; servers without auth ignore it.
_PLACEHOLDER_KEY = "no-key"
_KEY_SETTINGS = {
    "anthropic": ("anthropic_api_key", "ANTHROPIC_API_KEY"),
    "openai": ("openai_api_key", "OPENAI_API_KEY"),
    "gemini": ("gemini_api_key", "GEMINI_API_KEY"),
}
_OWN_ENDPOINT_PROVIDERS = frozenset({"anthropic", "gemini"})
_KEYLESS_PROVIDERS = frozenset({"ollama", "ollama_chat"})
_LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
_FENCED = re.compile(r"^```[A-Za-z]*\s*(.*?)\s*```$", re.DOTALL)
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class LlmNotConfigured(ApiError):
    status_code = 503
    code = "llm_not_configured"


class LlmProviderError(ApiError):
    status_code = 502
    code = "llm_provider_error"


class LlmTimeout(ApiError):
    status_code = 504
    code = "llm_timeout"


class LlmInvalidResponse(ApiError):
    status_code = 422
    code = "llm_invalid_response"


class LlmAnalyzeRequest(BaseModel):
    """Exactly one of `image_url` (the original field) or `image` (url or base64)."""

    model_config = ConfigDict(json_schema_extra=exactly_one_of("image_url", "image"))

    image_url: str | None = Field(None, max_length=4096)
    image: ImageInput | None = None
    ref_id: str | None = None
    model: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="LiteLLM model id; default LLM_DEFAULT_MODEL",
    )
    custom_prompt: str | None = Field(
        None, max_length=10_000, description="Replaces the critique instructions, not the format"
    )
    max_tokens: int | None = Field(None, ge=100, le=2000, description="Default LLM_MAX_TOKENS")
    language: str | None = Field(
        None, max_length=35, pattern=_LANGUAGE_PATTERN, description="Default LLM_LANGUAGE"
    )
    include_metrics: bool = Field(False, description="Ground the critique in local measurements")

    @model_validator(mode="after")
    def _exactly_one_image(self) -> LlmAnalyzeRequest:
        if (self.image_url is None) == (self.image is None):
            raise ValueError("provide exactly one of 'image_url' or 'image'")
        return self


class PhotoCritique(BaseModel):
    """The `analysis` object; an LLM reply that fails these bounds gets one repair round."""

    overall_score: float = Field(ge=1.0, le=10.0)
    discard_reason: str | None = None
    best_in_group: bool = False
    composition: str
    pose_quality: str | None = None
    background_quality: str
    highlights: list[str] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    issues: list[str] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    summary: str

    @field_validator("discard_reason", "pose_quality", mode="after")
    @classmethod
    def _blank_is_null(cls, value: str | None) -> str | None:
        return value if value and value.strip() else None


class LlmAnalyzeResponse(BaseModel):
    ref_id: str | None
    analysis: PhotoCritique
    model_used: str = Field(description="The LiteLLM model id that was called")
    tokens_used: int = Field(description="Total tokens of every call, the repair included")
    processing_ms: int
    error: str | None = None
    metrics: dict[str, Any] | None = Field(
        None, description="The local measurements given to the LLM, when include_metrics"
    )


class RgbImage(Protocol):
    rgb: np.ndarray


@dataclass(frozen=True)
class _Route:
    model: str
    provider: str
    api_base: str | None
    api_key: str | None
    json_mode: bool


class UnusableReply(Exception):
    """A reply that does not meet the expected format; `problem` is fed back to the model."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


async def critique_photo(
    req: LlmAnalyzeRequest,
    settings: Settings,
    *,
    image: np.ndarray | RgbImage | None,
    metrics: dict[str, Any] | None,
) -> LlmAnalyzeResponse:
    """Critique one photo. `image` None passes the request's URL to the provider as is."""
    started = time.perf_counter()
    text = prompt_text(req.language or settings.llm_language)
    grounding = plain_metrics(metrics) if req.include_metrics and metrics is not None else None
    if image is None:
        image_ref = _source_url(req)
    else:
        rgb = image if isinstance(image, np.ndarray) else image.rgb
        image_ref = await asyncio.to_thread(jpeg_data_url, rgb)
    reply = await ask_for_json(
        _messages(text, req.custom_prompt, grounding, image_ref),
        lambda content: parse_reply(content, PhotoCritique),
        model=req.model or settings.llm_default_model,
        max_tokens=req.max_tokens or settings.llm_max_tokens,
        settings=settings,
        repair_request=text.repair_request,
    )
    return LlmAnalyzeResponse(
        ref_id=req.ref_id,
        analysis=reply.value,
        model_used=reply.model_used,
        tokens_used=reply.tokens_used,
        processing_ms=round((time.perf_counter() - started) * 1000),
        metrics=grounding,
    )


@dataclass(frozen=True)
class LlmReply(Generic[T]):
    value: T
    model_used: str
    tokens_used: int  # every call, the repair included


async def ask_for_json(
    messages: list[dict[str, Any]],
    parse: Callable[[str], T],
    *,
    model: str,
    max_tokens: int,
    settings: Settings,
    repair_request: Callable[[str], str],
) -> LlmReply[T]:
    """One chat completion whose reply `parse` must accept (raising UnusableReply otherwise);
    an unusable reply gets one repair round with the problem fed back, then 422
    `llm_invalid_response`. Provider failures are mapped to 502/504, unknown models to 422."""
    litellm = await asyncio.to_thread(import_litellm)
    route = _route(litellm, model, settings)
    secrets = _secret_values(settings)
    messages = list(messages)
    reply, tokens = await _complete(litellm, route, messages, max_tokens, settings, secrets)
    try:
        value = parse(reply)
    except UnusableReply as first:
        logger.info("LLM reply from %s unusable, asking once more: %s", route.model, first.problem)
        if reply.strip():
            messages.append({"role": "assistant", "content": reply})
        messages.append({"role": "user", "content": repair_request(first.problem)})
        reply, more = await _complete(litellm, route, messages, max_tokens, settings, secrets)
        tokens += more
        try:
            value = parse(reply)
        except UnusableReply as second:
            raise _invalid_response(second.problem, reply, tokens, secrets) from None
    return LlmReply(value=value, model_used=route.model, tokens_used=tokens)


def check_model(model: str, settings: Settings) -> None:
    """Raise now what a call to `model` would raise before reaching the provider: 422 for an
    unknown model id, 503 for a provider without a key."""
    _route(import_litellm(), model, settings)


def import_litellm() -> ModuleType:
    """Import LiteLLM (about 3.5 s) offline-safe and quiet; call it at startup to pay early."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return litellm


def jpeg_data_url(rgb: np.ndarray, max_side: int = LLM_IMAGE_MAX_SIDE) -> str:
    """Downsize an HxWx3 uint8 array to `max_side` on the long side and inline it as JPEG."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {rgb.shape} {rgb.dtype}")
    picture = Image.fromarray(np.ascontiguousarray(rgb))
    width, height = picture.size
    scale = max_side / max(width, height)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=LLM_JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def parse_reply(reply: str, model: type[M]) -> M:
    """Validate a reply as `model`, tolerating code fences and prose around the JSON object."""
    text = reply.strip()
    if not text:
        raise UnusableReply("the reply was empty")
    if fenced := _FENCED.match(text):
        text = fenced.group(1)
    if not text.startswith("{"):
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            text = text[start : end + 1]
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        raise UnusableReply(_describe(exc)) from None


def plain_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready copy (numpy scalars and models unwrapped, floats to 3 decimals)."""
    return {str(key): _plain(value) for key, value in metrics.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    elif isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return plain_metrics(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _route(litellm: ModuleType, model: str, settings: Settings) -> _Route:
    try:
        provider = litellm.get_llm_provider(model)[1]
    except litellm.BadRequestError:
        raise ValidationFailed(
            f"Unknown LLM model {model!r}: use a LiteLLM id such as 'openai/gpt-4o'",
            detail=[
                {"loc": ["body", "model"], "msg": "unknown LLM provider", "type": "value_error"}
            ],
        ) from None
    json_mode = _supports_json_mode(litellm, model, provider)
    if settings.llm_api_base and provider not in _OWN_ENDPOINT_PROVIDERS:
        key = _reveal(settings.llm_api_key) or (_PLACEHOLDER_KEY if provider == "openai" else None)
        return _Route(model, provider, settings.llm_api_base, key, json_mode)
    if provider in _KEY_SETTINGS:
        field, env_var = _KEY_SETTINGS[provider]
        key = _reveal(getattr(settings, field))
        if not key:
            raise _not_configured(provider, [env_var])
        return _Route(model, provider, None, key, json_mode)
    if provider in _KEYLESS_PROVIDERS:
        return _Route(model, provider, None, _reveal(settings.llm_api_key), json_mode)
    missing = litellm.validate_environment(model=model).get("missing_keys") or []
    if missing:
        raise _not_configured(provider, missing)
    return _Route(model, provider, None, None, json_mode)


def _supports_json_mode(litellm: ModuleType, model: str, provider: str) -> bool:
    params = litellm.get_supported_openai_params(model=model, custom_llm_provider=provider)
    return "response_format" in (params or [])


def _not_configured(provider: str, env_vars: list[str]) -> LlmNotConfigured:
    return LlmNotConfigured(
        f"No API key configured for LLM provider {provider!r}: set {' or '.join(env_vars)}",
        detail={"provider": provider, "env_vars": env_vars},
    )


def _source_url(req: LlmAnalyzeRequest) -> str:
    url = req.image_url or (req.image.url if req.image else None)
    if url is None:
        raise ValueError("a base64 image must be decoded by the caller and passed as `image`")
    return url


def _messages(
    text: PromptText, custom_prompt: str | None, grounding: dict[str, Any] | None, image_ref: str
) -> list[dict[str, Any]]:
    sections = [(custom_prompt or "").strip() or text.instructions]
    if grounding is not None:
        sections.append(text.metrics_block(grounding))
    sections.append(text.output_contract)
    content = [
        {"type": "image_url", "image_url": {"url": image_ref}},
        {"type": "text", "text": "\n\n".join(sections)},
    ]
    return [{"role": "user", "content": content}]


async def _complete(
    litellm: ModuleType,
    route: _Route,
    messages: list[dict[str, Any]],
    max_tokens: int,
    settings: Settings,
    secrets: list[str],
) -> tuple[str, int]:
    timeout = settings.llm_timeout_seconds
    kwargs: dict[str, Any] = {
        "model": route.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "timeout": timeout,
        "num_retries": 0,
        "drop_params": True,
    }
    if route.api_base:
        kwargs["api_base"] = route.api_base
    if route.api_key:
        kwargs["api_key"] = route.api_key
    if route.json_mode:
        kwargs["response_format"] = {"type": "json_object"}
    try:
        async with asyncio.timeout(timeout + _TIMEOUT_GRACE_SECONDS):
            response = await litellm.acompletion(**kwargs)
    except Exception as exc:  # noqa: BLE001 - every failure is mapped, none leaks provider text
        raise _call_failure(litellm, exc, route, timeout, secrets) from None
    content = response.choices[0].message.content if response.choices else None
    return (content if isinstance(content, str) else ""), _tokens(response)


def _tokens(response: Any) -> int:
    usage = getattr(response, "usage", None)
    if usage is None:
        return 0
    total = getattr(usage, "total_tokens", None)
    if total is None:
        total = (getattr(usage, "prompt_tokens", 0) or 0) + (
            getattr(usage, "completion_tokens", 0) or 0
        )
    return int(total or 0)


def _call_failure(
    litellm: ModuleType, exc: Exception, route: _Route, timeout: float, secrets: list[str]
) -> ApiError:
    chain = _exception_chain(exc)
    message = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", secrets)
    if any(isinstance(e, litellm.Timeout | httpx.TimeoutException | TimeoutError) for e in chain):
        logger.warning("LLM call to %s timed out after %g s", route.model, timeout)
        return LlmTimeout(
            f"The LLM provider did not answer within {timeout:g} s",
            detail={"provider": route.provider, "timeout_seconds": timeout},
        )
    unreachable = (litellm.APIConnectionError, httpx.TransportError, ConnectionError)
    status = None if any(isinstance(e, unreachable) for e in chain) else _status_of(exc)
    reason = _failure_reason(status)
    logger.warning(
        "LLM call to %s failed (%s, status %s): %s", route.model, reason, status, message[:500]
    )
    return LlmProviderError(
        f"The LLM provider failed: {reason}",
        detail={"provider": route.provider, "provider_status": status, "reason": reason},
    )


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 20:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _status_of(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _failure_reason(status: int | None) -> str:
    if status is None:
        return "provider unreachable"
    if status in (401, 403):
        return "authentication failed"
    if status == 429:
        return "rate limited"
    if status >= 500:
        return "provider error"
    return "request rejected"


def _invalid_response(
    problem: str, reply: str, tokens: int, secrets: list[str]
) -> LlmInvalidResponse:
    excerpt = _scrub(reply.strip()[:_EXCERPT_CHARS], secrets)
    logger.warning("LLM reply unusable after one repair: %s", problem)
    return LlmInvalidResponse(
        "The LLM reply did not match the expected format, also after one repair attempt",
        detail={"problem": problem, "excerpt": excerpt, "tokens_used": tokens},
    )


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors()[:6]:
        if error["type"] == "json_invalid":
            problems.append(f"the reply is not valid JSON ({error['msg']})")
            continue
        where = ".".join(str(part) for part in error["loc"]) or "the reply"
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)


def _secret_values(settings: Settings) -> list[str]:
    secrets = (
        settings.api_key,
        settings.llm_api_key,
        settings.anthropic_api_key,
        settings.openai_api_key,
        settings.gemini_api_key,
    )
    return [value for secret in secrets if (value := _reveal(secret))]


def _reveal(secret: SecretStr | None) -> str | None:
    value = secret.get_secret_value().strip() if secret is not None else ""
    return value or None


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
