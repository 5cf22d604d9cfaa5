"""scripts/import_models.py: labels, idempotency, reproducibility and failing fast offline.

Each test writes to its own temporary model store; the session store is filled by
conftest's `model_store` fixture through the same script.
"""

from __future__ import annotations

import asyncio
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from bentoml._internal.models.model import ModelStore

from festora.models import (
    BRISQUE,
    CLIP,
    EMOTION,
    FACE_MODEL_FILES,
    FACES,
    NIMA_TECHNICAL,
    sha256_file,
)
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
    files = emotion.info.metadata["files"]
    assert files[EMOTION.weights_file] == labels["sha256"]
    # and the IR the face runner scores with, beside it
    assert set(files) == {EMOTION.weights_file, "openvino_model.xml", "openvino_model.bin"}
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
    from runners.serving.int8 import MAX_SCORE_DIFFERENCE
    from runners.serving.openvino_ir import INT8_IR_FILE, IR_FILE, compile_ir

    lines: list[str] = []
    opts = options(store, lines, weights="random-init")
    first = import_models([NIMA_TECHNICAL.key], opts)[0]
    folder = Path(store.get(first.tag).path)
    assert (folder / IR_FILE).is_file() and (folder / "openvino_model.bin").is_file()
    assert any("OpenVINO" in line for line in lines)
    # and its int8 copy, kept because it scored like fp32 on photos it was not calibrated on
    verdict = store.get(first.tag).info.metadata["int8"]
    assert verdict["stored"] and (folder / INT8_IR_FILE).is_file()
    assert verdict["measure"] == "max score difference"
    assert 0 < verdict["value"] <= verdict["bound"] == MAX_SCORE_DIFFERENCE
    assert any("int8 IR kept" in line for line in lines)

    # the IR computes what the stored weights compute, on the runner's uint8 input
    net = build_nima(NIMA_TECHNICAL)
    load_nima_weights(net, folder / NIMA_TECHNICAL.weights_file)
    images = np.random.default_rng(0).integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    with torch.inference_mode():
        expected = uint8_forward(net.eval())(torch.from_numpy(images)).numpy()
    compiled = compile_ir(folder, "fp32", 1)
    np.testing.assert_allclose(compiled(images)[0].reshape(-1), expected, atol=1e-6)

    (folder / IR_FILE).unlink()  # as stored by a version before IRs: imported again
    without_int8 = options(store, lines, weights="random-init", int8=False)
    again = import_models([NIMA_TECHNICAL.key], without_int8)[0]
    assert again.imported and again.tag != first.tag
    again_folder = Path(store.get(again.tag).path)
    assert (again_folder / IR_FILE).is_file() and not (again_folder / INT8_IR_FILE).exists()
    assert store.get(again.tag).info.metadata["int8"] == {"stored": False, "skipped": "--no-int8"}


def test_a_clip_entry_without_the_text_tower_is_imported_again(store: ModelStore) -> None:
    """find_present only accepts a festora-clip entry holding both towers' IRs, the tokenizer,
    the logit scale and the int8 verdict; an older one (image tower only) is imported again."""
    import bentoml

    from festora.models import CLIP_TEXT_IR_FILE, CLIP_TOKENIZER_FILE, model_labels
    from runners.serving.openvino_ir import IR_FILE
    from scripts.import_models import find_present, plan

    opts = options(store, [], weights="random-init")
    clip = plan(CLIP, opts)

    def stored(files: list[str], metadata: dict[str, float]) -> bentoml.Model:
        labels = model_labels(CLIP, "random-init", clip.source, "0" * 64)
        with bentoml.models.create(
            CLIP.store_name, labels=labels, metadata=metadata, _model_store=store
        ) as model:
            for name in files:
                (Path(model.path) / name).write_bytes(b"x")
        return model

    stored([CLIP.weights_file, IR_FILE], {})  # as imported before the text tower
    assert find_present(clip, opts) is None
    files = [CLIP.weights_file, IR_FILE, CLIP_TEXT_IR_FILE, CLIP_TOKENIZER_FILE]
    stored(files, {})
    assert find_present(clip, opts) is None  # no logit scale
    stored(files, {"logit_scale": 100.0})
    assert find_present(clip, opts) is None  # imported before int8: no verdict
    complete = stored(files, {"logit_scale": 100.0, "int8": {"stored": False}})
    assert find_present(clip, opts).tag == complete.tag


def test_calibration_photos_come_from_a_folder_upright_and_reduced(tmp_path: Path) -> None:
    """--calibration-photos DIR: its photos (other files ignored), turned upright by their
    EXIF orientation and reduced to 1024 px; a folder without photos is refused."""
    from PIL import Image

    from runners.serving.int8 import sample_photos

    wide = np.zeros((1500, 3000, 3), np.uint8)
    wide[:, :1500] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(wide).save(tmp_path / "b-rotated.jpg", exif=exif.tobytes())
    Image.fromarray(wide[:600, :800]).save(tmp_path / "a-small.png")
    (tmp_path / "notes.txt").write_text("not a photo")

    small, rotated = sample_photos(tmp_path)
    assert small.shape == (600, 800, 3)
    assert rotated.shape == (1024, 512, 3)  # upright: tall, long side reduced
    assert rotated[:400].mean() > 200 and rotated[-400:].mean() < 50  # white half on top
    assert len(sample_photos()) == 2  # scikit-learn's, by default

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no photos"):
        sample_photos(empty)


def test_offline_clip_tokenizer_is_shaped_like_clips() -> None:
    from transformers import CLIPTextConfig

    from scripts.import_models import offline_clip_tokenizer

    config = CLIPTextConfig()
    tokenizer = offline_clip_tokenizer(config)
    ids = tokenizer("A dog!")["input_ids"]
    # the ids CLIP's real vocabulary gives these symbols: "a</w>" 320, "d" 67, "o" 78,
    # "g</w>" 326, "!</w>" 256 (no merges: "dog" stays three tokens)
    assert ids == [config.bos_token_id, 320, 67, 78, 326, 256, config.eos_token_id]
    assert max(tokenizer.get_vocab().values()) < config.vocab_size
    assert tokenizer.model_max_length == config.max_position_embeddings == 77


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


# ------------------------------------------------------------------- real files, as released


@pytest.fixture
def active_store(store: ModelStore) -> Iterator[ModelStore]:
    """`store` as the in-process active model store, where runners look their model up."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    previous = BentoMLContainer.model_store.get()
    BentoMLContainer.model_store.set(store)
    try:
        yield store
    finally:
        BentoMLContainer.model_store.set(previous)


@pytest.mark.parametrize("engine", ["openvino", "torch"])
def test_legacy_format_nima_files_import_and_load(
    active_store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    """pyiqa's release files are in torch's legacy (non-zip) format, which cannot be mmapped."""
    from runners.nima import NimaTechnical, build_nima, uint8_forward
    from runners.serving.openvino_ir import ENGINE_ENV

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.manual_seed(1)
    net = build_nima(NIMA_TECHNICAL).eval()
    legacy = weights_dir / NIMA_TECHNICAL.weights_file
    torch.save({"params": net.state_dict()}, legacy, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(legacy)

    opts = options(active_store, [], weights_dir=weights_dir, int8=False)
    result = import_models([NIMA_TECHNICAL.key], opts)
    assert result[0].imported and result[0].weights == "real"

    monkeypatch.setenv(ENGINE_ENV, "torch" if engine == "torch" else "auto")
    runner = NimaTechnical()  # the runner's own loading path (torch: the .pth file itself)
    assert runner.loaded, runner.error
    assert runner.engine == f"{engine}-fp32" and runner.provenance.weights == "real"
    images = np.random.default_rng(0).integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    with torch.inference_mode():
        expected = uint8_forward(net)(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(runner._raw(images), expected, atol=1e-5)


def test_cli_reports_an_import_failure_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deepface.models.demography.pytorch.Emotion import EmotionModel

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.save({"params": EmotionModel().state_dict()}, weights_dir / NIMA_TECHNICAL.weights_file)
    assert main(["--only", NIMA_TECHNICAL.key, "--weights-dir", str(weights_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"import failed: {NIMA_TECHNICAL.key}: could not import {weights_dir}")
    assert "state_dict" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_a_clip_folder_without_its_processor_is_refused_with_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip_dir = tmp_path / "weights" / "clip"
    tiny_clip(336).save_pretrained(clip_dir)  # the model alone, as save_pretrained writes it
    assert main(["--only", CLIP.key, "--weights-dir", str(tmp_path / "weights")]) == 2
    err = capsys.readouterr().err
    assert f"clip: {clip_dir} has no preprocessor_config.json" in err
    assert "hf download" in err and "Traceback" not in err


def tiny_clip(size: int) -> Any:
    """A small random CLIP whose vision tower takes `size` px (ViT-L/14-336's layout at 336)."""
    from transformers import CLIPConfig, CLIPModel

    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    layers |= {"num_attention_heads": 2, "projection_dim": 16}
    torch.manual_seed(0)
    return CLIPModel(
        CLIPConfig(
            text_config=layers,
            vision_config={
                **layers,
                "image_size": size,
                "patch_size": 14,
            },
            projection_dim=16,
        )
    ).eval()


def save_clip_snapshot(folder: Path, size: int) -> Any:
    """A folder laid out as a hub snapshot: the model, its processor config and a tokenizer."""
    from transformers import CLIPImageProcessor

    from scripts.import_models import offline_clip_tokenizer

    model = tiny_clip(size)
    model.save_pretrained(folder)
    offline_clip_tokenizer(model.config.text_config).save_pretrained(folder)
    processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    processor.save_pretrained(folder)
    return model, processor


@pytest.mark.parametrize("engine", ["openvino", "torch"])
def test_a_336_px_clip_is_fed_at_its_processor_size(
    active_store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    from skimage import data

    from festora.preprocess import clip_input
    from festora.schemas import ModelStatus
    from runners.clip import CLIPEncoder
    from runners.serving.openvino_ir import ENGINE_ENV

    model, processor = save_clip_snapshot(tmp_path / "weights" / "clip", 336)
    opts = options(
        active_store,
        [],
        weights_dir=tmp_path / "weights",
        clip_model_name="openai/clip-vit-large-patch14-336",
        int8=False,
    )
    (result,) = import_models([CLIP.key], opts)
    assert active_store.get(result.tag).info.metadata["input_size"] == 336

    monkeypatch.setenv(ENGINE_ENV, "torch" if engine == "torch" else "auto")
    runner = CLIPEncoder()
    assert runner.loaded, runner.error
    status = ModelStatus.model_validate(asyncio.run(runner.status()))
    assert status.input_size == 336 and runner.engine == f"{engine}-fp32"

    photo = data.astronaut()
    ours = runner.encode(clip_input(photo, status.input_size)[None])
    pixels = processor(images=[photo], return_tensors="pt")["pixel_values"]
    assert pixels.shape[-1] == 336
    with torch.inference_mode():
        theirs = model.get_image_features(pixel_values=pixels).pooler_output
    theirs = torch.nn.functional.normalize(theirs, dim=-1).numpy()
    assert float(np.sum(ours * theirs)) >= 0.999
    with pytest.raises(ValueError, match="336"):
        runner.encode(clip_input(photo)[None])  # a 224 px crop is refused, not mis-scored


def test_face_models_come_from_the_mediapipe_wheel_real_in_every_mode(
    store: ModelStore, tmp_path: Path
) -> None:
    """The wheel is fetched by pip (its sha256 checked) and its three files extracted, also
    when everything else is random-init; --weights-dir takes the extracted files instead, and
    a file that is not MediaPipe's is refused."""
    from scripts.import_models import FACE_FILE_SHA256, MEDIAPIPE_WHEEL, ImportFailed

    lines: list[str] = []
    (result,) = import_models([FACES.key], options(store, lines, weights="random-init"))
    model = store.get(result.tag)
    assert model.info.labels["weights"] == "real"
    assert model.info.labels["source"] == "pypi:mediapipe==0.10.21"
    assert model.info.labels["license"].startswith("Apache-2.0")
    assert MEDIAPIPE_WHEEL in model.info.metadata["origin"]
    assert model.info.metadata["files"] == FACE_FILE_SHA256
    assert any("pip download --no-deps mediapipe==0.10.21" in line for line in lines)

    extracted = tmp_path / "weights"
    extracted.mkdir()
    for name in FACE_MODEL_FILES:
        (extracted / name).write_bytes((Path(model.path) / name).read_bytes())
    again = import_models([FACES.key], options(store, [], weights_dir=extracted, force=True))[0]
    assert store.get(again.tag).info.metadata["origin"] == str(extracted)

    (extracted / FACE_MODEL_FILES[1]).write_bytes(b"not a model")
    with pytest.raises(ImportFailed, match="sha256"):
        import_models([FACES.key], options(store, [], weights_dir=extracted, force=True))
