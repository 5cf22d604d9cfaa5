"""`bentoml build` makes a versioned Bento that carries the weights, exports to one file, imports
into an empty store and serves; the Dockerfile `bentoml containerize` would use is checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from festora.models import RUNNER_SPECS, SPECS
from tests.serving import serve

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def bentoml_cli(*args: str, home: Path) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "bentoml", *args],
        cwd=ROOT,
        env={**os.environ, "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout


@pytest.fixture(scope="module")
def bento_tag(model_store: Path) -> str:
    output = bentoml_cli("build", "--output", "tag", home=model_store)
    match = re.search(r"__tag__:(festora-vision:\w+)", output)
    assert match, output
    return match.group(1)


@pytest.fixture(scope="module")
def exported(bento_tag: str, model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "festora-vision.tar"
    bentoml_cli("export", bento_tag, str(path), home=model_store)
    return path


def test_build_prints_a_versioned_tag(bento_tag: str) -> None:
    name, version = bento_tag.split(":")
    assert name == "festora-vision" and len(version) >= 8


def test_export_carries_every_models_weights(exported: Path) -> None:
    with tarfile.open(exported) as archive:
        names = archive.getnames()
        for spec in SPECS.values():
            weights = [n for n in names if n.startswith(f"./models/{spec.store_name}/")]
            assert any(n.endswith(f"/{spec.weights_file}") for n in weights), spec.store_name
            (info_name,) = [n for n in weights if n.endswith("/model.yaml")]
            info = yaml.safe_load(archive.extractfile(info_name).read())  # type: ignore[union-attr]
            assert info["labels"]["weights"] in {"real", "random-init"}
            assert len(info["labels"]["sha256"]) == 64
        bento = yaml.safe_load(archive.extractfile("./bento.yaml").read())  # type: ignore[union-attr]
    assert {m["tag"].split(":")[0] for m in bento["models"]} == {
        s.store_name for s in SPECS.values()
    }
    assert "./src/service.py" in names and "./src/runners/clip.py" in names
    assert not any(n.startswith("./src/tests/") for n in names)


def test_exported_bento_serves_from_an_empty_store(
    exported: Path, bento_tag: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    home = tmp_path_factory.mktemp("fresh-home")
    bentoml_cli("import", str(exported), home=home)
    env = {"BENTOML_HOME": str(home), "RATE_LIMIT_ENABLED": "false"}
    log = tmp_path_factory.mktemp("logs") / "bento.log"
    with serve(env, log, target=bento_tag) as server:
        health = httpx.get(f"{server.url}/health", timeout=30).json()
    assert {m["name"] for m in health["models"]} == set(RUNNER_SPECS), health
    assert all(m["loaded"] for m in health["models"]), health


@pytest.fixture(scope="module")
def containerfile(bento_tag: str, model_store: Path) -> Iterator[str]:
    code = (
        "import sys, bentoml; "
        "bentoml.container.get_containerfile(sys.argv[1], output_path=sys.argv[2])"
    )
    path = model_store / "Dockerfile.generated"
    subprocess.run(
        [sys.executable, "-c", code, bento_tag, str(path)],
        env={**os.environ, "BENTOML_HOME": str(model_store)},
        check=True,
    )
    yield path.read_text()


def test_containerfile_installs_pins_then_pyiqa_without_deps(containerfile: str) -> None:
    assert re.search(r"^FROM .*python:3\.11", containerfile, re.M), containerfile[:500]
    install = containerfile.index("pip install -r")
    setup = containerfile.index("script__")
    assert install < setup
    assert 'ENV HF_HUB_OFFLINE="1"' in containerfile or "HF_HUB_OFFLINE=1" in containerfile
    assert "EXPOSE 3000" in containerfile


def test_setup_script_pins_the_same_pyiqa_as_requirements() -> None:
    pin = (ROOT / "requirements-nodeps.txt").read_text().split()[0]
    assert f"--no-deps {pin}" in (ROOT / "scripts" / "bento_setup.sh").read_text()
