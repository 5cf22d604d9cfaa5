"""scripts/import_models.py: labels, idempotency, reproducibility and failing fast offline.

Each test writes to its own temporary model store; the session store is filled by
conftest's `model_store` fixture through the same script.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bentoml._internal.models.model import ModelStore

from festora.models import BRISQUE, CLIP, EMOTION, NIMA_TECHNICAL, sha256_file
from scripts.import_models import Options, Plan, Unreachable, import_models, main, preflight


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    (tmp_path / "models").mkdir()
    return ModelStore(tmp_path / "models")


def options(store: ModelStore, lines: list[str], **kwargs: object) -> Options:
    return Options(model_store=store, log=lines.append, **kwargs)


def test_random_init_import_labels_and_files(store: ModelStore) -> None:
    lines: list[str] = []
    results = import_models(
        [EMOTION.key, BRISQUE.key], options(store, lines, weights="random-init")
    )
    assert [r.imported for r in results] == [True, True]
    assert any("saved festora-emotion:" in line for line in lines)  # progress is reported

    emotion = store.get(results[0].tag)
    labels = emotion.info.labels
    assert labels["weights"] == "random-init"
    assert labels["source"] == "random-init:seed=0:deepface EmotionModel"
    assert labels["license"] == EMOTION.license
    weights_file = Path(emotion.path) / EMOTION.weights_file
    assert labels["sha256"] == sha256_file(weights_file)
    assert emotion.info.metadata["files"] == {EMOTION.weights_file: labels["sha256"]}
    # the real file format: a state dict that DeepFace's model loads strictly
    from deepface.models.demography.pytorch.Emotion import EmotionModel

    EmotionModel().load_state_dict(torch.load(weights_file, weights_only=True))

    brisque = store.get(results[1].tag)  # the shipped SVM stays real in random-init mode
    assert brisque.info.labels["weights"] == "real"
    assert brisque.info.labels["source"].startswith("pypi:brisque==")
    assert {p.name for p in Path(brisque.path).iterdir()} >= {"svm.txt", "normalize.pickle"}


def test_import_is_idempotent_and_reproducible(store: ModelStore) -> None:
    opts = options(store, [], weights="random-init")
    first = import_models([EMOTION.key], opts)[0]
    again = import_models([EMOTION.key], opts)[0]
    assert not again.imported and again.tag == first.tag
    assert len(store.list("festora-emotion")) == 1

    forced = import_models([EMOTION.key], options(store, [], weights="random-init", force=True))[0]
    assert forced.imported and forced.tag != first.tag
    assert forced.sha256 == first.sha256  # fixed seed: the same bytes

    reseeded = import_models([EMOTION.key], options(store, [], weights="random-init", seed=1))[0]
    assert reseeded.imported and reseeded.sha256 != first.sha256
    assert reseeded.source == "random-init:seed=1:deepface EmotionModel"


def test_nima_import_stores_an_openvino_ir_and_completes_older_imports(
    store: ModelStore,
) -> None:
    from runners.nima import build_nima, load_nima_weights, uint8_forward
    from runners.serving.openvino_ir import IR_FILE, compile_ir

    lines: list[str] = []
    opts = options(store, lines, weights="random-init")
    first = import_models([NIMA_TECHNICAL.key], opts)[0]
    folder = Path(store.get(first.tag).path)
    assert (folder / IR_FILE).is_file() and (folder / "openvino_model.bin").is_file()
    assert any("OpenVINO" in line for line in lines)

    # the IR computes what the stored weights compute, on the runner's uint8 input
    net = build_nima(NIMA_TECHNICAL)
    load_nima_weights(net, folder / NIMA_TECHNICAL.weights_file)
    images = np.random.default_rng(0).integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    with torch.inference_mode():
        expected = uint8_forward(net.eval())(torch.from_numpy(images)).numpy()
    compiled = compile_ir(folder, "fp32", 1)
    np.testing.assert_allclose(compiled(images)[0].reshape(-1), expected, atol=1e-6)

    (folder / IR_FILE).unlink()  # as stored by a version before IRs: imported again
    again = import_models([NIMA_TECHNICAL.key], opts)[0]
    assert again.imported and again.tag != first.tag
    assert (Path(store.get(again.tag).path) / IR_FILE).is_file()


def test_real_import_from_a_weights_dir(store: ModelStore, tmp_path: Path) -> None:
    # A DeepFace-format state dict stands in for the downloaded file: this exercises the
    # offline --weights-dir path, its strict check and its labels, not the model's quality.
    from deepface.models.demography.pytorch.Emotion import EmotionModel

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.save(EmotionModel().state_dict(), weights_dir / EMOTION.weights_file)
    lines: list[str] = []
    result = import_models([EMOTION.key], options(store, lines, weights_dir=weights_dir))[0]
    model = store.get(result.tag)
    assert model.info.labels["weights"] == "real"
    assert model.info.labels["source"] == f"deepface:{EMOTION.weights_file}"
    assert model.info.metadata["origin"] == str(weights_dir / EMOTION.weights_file)
    assert any(f"using {weights_dir}" in line for line in lines)


def test_a_wrong_weights_file_is_refused(store: ModelStore, tmp_path: Path) -> None:
    from deepface.models.demography.pytorch.Emotion import EmotionModel

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    wrong = {"params": EmotionModel().state_dict()}  # right format, wrong network
    torch.save(wrong, weights_dir / NIMA_TECHNICAL.weights_file)
    with pytest.raises(RuntimeError, match="state_dict"):
        import_models([NIMA_TECHNICAL.key], options(store, [], weights_dir=weights_dir))
    assert store.list() == []


def test_unreachable_sources_are_listed_before_anything_is_fetched(store: ModelStore) -> None:
    opts = options(store, [])
    closed = Plan(EMOTION, "real", "deepface:x", urls=("http://127.0.0.1:9/weights.pth",))
    (problem,) = preflight([closed], opts)
    assert problem.startswith("emotion: cannot reach http://127.0.0.1:9/weights.pth")
    # HF_HUB_OFFLINE is set for the tests and the temporary HF cache has no CLIP
    with pytest.raises(Unreachable, match="clip: HF_HUB_OFFLINE"):
        import_models([CLIP.key, BRISQUE.key], opts)
    assert store.list() == []  # BRISQUE, reachable, was not imported either


def test_cli_offline_exit_code_and_advice(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--only", "clip", "--weights", "real"]) == 2
    err = capsys.readouterr().err
    assert "clip: HF_HUB_OFFLINE" in err
    assert "--random-init" in err and "--weights-dir" in err


def test_cli_rejects_unknown_models() -> None:
    with pytest.raises(SystemExit):
        main(["--only", "clip,resnet"])
