"""Test session setup: offline, isolated homes for every cache and store, shared fixtures.

Everything here is real: the model store is filled by `scripts/import_models.py --random-init`
(the same code path as real weights), and servers are real `bentoml serve` processes.
"""

from __future__ import annotations

import hashlib
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


# Importing every model as random-init weights takes minutes of CPU, and the store it writes
# depends only on the code that builds and exports the models: a session reuses the store an
# earlier session built from the same code, hard-linked from a cache outside the repository.
# The import path itself is still exercised by tests/test_import_models.py on every run.
MODEL_CACHE = Path(
    os.environ.get("FESTORA_TEST_MODEL_CACHE", Path.home() / ".cache" / "festora-test-models")
)
MODEL_CACHE_KEEP = 4
# What the import reads: the script, the store layout, input sizes, settings, the runners'
# exported graphs, and the pinned libraries.
MODEL_CACHE_INPUTS = (
    "scripts/import_models.py",
    "festora/models.py",
    "festora/preprocess.py",
    "festora/config.py",
    "runners",
    "requirements.txt",
)


def _model_code_key() -> str:
    digest = hashlib.sha256()
    for entry in MODEL_CACHE_INPUTS:
        path = ROOT / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:20]


def _link_tree(source: Path, target: Path) -> None:
    try:
        shutil.copytree(source, target, copy_function=os.link, dirs_exist_ok=True)
    except OSError:  # another file system: copy instead
        shutil.copytree(source, target, dirs_exist_ok=True)


@pytest.fixture(scope="session")
def model_store() -> Path:
    """The session's BentoML home with every model imported as random-init weights."""
    home = Path(os.environ["BENTOML_HOME"])
    cached = MODEL_CACHE / _model_code_key()
    if (cached / "models").is_dir():
        _link_tree(cached / "models", home / "models")
        return home
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "import_models.py"), "--random-init"],
        check=True,
        cwd=ROOT,
    )
    _save_to_cache(home / "models", cached)
    return home


def _save_to_cache(models: Path, cached: Path) -> None:
    staging = cached.with_name(f".{cached.name}.{os.getpid()}")
    try:
        _link_tree(models, staging / "models")
        staging.rename(cached)  # atomic; a concurrent session may have won, which is as good
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return
    entries = sorted(MODEL_CACHE.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in [p for p in entries if not p.name.startswith(".")][MODEL_CACHE_KEEP:]:
        shutil.rmtree(stale, ignore_errors=True)


@pytest.fixture(scope="session")
def empty_store() -> Iterator[Path]:
    """A BentoML home with no models at all, for the "model not loaded" paths."""
    path = SESSION_DIR / "bentoml-empty"
    path.mkdir(exist_ok=True)
    yield path
