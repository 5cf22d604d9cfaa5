"""Test session setup: offline, isolated homes for every cache and store, shared fixtures.

Everything here is real: the model store is filled by `scripts/import_models.py --random-init`
(the same code path as real weights), and servers are real `bentoml serve` processes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SESSION_DIR = Path(tempfile.mkdtemp(prefix="festora-tests-"))

os.environ.update(
    {
        "BENTOML_HOME": str(SESSION_DIR / "bentoml"),
        "TORCH_HOME": str(SESSION_DIR / "torch"),
        "DEEPFACE_HOME": str(SESSION_DIR / "deepface"),
        "HF_HOME": str(SESSION_DIR / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "BENTOML_DO_NOT_TRACK": "true",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LOG_JSON": "true",
        # Parity with the reference libraries is an fp32 property; test_precision.py checks
        # that the bf16 default stays faithful to fp32.
        "FESTORA_PRECISION": "fp32",
    }
)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def model_store() -> Path:
    """The session's BentoML home with every model imported as random-init weights."""
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "import_models.py"), "--random-init"],
        check=True,
        cwd=ROOT,
    )
    return Path(os.environ["BENTOML_HOME"])


@pytest.fixture(scope="session")
def empty_store() -> Iterator[Path]:
    """A BentoML home with no models at all, for the "model not loaded" paths."""
    path = SESSION_DIR / "bentoml-empty"
    path.mkdir(exist_ok=True)
    yield path
