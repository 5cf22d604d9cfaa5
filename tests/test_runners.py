"""Runners in-process: parity with each model's reference pipeline, and runner behaviour.

The store holds random-init weights (conftest's `model_store`), loaded through the same path
as real ones. Random NIMA gives almost the same score to every image, so its parity is
checked at 1e-6 on the raw output and on the backbone features, not only at the 1e-3 the
reported score needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from skimage import data
from sklearn.datasets import load_sample_images

from festora import preprocess
from festora.models import (
    BRISQUE,
    CLIP,
    FACES,
    NIMA_AESTHETIC,
    NIMA_TECHNICAL,
    SPECS,
    resolve,
    runner_config,
)
from festora.schemas import ModelStatus


def _photos() -> dict[str, np.ndarray]:
    china, flower = load_sample_images().images
    return {
        "astronaut": data.astronaut(),
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "china": china,
        "flower": flower,
    }


PHOTOS = _photos()
# Read at collection, before any test computes on this thread.
CPUS_AT_START = os.sched_getaffinity(0)


@pytest.fixture(scope="module")
def runners(model_store: Path) -> dict[str, Any]:
    """One instance of every runner, on the session's random-init store."""
    from runners.brisque import Brisque
    from runners.clip import CLIPEncoder
    from runners.faces import FaceAnalyzer
    from runners.nima import NimaAesthetic, NimaTechnical

    made = {
        CLIP.key: CLIPEncoder(),
        NIMA_TECHNICAL.key: NimaTechnical(),
        NIMA_AESTHETIC.key: NimaAesthetic(),
        BRISQUE.key: Brisque(),
        FACES.key: FaceAnalyzer(),
    }
    for key, runner in made.items():
        assert runner.loaded, f"{key}: {runner.error}"
    return made


def status(runner: Any) -> ModelStatus:
    return ModelStatus.model_validate(asyncio.run(runner.status()))


# ------------------------------------------------------------------------------- lifecycle


def test_status_reports_model_provenance(runners: dict[str, Any]) -> None:
    for key, runner in runners.items():
        st = status(runner)
        assert st.name == key
        assert st.loaded and st.error is None and st.load_time_ms > 0
        assert st.tag.startswith(SPECS[key].store_name + ":")
        expected = "real" if key == BRISQUE.key else "random-init"
        assert st.weights == expected
        assert (st.warning is not None and "random-init" in st.warning) == (
            expected == "random-init"
        )


def resident_bytes_of(file: Path) -> int:
    """Resident bytes of this process's mappings of `file` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split(maxsplit=5)
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                inside = len(fields) == 6 and fields[5].strip() == str(file.resolve())
            elif inside and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


@pytest.mark.parametrize("key", [CLIP.key, NIMA_TECHNICAL.key])
def test_a_loaded_runner_keeps_none_of_its_weights_file_resident(
    runners: dict[str, Any], key: str
) -> None:
    """OpenVINO keeps the IR's weights file mapped after copying the weights into its own
    layout: the runner gives those pages back, and computing does not read them again."""
    runner = runners[key]
    weights = runner.provenance.path / "openvino_model.bin"
    size = runner.input_size
    if key == CLIP.key:
        runner.encode(np.zeros((3, size, size, 3), np.uint8))
    else:
        runner.score(np.zeros((3, size, size, 3), np.uint8))
    assert weights.stat().st_size > 100e6
    assert resident_bytes_of(weights) < 0.02 * weights.stat().st_size


def test_computing_leaves_every_thread_free_to_run_on_every_core(runners: dict[str, Any]) -> None:
    """OpenVINO pins the threads that compute while they compute, by default each runner
    process's to the same first core: served, three runners took turns on one core while the
    other waited. Every thread's CPU set is read while the models compute."""
    assert len(CPUS_AT_START) > 1 or pytest.skip("one core: nothing to pin away from")
    photo = PHOTOS["astronaut"]
    clip_batch = np.stack([preprocess.clip_input(photo)])
    nima_batch = np.stack([preprocess.nima_input(photo)])
    face_image = preprocess.face_input(photo)[0]
    work = [
        lambda: runners[CLIP.key].encode(clip_batch),
        lambda: runners[NIMA_TECHNICAL.key].score(nima_batch),
        lambda: runners[FACES.key].analyze([face_image]),
    ]
    done = threading.Event()

    def compute() -> None:
        while not done.is_set():
            for step in work:
                step()

    computing = threading.Thread(target=compute)
    computing.start()
    seen: set[frozenset[int]] = set()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for task in Path("/proc/self/task").iterdir():
                with contextlib.suppress(OSError):  # a thread may end between the two calls
                    seen.add(frozenset(os.sched_getaffinity(int(task.name))))
    finally:
        done.set()
        computing.join()
    assert seen == {frozenset(CPUS_AT_START)}


@pytest.fixture
def empty_model_store(empty_store: Path) -> Iterator[None]:
    """Point the in-process model store at a BentoML home with no models, then restore it."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models.model import ModelStore

    previous = BentoMLContainer.model_store.get()
    BentoMLContainer.model_store.set(ModelStore(empty_store / "models"))
    try:
        yield
    finally:
        BentoMLContainer.model_store.set(previous)


def test_missing_model_reports_instead_of_crashing(empty_model_store: None) -> None:
    from runners.brisque import Brisque
    from runners.clip import CLIPEncoder

    for cls, call in (
        (CLIPEncoder, lambda r: r.encode(np.zeros((1, 224, 224, 3), np.uint8))),
        (Brisque, lambda r: r.score([np.zeros((8, 8, 3), np.uint8)])),
    ):
        runner = cls()
        st = status(runner)
        assert not st.loaded and st.load_time_ms is None
        assert f"{runner.spec.store_name}:latest is not in the model store" in st.error
        assert "import_models.py" in st.error
        with pytest.raises(RuntimeError, match="model not loaded"):
            call(runner)


def test_batching_and_threads_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from runners.clip import CLIPEncoder
    from runners.nima import NimaTechnical

    # the decorators read the environment at import: they match runner_config as imported
    assert CLIPEncoder.apis["encode"].batchable
    assert CLIPEncoder.apis["encode"].max_batch_size == runner_config(CLIP).max_batch_size
    assert (
        NimaTechnical.apis["score"].max_latency_ms == runner_config(NIMA_TECHNICAL).max_latency_ms
    )
    assert not CLIPEncoder.apis["status"].batchable

    monkeypatch.setenv("CLIP_MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("CLIP_MAX_LATENCY_MS", "1500")
    monkeypatch.setenv("CLIP_NUM_THREADS", "1")
    config = runner_config(CLIP)
    assert (config.max_batch_size, config.max_latency_ms, config.num_threads) == (8, 1500, 1)
    monkeypatch.setenv("CLIP_MAX_BATCH_SIZE", "1")  # BentoML needs at least 2
    with pytest.raises(ValueError, match="CLIP_MAX_BATCH_SIZE"):
        runner_config(CLIP)


# ------------------------------------------------------------------------------------ CLIP


def test_the_device_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from runners.serving.device import DEVICE_ENV, engine_name, wanted_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert wanted_device() == expected  # auto: a GPU when torch sees one
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert wanted_device() == "cpu" and engine_name("fp32") == "torch-fp32"
    monkeypatch.setenv(DEVICE_ENV, "cuda:1")
    assert wanted_device() == "cuda:1" and engine_name("bf16") == "torch-bf16-cuda:1"
    monkeypatch.setenv(DEVICE_ENV, "tpu")
    with pytest.raises(ValueError, match=DEVICE_ENV):
        wanted_device()


def test_auto_asks_torch_for_a_gpu_only_where_nvidias_driver_is_loaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torch

    from runners.serving import device

    def must_not_be_asked() -> bool:
        raise AssertionError("torch.cuda.is_available() loads the CUDA runtime")

    monkeypatch.setattr(device, "NVIDIA_DRIVER", tmp_path / "absent")
    monkeypatch.setattr(torch.cuda, "is_available", must_not_be_asked)
    device.cuda_available.cache_clear()
    try:
        assert device.wanted_device() == "cpu"
    finally:
        device.cuda_available.cache_clear()


def test_a_gpu_runner_without_a_gpu_says_so(
    model_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from runners.nima import NimaTechnical
    from runners.serving.device import DEVICE_ENV

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv(DEVICE_ENV, "cuda")
    runner = NimaTechnical()
    assert not runner.loaded
    assert "FESTORA_DEVICE=cuda but torch sees no CUDA device" in runner.error
    assert runner.model_status().engine == "torch-fp32-cuda"


@pytest.mark.parametrize("engine", ["openvino", "torch"])
def test_clip_matches_transformers_get_image_features(
    runners: dict[str, Any], monkeypatch: pytest.MonkeyPatch, engine: str
) -> None:
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    _, prov = resolve(CLIP)
    model = CLIPModel.from_pretrained(prov.path).eval()
    processor = CLIPImageProcessor.from_pretrained(prov.path)

    def reference(images: list[np.ndarray]) -> np.ndarray:
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            vectors = model.get_image_features(pixel_values=pixels).pooler_output
        return torch.nn.functional.normalize(vectors, dim=-1).numpy()

    crops = np.stack([preprocess.clip_input(p) for p in PHOTOS.values()])
    runner = runners[CLIP.key] if engine == "openvino" else torch_runner(CLIP.key, monkeypatch)
    assert runner.engine == f"{engine}-fp32"
    ours = runner.encode(crops)
    assert ours.shape == (len(PHOTOS), 512) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)

    same_input = np.sum(ours * reference(list(crops)), axis=1)
    assert same_input.min() >= 0.9999, same_input
    # and against the processor's own resize + crop of the full photos
    full_pipeline = np.sum(ours * reference([p.copy() for p in PHOTOS.values()]), axis=1)
    assert full_pipeline.min() >= 0.9999, full_pipeline
    # not vacuous: the random tower still tells these photos apart
    assert (ours @ ours.T)[np.triu_indices(len(PHOTOS), 1)].max() < 0.999


def test_clip_batches_give_the_same_vectors_as_single_images(runners: dict[str, Any]) -> None:
    crops = np.stack([preprocess.clip_input(p) for p in PHOTOS.values()])
    encoder = runners[CLIP.key]
    batched = encoder.encode(crops)
    single = np.concatenate([encoder.encode(crops[i : i + 1]) for i in range(len(crops))])
    np.testing.assert_allclose(batched, single, atol=1e-5)


@pytest.mark.slow
def test_served_clip_batches_concurrent_requests(model_store: Path) -> None:
    """`bentoml serve runners.clip:CLIPEncoder`: 24 concurrent one-image requests are served
    in fewer batches, as BentoML's own batch-size histogram on /metrics shows."""
    import socket

    import bentoml
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    image = preprocess.clip_input(PHOTOS["astronaut"])[None]

    async def concurrent_requests(url: str) -> list[np.ndarray]:
        async with bentoml.AsyncHTTPClient(url, server_ready_timeout=180) as client:
            await client.encode(images=image)  # first batch: model warm, dispatcher started
            return await asyncio.gather(*(client.encode(images=image) for _ in range(24)))

    with bentoml.serve("runners.clip:CLIPEncoder", host="127.0.0.1", port=port) as server:
        vectors = asyncio.run(concurrent_requests(server.url))
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert all(v.shape == (1, 512) and v.dtype == np.float32 for v in vectors)
    samples = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("bentoml_service_adaptive_batch_size_")
        and 'method_name="encode"' in line
        and "_bucket" not in line
    }
    requests, batches = (
        samples[f"bentoml_service_adaptive_batch_size_{k}"] for k in ("sum", "count")
    )
    assert requests == 25 and batches < requests, samples


def test_clip_rejects_wrong_input(runners: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="224"):
        runners[CLIP.key].encode(np.zeros((1, 299, 299, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        runners[CLIP.key].encode(np.zeros((1, 224, 224, 3), np.float32))


# ------------------------------------------------------------------------------------ NIMA


def torch_runner(key: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A runner computing with torch (FESTORA_ENGINE=torch) instead of the stored OpenVINO IR."""
    from runners.clip import CLIPEncoder
    from runners.nima import NimaAesthetic, NimaTechnical
    from runners.serving.openvino_ir import ENGINE_ENV

    monkeypatch.setenv(ENGINE_ENV, "torch")
    cls = {CLIP.key: CLIPEncoder, NIMA_TECHNICAL.key: NimaTechnical}.get(key, NimaAesthetic)
    runner = cls()
    assert runner.loaded, runner.error
    assert runner.engine == "torch-fp32"
    return runner


@pytest.mark.parametrize("engine", ["openvino", "torch"])
@pytest.mark.parametrize(
    ("key", "metric"), [(NIMA_TECHNICAL.key, "nima-koniq"), (NIMA_AESTHETIC.key, "nima")]
)
def test_nima_matches_pyiqa(
    runners: dict[str, Any], monkeypatch: pytest.MonkeyPatch, key: str, metric: str, engine: str
) -> None:
    import pyiqa
    import torch

    from runners.nima import backbone_without_download

    spec = SPECS[key]
    _, prov = resolve(spec)
    with backbone_without_download():  # pyiqa would fetch ImageNet weights it then replaces
        reference = pyiqa.create_metric(
            metric, device="cpu", pretrained_model_path=str(prov.path / spec.weights_file)
        )
    runner = runners[key] if engine == "openvino" else torch_runner(key, monkeypatch)
    assert runner.engine == f"{engine}-fp32"
    batch = np.stack([preprocess.nima_input(p) for p in PHOTOS.values()])
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        expected_raw = reference(x).reshape(-1).numpy()
        if engine == "torch":  # random-init scores barely vary: compare the features too
            net = reference.net
            features = net.base_model(net.preprocess(x))[-1].mean((2, 3))
            ours = runner._net.base_model(runner._net.preprocess(x))[-1].mean((2, 3))
            torch.testing.assert_close(ours, features, atol=1e-6, rtol=0)

    np.testing.assert_allclose(runner._raw(batch), expected_raw, atol=1e-6)
    scores = runner.score(batch)
    assert scores.shape == (len(PHOTOS),) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, runner._to_scale(expected_raw), atol=1e-3)
    assert np.all((scores >= 1.0) & (scores <= 10.0))


def test_nima_input_matches_pyiqa_resize_and_crop() -> None:
    import torch
    import torchvision.transforms.functional as tvf

    for name, photo in PHOTOS.items():
        x = torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255
        theirs = tvf.center_crop(tvf.resize(x, 299), 299)  # pyiqa NIMA.preprocess, eval mode
        ours = torch.from_numpy(preprocess.nima_input(photo)).permute(2, 0, 1).float() / 255
        diff = (ours - theirs).abs()
        assert diff.max() <= 1.5 / 255 and diff.mean() <= 0.002, name


def test_nima_technical_and_aesthetic_are_not_swapped(monkeypatch: pytest.MonkeyPatch) -> None:
    technical = torch_runner(NIMA_TECHNICAL.key, monkeypatch)
    aesthetic = torch_runner(NIMA_AESTHETIC.key, monkeypatch)
    assert technical.provenance.metadata["pyiqa_metric"] == "nima-koniq"
    assert technical.provenance.metadata["train_dataset"] == "koniq"
    assert aesthetic.provenance.metadata["pyiqa_metric"] == "nima"
    # KonIQ NIMA regresses one MOS; AVA NIMA predicts a 10-bin score distribution
    assert technical._net.classifier[2].out_features == 1
    assert aesthetic._net.classifier[2].out_features == 10


def test_nima_batches_across_forward_chunks_score_as_single_images(
    runners: dict[str, Any],
) -> None:
    from runners.nima import FORWARD_CHUNK

    photos = [preprocess.nima_input(p) for p in PHOTOS.values()]
    batch = np.stack([photos[i % len(photos)] for i in range(2 * FORWARD_CHUNK + 1)])
    runner = runners[NIMA_AESTHETIC.key]
    batched = runner.score(batch)
    single = np.concatenate([runner.score(batch[i : i + 1]) for i in range(len(batch))])
    assert batched.shape == (len(batch),)
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_nima_technical_scale() -> None:
    from runners.nima import technical_score

    raw = np.array([-0.2, 0.0, 0.5, 1.0, 1.3], np.float32)
    np.testing.assert_allclose(technical_score(raw), [1.0, 1.0, 5.5, 10.0, 10.0])


# --------------------------------------------------------------------------------- BRISQUE


def test_brisque_matches_the_brisque_package(runners: dict[str, Any]) -> None:
    from brisque import BRISQUE as Reference

    reference = Reference(url=False)  # the SVM shipped in the package, as imported
    images = [preprocess.brisque_input(p) for p in PHOTOS.values()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = [reference.score(image) for image in images]
    assert runners[BRISQUE.key].score(images) == pytest.approx(expected, abs=1e-9)


def test_brisque_is_none_where_undefined(runners: dict[str, Any]) -> None:
    flat = np.full((120, 160, 3), 90, np.uint8)
    rng = np.random.default_rng(3)
    one_pixel = rng.integers(0, 256, (1, 1, 3), np.uint8)
    sliver = preprocess.brisque_input(rng.integers(0, 256, (6, 4000, 3), np.uint8))
    coffee = preprocess.brisque_input(PHOTOS["coffee"])
    scores = runners[BRISQUE.key].score([flat, one_pixel, sliver, coffee])
    # An undefined image never fails the others of its batch.
    assert scores[:3] == [None, None, None] and isinstance(scores[3], float)


def test_brisque_input_analysis_size() -> None:
    import cv2

    big = cv2.resize(PHOTOS["china"], (1600, 1067), interpolation=cv2.INTER_CUBIC)
    assert max(preprocess.brisque_input(big).shape[:2]) == preprocess.BRISQUE_LONG_SIDE
    small = PHOTOS["chelsea"]
    assert preprocess.brisque_input(small) is small  # never enlarged


# ------------------------------------------------------------------------------ preprocess


def test_clip_input_matches_the_processor_resize_and_crop() -> None:
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor()
    for name, photo in PHOTOS.items():
        theirs = processor(
            images=photo.copy(), do_rescale=False, do_normalize=False, return_tensors="np"
        )["pixel_values"][0].transpose(1, 2, 0)
        ours = preprocess.clip_input(photo)
        assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
        diff = np.abs(ours.astype(int) - np.round(theirs).astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01, name


def test_preprocess_shapes_and_validation() -> None:
    panorama = np.zeros((100, 5000, 3), np.uint8)  # beyond 8:1, cut before resizing
    assert preprocess.clip_input(panorama).shape == (224, 224, 3)
    assert preprocess.nima_input(panorama).shape == (299, 299, 3)
    tiny = np.zeros((10, 20, 3), np.uint8)  # enlarged like the reference processors do
    assert preprocess.nima_input(tiny).shape == (299, 299, 3)
    image, scale = preprocess.face_input(tiny)
    assert image is tiny and scale == 1.0
    with pytest.raises(ValueError, match="uint8"):
        preprocess.clip_input(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="H x W x 3"):
        preprocess.nima_input(np.zeros((10, 10, 4), np.uint8))


def test_scale_faces_clips_to_the_image() -> None:
    face = {
        "dominant_emotion": "happy",
        "region": {"x": 300, "y": 10, "w": 50, "h": 40},
        "landmarks": {"nose": [320.0, 30.0], "left_eye": [330.0, 210.0]},
    }
    (mapped,) = preprocess.scale_faces([face], 0.5, 650, 400)
    assert mapped["region"] == {"x": 600, "y": 20, "w": 50, "h": 80}
    assert mapped["landmarks"] == {"nose": [640.0, 60.0], "left_eye": [649.0, 399.0]}
    assert mapped["dominant_emotion"] == "happy" and face["region"]["x"] == 300
