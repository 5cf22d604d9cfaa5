"""Configuration from the environment and `.env`, read in one place.

Every name matches the original FastAPI service (see `.env.example`), so a deployment's
environment carries over unchanged. Blank values count as unset. Like the original, a `.env`
file is read too: the project's (a Bento's `src/`, where `bentoml serve` runs) and then the
current directory's; a variable set in the environment wins over both.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from festora import __version__

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Later files win, as in pydantic-settings.
ENV_FILES = (PROJECT_ROOT / ".env", Path(".env"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=ENV_FILES, env_ignore_empty=True, extra="ignore", frozen=True
    )

    # Service
    app_version: str = __version__
    port: int = Field(3000, ge=1, le=65535)
    environment: str = "production"
    log_level: str = "INFO"
    log_json: bool = True
    api_key: SecretStr | None = None
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = ("*",)

    # Rate limiting (per client, token bucket: a burst on top of a steady per-minute rate)
    rate_limit_enabled: bool = True
    rate_limit_per_minute: int = Field(60, ge=1)
    rate_limit_burst: int = Field(10, ge=0)

    # Shared state across API replicas. Unset: every replica keeps its own (one machine).
    # The URL may hold a password (redis://:secret@host:6379/0): never logged.
    redis_url: SecretStr | None = None
    # A Redis call that takes longer counts as Redis being away (seconds).
    redis_timeout_seconds: float = Field(0.5, gt=0)
    # While Redis is away the rate limit lets requests through ("open") or refuses them with
    # 503 rate_limit_unavailable ("closed").
    rate_limit_redis_failure: Literal["open", "closed"] = "open"
    # With REDIS_URL: how long an analysis is kept for a re-sent identical photo (0 = no cache).
    cache_ttl_seconds: int = Field(0, ge=0)

    # Load shedding: /v1 requests worked on at once; more are answered 503 `overloaded`
    max_concurrent_requests: int = Field(16, ge=1)
    overload_retry_after_seconds: int = Field(2, ge=1)

    # Image ingestion
    max_image_fetch_timeout_seconds: float = Field(15.0, gt=0)
    image_connect_timeout_seconds: float = Field(5.0, gt=0)
    max_image_size_bytes: int = Field(31_457_280, ge=1)
    max_image_pixels: int = Field(50_000_000, ge=1)
    max_request_body_bytes: int = Field(160 * 1024 * 1024, ge=1024)
    allow_private_urls: bool = False
    url_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    max_batch_size: int = Field(20, ge=1)

    # Blur: Laplacian variance measured after resizing the long side to this many pixels,
    # so the verdict does not depend on the camera's resolution.
    blur_analysis_size: int = Field(1024, ge=64)
    blur_threshold: float = Field(10.0, gt=0)

    # Jobs (/v1/jobs): whole events analysed in the background, kept in JOBS_DIR
    jobs_dir: Path = Path("data/jobs")
    job_max_images: int = Field(10_000, ge=1)
    job_concurrency: int = Field(20, ge=1)
    job_concurrency_under_load: int = Field(2, ge=1)
    job_max_running: int = Field(2, ge=1)
    job_lease_seconds: float = Field(15.0, ge=1)
    job_retention_seconds: float = Field(7 * 24 * 3600, gt=0)

    # Clustering
    dbscan_eps_default: float = Field(0.35, ge=0.01, le=2.0)
    dbscan_min_samples_default: int = Field(2, ge=1, le=50)

    # Culling: the most analyses one /v1/cull takes, and the most groups whose finalists one
    # cull sends to the LLM (one call per group)
    cull_max_analyses: int = Field(10_000, ge=1)
    cull_llm_max_groups: int = Field(20, ge=1)

    # Models
    clip_model_name: str = "openai/clip-vit-base-patch32"
    # Faces: MediaPipe's BlazeFace (default) or the seed's DeepFace detector (DEEPFACE_DETECTOR)
    face_detector: Literal["blazeface", "deepface"] = "blazeface"
    deepface_detector: str = "opencv"
    weights: Literal["real", "random-init"] = "real"

    # LLM critique
    llm_default_model: str = "anthropic/claude-sonnet-4-5"
    llm_max_tokens: int = Field(500, ge=100, le=2000)
    llm_timeout_seconds: float = Field(60.0, gt=0)
    llm_language: str = "en"
    llm_api_base: str | None = None
    llm_api_key: SecretStr | None = None
    anthropic_api_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    gemini_api_key: SecretStr | None = None

    @field_validator("url_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(h.strip().lower().rstrip(".") for h in value.split(",") if h.strip())
        return value

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(o.strip() for o in value.split(",") if o.strip())
        return value

    @property
    def redis_enabled(self) -> bool:
        return self.redis_url is not None and bool(self.redis_url.get_secret_value().strip())

    @property
    def auth_enabled(self) -> bool:
        return self.api_key is not None and bool(self.api_key.get_secret_value().strip())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def env_value(name: str) -> str:
    """A variable read outside `Settings` (the runners' tuning knobs): the environment's value,
    else `.env`'s, blank when neither sets it."""
    return (os.environ.get(name) or "").strip() or _dotenv().get(name, "")


@lru_cache(maxsize=1)
def _dotenv() -> dict[str, str]:
    values: dict[str, str] = {}
    for path in ENV_FILES:
        if path.is_file():
            values.update({k: v.strip() for k, v in dotenv_values(path).items() if v and v.strip()})
    return values
