"""Settings come from the environment and `.env`; `.env.example` documents exactly them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from festora import config
from festora.config import Settings, env_value
from festora.models import RUNNER_SPECS
from runners.serving.device import DEVICE_ENV
from runners.serving.openvino_ir import ENGINE_ENV
from runners.serving.precision import PRECISION_ENV

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = (ROOT / ".env.example").read_text()
LISTED = re.findall(r"^([A-Z][A-Z0-9_]*)=", EXAMPLE, re.MULTILINE)
# Read by the runners with `env_value`, outside Settings, when their module is imported.
RUNNER_KNOBS = {
    f"{spec.env_prefix}_{knob}"
    for spec in RUNNER_SPECS.values()
    for knob in ("MAX_BATCH_SIZE", "MAX_LATENCY_MS", "NUM_THREADS", "TIMEOUT_S")
} | {PRECISION_ENV, ENGINE_ENV, DEVICE_ENV, "EMOTION_DEEPFACE_HOME"}


@pytest.fixture
def in_dir_with_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("API_KEY", "MAX_BATCH_SIZE", "ENVIRONMENT", "CLIP_MAX_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text(
        "API_KEY=from-dotenv\nMAX_BATCH_SIZE=7\nENVIRONMENT=dotenv\nCLIP_MAX_BATCH_SIZE=5\n"
    )
    config._dotenv.cache_clear()
    yield tmp_path
    config._dotenv.cache_clear()


def test_dotenv_in_the_working_directory_is_read(in_dir_with_env_file: Path) -> None:
    settings = Settings()
    assert settings.auth_enabled and settings.api_key.get_secret_value() == "from-dotenv"
    assert settings.max_batch_size == 7
    assert env_value("CLIP_MAX_BATCH_SIZE") == "5"


def test_the_environment_wins_over_dotenv(
    in_dir_with_env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_BATCH_SIZE", "3")
    monkeypatch.setenv("CLIP_MAX_BATCH_SIZE", "9")
    settings = Settings()
    assert settings.max_batch_size == 3 and settings.environment == "dotenv"
    assert env_value("CLIP_MAX_BATCH_SIZE") == "9"


def test_env_example_lists_each_setting_once() -> None:
    assert len(LISTED) == len(set(LISTED)), [n for n in LISTED if LISTED.count(n) > 1]


def test_every_listed_setting_exists_and_every_setting_is_listed() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    assert set(LISTED) - fields - RUNNER_KNOBS == set()
    assert fields - set(LISTED) == set()
