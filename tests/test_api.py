"""The v1 contract end to end: a real `bentoml serve` with every runner on generated weights,
called over raw HTTP and with the generated `bentoml.SyncHTTPClient`."""

from __future__ import annotations

import base64
import io
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import numpy as np
import psutil
import pytest
from PIL import Image
from skimage import data as skdata

from festora.embeddings import encode_base64
from tests import imagecorpus
from tests.httpserver import LocalHttpServer, send_bytes
from tests.openai_server import OpenAICompatServer, Reply
from tests.serving import Server, serve

pytestmark = pytest.mark.slow

FLAGS = ("run_blur", "run_quality", "run_emotion", "run_embedding")
LLM_KEY = "sk-festora-llm-secret-9e2b"
LLM_MODEL = "openai/festora-critic"


def jpeg_bytes(rgb: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PORTRAIT = jpeg_bytes(skdata.astronaut())
GRADIENT = jpeg_bytes(
    np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1))[..., None].repeat(3, 2)
)


@pytest.fixture(scope="module")
def llm() -> Iterator[OpenAICompatServer]:
    with OpenAICompatServer() as provider:
        yield provider


@pytest.fixture(scope="module")
def server(
    model_store: Path, llm: OpenAICompatServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {
        "LLM_API_BASE": llm.base_url,
        "LLM_API_KEY": LLM_KEY,
        "LLM_DEFAULT_MODEL": LLM_MODEL,
        "LLM_TIMEOUT_SECONDS": "3",
        "ALLOW_PRIVATE_URLS": "true",
        "RATE_LIMIT_ENABLED": "false",
        "MAX_IMAGE_SIZE_BYTES": str(2_000_000),
        "MAX_IMAGE_PIXELS": str(30_000_000),
        "ENVIRONMENT": "test",
    }
    with serve(env, tmp_path_factory.mktemp("logs") / "open.log") as running:
        yield running


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120, follow_redirects=True) as client:
        yield client


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[bentoml.SyncHTTPClient]:
    with bentoml.SyncHTTPClient(server.url, timeout=120) as generated:
        yield generated


@pytest.fixture(scope="module")
def images() -> Iterator[LocalHttpServer]:
    with LocalHttpServer() as files:
        files.route("/portrait.jpg", send_bytes(PORTRAIT, content_type="image/jpeg"))
        files.route("/missing.jpg", send_bytes(b"gone", status=404))
        yield files


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and isinstance(body["message"], str) and body["message"]
    return body


# ---- health and BentoML's own endpoints ----------------------------------------------------


def test_health_lists_every_model_and_says_weights_are_random(http: httpx.Client) -> None:
    for path in ("/health", "/v1/health"):
        body = http.get(path).json()
        assert body["status"] == "degraded"
        assert body["environment"] == "test" and body["version"]
        assert body["uptime_seconds"] > 0
        names = {m["name"] for m in body["models"]}
        assert names == {
            "clip",
            "clip_text",
            "nima_technical",
            "nima_aesthetic",
            "brisque",
            "faces",
        }
        for model in body["models"]:
            assert model["loaded"] is True, model
            assert model["load_time_ms"] > 0 and model["tag"]
        weights = {m["name"]: m["weights"] for m in body["models"]}
        assert weights["brisque"] == "real"
        assert weights["clip"] == weights["nima_aesthetic"] == "random-init"
        towers = {m["name"]: m for m in body["models"] if m["name"].startswith("clip")}
        assert towers["clip_text"]["tag"] == towers["clip"]["tag"]  # one checkpoint
        assert towers["clip_text"]["engine"] == "openvino-fp32"
        faces = next(m for m in body["models"] if m["name"] == "faces")
        # the face models are real, the emotion CNN beside them is not
        assert faces["weights"] == "random-init" and "festora-emotion:" in faces["tag"]
        assert faces["engine"].startswith("openvino-") and "blazeface-full" in faces["engine"]


def test_no_serving_process_loads_torch_on_a_cpu(http: httpx.Client, server: Server) -> None:
    """Every model computes with its OpenVINO IR here: torch (and the CUDA runtime it would
    look for) would cost each process that loads it about 360 MB."""
    assert http.get("/health").status_code == 200  # every runner has loaded by now
    tree = psutil.Process(server.process.pid).children(recursive=True)
    assert len(tree) >= 7  # the API worker and six runners
    for process in tree:
        libraries = {Path(m.path).name for m in process.memory_maps() if m.path}
        assert not any(name.startswith("libtorch") for name in libraries), process.cmdline()


def test_bentoml_endpoints_keep_working(http: httpx.Client) -> None:
    for path in ("/readyz", "/livez", "/metrics", "/", "/docs", "/docs.json", "/schema.json"):
        assert http.get(path).status_code == 200, path


# ---- /v1/analyze ---------------------------------------------------------------------------


def test_analyze_base64_portrait_returns_every_analysis(http: httpx.Client) -> None:
    response = http.post("/v1/analyze", json={"image": {"data": b64(PORTRAIT), "image_id": "a1"}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["api_version"] == "1.0"
    result = body["result"]
    assert result["image_id"] == "a1" and result["source_url"] is None and result["error"] is None
    assert (result["width_px"], result["height_px"]) == (512, 512)
    assert result["blur"]["is_blurry"] is False and result["blur"]["blur_threshold"] == 10.0
    quality = result["quality"]
    assert 0 <= quality["brisque_score"] <= 150
    assert 1.0 <= quality["nima_technical_score"] <= 10.0
    assert quality["overall_quality"] in {"low", "medium", "high"}
    assert 1.0 <= result["aesthetic"]["nima_aesthetic_score"] <= 10.0
    embedding = result["embedding"]
    assert embedding["dimensions"] == 512 == len(embedding["vector"])
    assert embedding["model"] == "openai/clip-vit-base-patch32"
    assert abs(np.linalg.norm(embedding["vector"]) - 1.0) < 1e-4
    emotion = result["emotion"]
    assert emotion["faces_detected"] >= 1 == (emotion["faces_detected"] > 0)
    face = emotion["faces"][0]
    region = face["region"]
    # The astronaut's face sits in the upper middle of the 512 x 512 photo.
    assert 100 < region["x"] + region["w"] / 2 < 350 and 40 < region["y"] + region["h"] / 2 < 250
    assert 40 < region["w"] < 300
    assert set(face["scores"]) == {
        "angry",
        "disgust",
        "fear",
        "happy",
        "sad",
        "surprise",
        "neutral",
    }
    assert abs(sum(face["scores"].values()) - 100) < 0.5
    assert face["dominant_emotion"] == max(face["scores"], key=face["scores"].get)
    assert 0 <= face["face_confidence"] <= 1
    assert emotion["detector"] == "blazeface-full"
    assert face["eyes"]["open"] is True and face["is_blurry"] is False
    assert set(face["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    assert set(face["pose"]) == {"yaw", "pitch", "roll"}
    assert face["size_fraction"] == pytest.approx(region["h"] / 512, abs=0.01)
    assert result["processing_time_ms"] > 0


def test_image_without_a_face_has_no_emotion(http: httpx.Client) -> None:
    body = http.post("/v1/analyze", json={"image": {"data": b64(GRADIENT)}}).json()
    assert body["result"]["emotion"] is None
    assert body["result"]["blur"]["is_blurry"] is True


def test_flat_image_omits_the_undefined_brisque_with_a_warning(http: httpx.Client) -> None:
    flat = jpeg_bytes(np.full((300, 400, 3), 128, dtype=np.uint8))
    result = http.post("/v1/analyze", json={"image": {"data": b64(flat)}}).json()["result"]
    assert result["error"] is None and result["quality"] is None
    assert "BRISQUE" in result["warnings"][0]
    assert result["aesthetic"]["nima_aesthetic_score"] >= 1
    assert result["blur"]["is_blurry"] is True


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (4000, 6), (6, 2000)])
def test_tiny_and_extreme_images_get_every_analysis(
    client: bentoml.SyncHTTPClient, size: tuple[int, int]
) -> None:
    rgb = np.random.default_rng(2).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    body = client.analyze_batch(
        {"images": [{"data": b64(buffer.getvalue())}, {"data": b64(PORTRAIT)}]}
    )
    tiny, portrait = body["results"]
    assert tiny["error"] is None, tiny
    assert (tiny["width_px"], tiny["height_px"]) == size
    assert tiny["blur"] and tiny["embedding"] and tiny["aesthetic"]
    assert portrait["error"] is None and portrait["emotion"]["faces_detected"] >= 1


@pytest.mark.parametrize("flags", list(itertools.product([False, True], repeat=4)))
def test_every_flag_combination(client: bentoml.SyncHTTPClient, flags: tuple[bool, ...]) -> None:
    requested = dict(zip(FLAGS, flags, strict=True))
    result = client.analyze({"image": {"data": b64(PORTRAIT)}, **requested})["result"]
    assert (result["blur"] is not None) == requested["run_blur"]
    assert (result["quality"] is not None) == requested["run_quality"]
    assert (result["aesthetic"] is not None) == requested["run_quality"]
    assert (result["emotion"] is not None) == requested["run_emotion"]
    assert (result["embedding"] is not None) == requested["run_embedding"]
    assert (result["width_px"], result["height_px"]) == (512, 512)


def test_analyze_by_url_from_a_local_server(http: httpx.Client, images: LocalHttpServer) -> None:
    url = images.url("/portrait.jpg")
    body = http.post("/v1/analyze", json={"image": {"url": url}, "run_emotion": False}).json()
    assert body["result"]["source_url"] == url
    assert body["result"]["width_px"] == 512


def test_upload_gives_the_same_result_as_base64(http: httpx.Client) -> None:
    flags = {"run_emotion": "false", "run_embedding": "true", "image_id": "up-1"}
    uploaded = http.post(
        "/v1/analyze/upload", files={"image": ("p.jpg", PORTRAIT, "image/jpeg")}, data=flags
    )
    assert uploaded.status_code == 200, uploaded.text
    result = uploaded.json()["result"]
    inline = http.post(
        "/v1/analyze", json={"image": {"data": b64(PORTRAIT)}, "run_emotion": False}
    ).json()["result"]
    assert result["image_id"] == "up-1" and result["emotion"] is None
    assert result["blur"] == inline["blur"]
    assert result["quality"] == inline["quality"]
    assert np.allclose(result["embedding"]["vector"], inline["embedding"]["vector"], atol=1e-6)


def test_generated_client_uploads_a_file(client: bentoml.SyncHTTPClient, tmp_path: Path) -> None:
    photo = tmp_path / "portrait.jpg"
    photo.write_bytes(PORTRAIT)
    body = client.analyze_upload(image=photo, image_id="cli-1", run_quality=False)
    assert body["result"]["image_id"] == "cli-1" and body["result"]["quality"] is None
    assert body["result"]["emotion"]["faces_detected"] >= 1


def test_exif_rotated_photo_reports_upright_size(http: httpx.Client) -> None:
    rotated = imagecorpus.jpeg(imagecorpus.quadrants(640, 480), orientation=6)
    body = http.post("/v1/analyze", json={"image": {"data": b64(rotated)}}).json()
    assert (body["result"]["width_px"], body["result"]["height_px"]) == (480, 640)


# ---- errors of the single-image endpoints -------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"image": {}},
        {"image": {"url": "http://a/x.jpg", "data": "AAAA"}},
        {"image": {"data": "AAAA", "image_id": "x" * 129}},
        {"image": {"data": "AAAA"}, "run_blur": "sometimes"},
        {"images": []},
    ],
)
def test_invalid_bodies_are_422_validation_error(http: httpx.Client, payload: dict) -> None:
    body = assert_error(http.post("/v1/analyze", json=payload), 422, "validation_error")
    assert isinstance(body["detail"], list) and body["detail"]


def test_malformed_json_is_422_validation_error(http: httpx.Client) -> None:
    response = http.post(
        "/v1/analyze", content=b'{"image": {"data": ', headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "validation_error")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not an image at all",
        imagecorpus.truncated_jpeg(),
        imagecorpus.png_with_bad_checksum(),
    ],
)
def test_undecodable_images_are_422_image_decode_error(http: httpx.Client, data: bytes) -> None:
    response = http.post("/v1/analyze", json={"image": {"data": b64(data) or "===="}})
    assert response.status_code == 422
    assert response.json()["error"] in {"image_decode_error", "validation_error"}


def test_bad_base64_is_image_decode_error(http: httpx.Client) -> None:
    response = http.post("/v1/analyze", json={"image": {"data": "!!!not base64!!!"}})
    assert_error(response, 422, "image_decode_error")


def test_unreachable_url_is_image_fetch_error(http: httpx.Client, images: LocalHttpServer) -> None:
    response = http.post("/v1/analyze", json={"image": {"url": images.url("/missing.jpg")}})
    assert_error(response, 422, "image_fetch_error")


def test_image_over_max_bytes_is_413(http: httpx.Client) -> None:
    big = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)
    data = jpeg_bytes(big, quality=100)
    assert len(data) > 2_000_000
    response = http.post("/v1/analyze", json={"image": {"data": b64(data)}})
    assert_error(response, 413, "image_too_large")
    upload = http.post("/v1/analyze/upload", files={"image": ("big.jpg", data, "image/jpeg")})
    assert_error(upload, 413, "image_too_large")


def test_decompression_bomb_is_refused_before_decoding(http: httpx.Client) -> None:
    bomb = jpeg_bytes(np.zeros((6000, 6000, 3), dtype=np.uint8), quality=10)  # 36 MP > 30 MP
    response = http.post("/v1/analyze", json={"image": {"data": b64(bomb)}})
    assert_error(response, 413, "image_too_large")


# ---- /v1/analyze/batch ---------------------------------------------------------------------


def test_batch_of_twenty_isolates_broken_images(
    client: bentoml.SyncHTTPClient, images: LocalHttpServer
) -> None:
    broken = {3: b"garbage", 7: imagecorpus.truncated_jpeg(), 11: b""}
    entries = []
    for i in range(20):
        if i == 15:
            entries.append({"url": images.url("/missing.jpg"), "image_id": f"img{i}"})
        else:
            data = broken.get(i, PORTRAIT if i % 2 else GRADIENT)
            entries.append({"data": b64(data) or "====", "image_id": f"img{i}"})
    body = client.analyze_batch({"images": entries, "run_emotion": False})
    failures = [(r["image_id"], r["error_code"], r["error"]) for r in body["results"] if r["error"]]
    assert body["total"] == 20 and body["failed"] == 4 and body["succeeded"] == 16, failures
    assert [r["image_id"] for r in body["results"]] == [f"img{i}" for i in range(20)]
    for i, result in enumerate(body["results"]):
        if i in (3, 7, 11, 15):
            assert result["error"] and result["quality"] is None, result
            assert result["error_code"] in {"image_decode_error", "image_fetch_error"}
        else:
            assert result["error"] is None
            assert result["quality"] and result["embedding"] and result["blur"]
    assert body["total_processing_time_ms"] > 0


def test_batch_over_max_size_is_batch_too_large(http: httpx.Client) -> None:
    entries = [{"data": b64(GRADIENT)}] * 21
    assert_error(http.post("/v1/analyze/batch", json={"images": entries}), 422, "batch_too_large")


def test_empty_batch_is_validation_error(http: httpx.Client) -> None:
    assert_error(http.post("/v1/analyze/batch", json={"images": []}), 422, "validation_error")


# ---- /v1/cluster ---------------------------------------------------------------------------


def test_cluster_with_the_generated_client(client: bentoml.SyncHTTPClient) -> None:
    body = client.cluster(
        {
            "embeddings": [[1, 0, 0], [0.99, 0.05, 0], [0, 1, 0], [0, 0.98, 0.1], [0, 0, 1]],
            "image_ids": ["a", "b", "c", "d", "e"],
        }
    )
    assert body["algorithm"] == "DBSCAN" and body["eps_used"] == 0.35
    assert body["min_samples_used"] == 2 and body["num_clusters"] == 2 and body["num_noise"] == 1
    assert [a["cluster_id"] for a in body["assignments"]] == [0, 0, 1, 1, -1]
    assert body["clusters"] == [
        {"cluster_id": 0, "size": 2, "image_ids": ["a", "b"]},
        {"cluster_id": 1, "size": 2, "image_ids": ["c", "d"]},
    ]


def test_clustering_real_embeddings_groups_the_same_photo(http: httpx.Client) -> None:
    photos = [PORTRAIT, PORTRAIT, GRADIENT, GRADIENT]
    vectors = [
        http.post(
            "/v1/analyze",
            json={"image": {"data": b64(p)}, "run_quality": False, "run_emotion": False},
        ).json()["result"]["embedding"]["vector"]
        for p in photos
    ]
    body = http.post(
        "/v1/cluster",
        json={"embeddings": vectors, "image_ids": ["p1", "p2", "g1", "g2"], "eps": 0.01},
    ).json()
    assert [a["cluster_id"] for a in body["assignments"]] == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"embeddings": [[1, 0], [1, 0, 0]], "image_ids": ["a", "b"]}, "clustering_error"),
        ({"embeddings": [[1, 0], [0, 1]], "image_ids": ["a"]}, "clustering_error"),
        ({"embeddings": [[0, 0], [0, 1]], "image_ids": ["a", "b"]}, "clustering_error"),
        ({"embeddings": [[1, 0]], "image_ids": ["a"]}, "validation_error"),
        ({"embeddings": [], "image_ids": []}, "validation_error"),
        ({"embeddings": [[1, 0], [0, 1]], "image_ids": ["a", "b"], "eps": 5}, "validation_error"),
        ({"embeddings": [["x", 0], [0, 1]], "image_ids": ["a", "b"]}, "validation_error"),
    ],
)
def test_bad_embeddings_are_422(http: httpx.Client, payload: dict, code: str) -> None:
    assert_error(http.post("/v1/cluster", json=payload), 422, code)


def test_nan_and_infinity_are_422(http: httpx.Client) -> None:
    for literal in ("NaN", "Infinity"):
        raw = f'{{"embeddings": [[1, 0], [{literal}, 1]], "image_ids": ["a", "b"]}}'
        response = http.post(
            "/v1/cluster", content=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"] in {"validation_error", "clustering_error"}


# ---- text: /v1/embed/text, /v1/search, /v1/tags ---------------------------------------------

CAPTIONS = ["bride cutting the cake", "a dog on the beach", "a red car at night"]


def embed(http: httpx.Client, texts: list[str]) -> list[list[float]]:
    response = http.post("/v1/embed/text", json={"texts": texts})
    assert response.status_code == 200, response.text
    return response.json()["vectors"]


def image_embedding(http: httpx.Client, photo: bytes) -> list[float]:
    flags = {"run_blur": False, "run_quality": False, "run_emotion": False}
    response = http.post("/v1/analyze", json={"image": {"data": b64(photo)}, **flags})
    assert response.status_code == 200, response.text
    return response.json()["result"]["embedding"]["vector"]


def test_embed_text_with_the_generated_client_and_raw_http(
    http: httpx.Client, client: bentoml.SyncHTTPClient
) -> None:
    body = client.embed_text({"texts": CAPTIONS})
    assert body["model"] == "openai/clip-vit-base-patch32" and body["dimensions"] == 512
    vectors = np.asarray(body["vectors"])
    assert vectors.shape == (3, 512) and body["warnings"] == []
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embed(http, CAPTIONS), vectors, atol=1e-6)
    # the same space as the image embeddings: same size, comparable
    assert len(image_embedding(http, PORTRAIT)) == vectors.shape[1]


def test_long_text_is_truncated_with_a_warning(http: httpx.Client) -> None:
    long = "a long caption about a wedding " * 20
    body = http.post("/v1/embed/text", json={"texts": ["a dog", long]}).json()
    assert len(body["vectors"]) == 2
    (warning,) = body["warnings"]
    assert warning.startswith("texts[1] is longer than the text model's 77 tokens")


def test_search_finds_the_matching_embedding(
    http: httpx.Client, client: bentoml.SyncHTTPClient
) -> None:
    """The embeddings of three captions and of two photos; each caption as the query finds its
    own embedding first (random-init towers put text and photos in no meaningful relation, so
    the matching "image" is the caption's own vector, sent back as a client would)."""
    photos = [image_embedding(http, PORTRAIT), image_embedding(http, GRADIENT)]
    embeddings = [*photos, *embed(http, CAPTIONS)]
    ids = ["portrait.jpg", "gradient.jpg", "cake.jpg", "dog.jpg", "car.jpg"]
    for query, expected in zip(CAPTIONS, ids[2:], strict=True):
        payload = {"query": query, "embeddings": embeddings, "image_ids": ids, "top_k": 3}
        body = http.post("/v1/search", json=payload).json()
        assert body["model"] == "openai/clip-vit-base-patch32" and body["warnings"] == []
        results = body["results"]
        assert len(results) == 3 and results[0]["image_id"] == expected, results
        assert results[0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    generated = client.search(
        {"query": CAPTIONS[0], "embeddings": embeddings, "image_ids": ids, "top_k": 99}
    )
    assert generated["results"][0]["image_id"] == "cake.jpg"
    assert sorted(r["image_id"] for r in generated["results"]) == sorted(ids)  # top_k > n: all


def test_tags_rank_each_images_own_label_first(
    http: httpx.Client, client: bentoml.SyncHTTPClient
) -> None:
    labels = ["cat", "dog", "car", "wedding cake"]
    own = embed(http, labels)  # "images" whose embedding is exactly their label's prompt
    portrait = image_embedding(http, PORTRAIT)
    payload = {
        "embeddings": [*own, portrait],
        "image_ids": [*labels, "portrait"],
        "labels": labels,
        "top_k": 2,
        "prompt_template": "{label}",
    }
    body = client.tags(payload)
    assert body["prompt_template"] == "{label}" and body["logit_scale"] > 1
    results = body["results"]
    assert [r["image_id"] for r in results] == [*labels, "portrait"]
    for label, result in zip(labels, results[:4], strict=True):
        assert len(result["tags"]) == 2 and result["tags"][0]["label"] == label
    for result in results:
        probabilities = [t["probability"] for t in result["tags"]]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0
    everything = http.post("/v1/tags", json={**payload, "top_k": 200}).json()
    assert sum(t["probability"] for t in everything["results"][4]["tags"]) == pytest.approx(1.0)
    plain = {k: v for k, v in payload.items() if k != "prompt_template"}
    assert http.post("/v1/tags", json=plain).json()["prompt_template"] == "a photo of {label}"


def test_search_and_tags_answer_the_same_for_packed_embeddings(http: httpx.Client) -> None:
    """`embeddings_base64` (little-endian float32) is the JSON form's matrix, a quarter the size."""
    embeddings = [image_embedding(http, PORTRAIT), *embed(http, CAPTIONS)]
    ids = ["portrait.jpg", "cake.jpg", "dog.jpg", "car.jpg"]
    packed = {"embeddings_base64": encode_base64(embeddings), "image_ids": ids}
    plain = {"embeddings": embeddings, "image_ids": ids}
    for path, extra in (
        ("/v1/search", {"query": CAPTIONS[1], "top_k": 4}),
        ("/v1/tags", {"labels": ["cake", "dog", "car"], "top_k": 3}),
    ):
        answers = [http.post(path, json={**body, **extra}) for body in (plain, packed)]
        assert [a.status_code for a in answers] == [200, 200], answers[1].text
        json_form, base64_form = (a.json()["results"] for a in answers)
        assert base64_form == json_form
    assert json_form[2]["image_id"] == "dog.jpg"
    assert (
        http.post("/v1/search", json={**packed, "query": CAPTIONS[1]}).json()["results"][0][
            "image_id"
        ]
        == "dog.jpg"
    )


def test_tags_over_more_labels_than_one_runner_batch(http: httpx.Client) -> None:
    labels = [f"label {i}" for i in range(150)]
    payload = {"embeddings": [[1.0] * 512], "image_ids": ["x"], "labels": labels, "top_k": 150}
    body = http.post("/v1/tags", json=payload).json()
    assert sorted(t["label"] for t in body["results"][0]["tags"]) == sorted(labels)


def test_cli_search_over_a_culled_folders_results(http: httpx.Client, tmp_path: Path) -> None:
    """`festora search RESULTS_DIR QUERY` reads the embeddings results.jsonl stored (written
    here as `festora cull` writes it) and lists the best matches through /v1/search."""
    import subprocess
    import sys

    from festora.cli.photos import Photo, ResultsLog, new_record

    flags = {"run_blur": False, "run_quality": False, "run_emotion": False}
    analysed = http.post("/v1/analyze", json={"image": {"data": b64(PORTRAIT)}, **flags}).json()
    log = ResultsLog(tmp_path / "results.jsonl")
    log.append(
        new_record(
            Photo(tmp_path / "portrait.jpg", "portrait.jpg"), "a" * 64, 1, analysed["result"]
        )
    )
    for i, vector in enumerate(embed(http, CAPTIONS)):  # "photos" embedded as their caption
        result = {
            "embedding": {"model": "clip", "dimensions": 512, "vector": vector},
            "error": None,
        }
        log.append(
            new_record(Photo(tmp_path / f"day2/{i}.jpg", f"day2/{i}.jpg"), f"{i}" * 64, 1, result)
        )
    failed = {"error": "not an image", "error_code": "image_decode_error"}
    log.append(new_record(Photo(tmp_path / "bad.jpg", "bad.jpg"), "f" * 64, 1, failed))
    log.close()

    command = [sys.executable, "-m", "festora.cli", "search", str(tmp_path), CAPTIONS[1]]
    here = {"capture_output": True, "text": True, "timeout": 120, "cwd": Path(__file__).parents[1]}
    run = subprocess.run([*command, "--url", str(http.base_url), "--top-k", "3", "--json"], **here)
    assert run.returncode == 0, run.stderr
    hits = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(hits) == 3 and hits[0]["path"] == "day2/1.jpg", hits
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert "bad.jpg" not in {h["path"] for h in hits}
    table = subprocess.run([*command, "--url", str(http.base_url)], **here)
    assert table.returncode == 0 and "day2/1.jpg" in table.stdout and "portrait.jpg" in table.stdout


TEXT_422 = [
    ("/v1/embed/text", {"texts": [""]}),
    ("/v1/embed/text", {"texts": ["a dog", "   "]}),
    ("/v1/embed/text", {"texts": []}),
    ("/v1/embed/text", {"texts": ["a dog"] * 65}),
    ("/v1/search", {"query": "", "embeddings": [[1.0] * 512], "image_ids": ["a"]}),
    ("/v1/search", {"query": "dog", "embeddings": [[1.0, 0.0]], "image_ids": ["a"]}),
    ("/v1/search", {"query": "dog", "embeddings": [[0.0] * 512], "image_ids": ["a"]}),
    ("/v1/search", {"query": "dog", "embeddings": [[1.0] * 512], "image_ids": ["a", "b"]}),
    ("/v1/search", {"query": "dog", "embeddings": [[1.0] * 512, [1.0]], "image_ids": ["a", "b"]}),
    ("/v1/search", {"query": "dog", "embeddings": [], "image_ids": []}),
    ("/v1/search", {"query": "dog", "embeddings": [[1.0] * 512], "image_ids": ["a"], "top_k": 0}),
    ("/v1/tags", {"embeddings": [[1.0] * 512], "image_ids": ["a"], "labels": ["dog"]}),
    (
        "/v1/tags",
        {"embeddings": [[1.0] * 512], "image_ids": ["a"], "labels": [f"l{i}" for i in range(201)]},
    ),
    ("/v1/tags", {"embeddings": [[1.0] * 512], "image_ids": ["a"], "labels": ["dog", "dog"]}),
    ("/v1/tags", {"embeddings": [[1.0] * 512], "image_ids": ["a"], "labels": ["dog", ""]}),
    ("/v1/tags", {"embeddings": [[1.0] * 3], "image_ids": ["a"], "labels": ["dog", "cat"]}),
    ("/v1/tags", {"embeddings": [[0.0] * 512], "image_ids": ["a"], "labels": ["dog", "cat"]}),
    (
        "/v1/tags",
        {
            "embeddings": [[1.0] * 512],
            "image_ids": ["a"],
            "labels": ["dog", "cat"],
            "prompt_template": "a photo of a thing",
        },
    ),
    ("/v1/search", {"query": "dog", "image_ids": ["a"]}),  # neither form
    (
        "/v1/search",
        {
            "query": "dog",
            "embeddings": [[1.0] * 512],
            "embeddings_base64": encode_base64([[1.0] * 512]),
            "image_ids": ["a"],
        },
    ),
    ("/v1/search", {"query": "dog", "embeddings_base64": "not base64!", "image_ids": ["a"]}),
    ("/v1/search", {"query": "dog", "embeddings_base64": "AAA=", "image_ids": ["a"]}),
    ("/v1/search", {"query": "dog", "embeddings_base64": "", "image_ids": []}),
    ("/v1/search", {"query": "dog", "embeddings_base64": 12, "image_ids": ["a"]}),
    (
        "/v1/search",
        {"query": "dog", "embeddings_base64": encode_base64([[1.0] * 512] * 2), "image_ids": ["a"]},
    ),
    (
        "/v1/tags",
        {
            "embeddings_base64": encode_base64([[0.0] * 512]),
            "image_ids": ["a"],
            "labels": ["dog", "cat"],
        },
    ),
    (
        "/v1/tags",
        {
            "embeddings_base64": encode_base64([[1.0] * 511 + [float("nan")]]),
            "image_ids": ["a"],
            "labels": ["dog", "cat"],
        },
    ),
]


@pytest.mark.parametrize(("path", "payload"), TEXT_422)
def test_bad_text_requests_are_422(http: httpx.Client, path: str, payload: dict) -> None:
    assert_error(http.post(path, json=payload), 422, "validation_error")


def test_dimension_mismatch_says_what_the_model_expects(http: httpx.Client) -> None:
    payload = {"query": "dog", "embeddings": [[1.0, 0.0, 0.0]], "image_ids": ["a"]}
    body = assert_error(http.post("/v1/search", json=payload), 422, "validation_error")
    assert body["detail"] == {"expected_dimensions": 512, "received_dimensions": 3}
    packed = {"query": "dog", "embeddings_base64": encode_base64([[1.0] * 3]), "image_ids": ["a"]}
    body = assert_error(http.post("/v1/search", json=packed), 422, "validation_error")
    assert body["detail"] == {"expected_dimensions": 512, "received_dimensions": 3}


def test_nan_and_infinity_in_search_and_tags_are_422(http: httpx.Client) -> None:
    row = ", ".join(["0.5"] * 511)
    for path, extra in (("/v1/search", '"query": "dog"'), ("/v1/tags", '"labels": ["a", "b"]')):
        for literal in ("NaN", "Infinity", "-Infinity"):
            raw = f'{{{extra}, "embeddings": [[{row}, {literal}]], "image_ids": ["a"]}}'
            response = http.post(path, content=raw, headers={"Content-Type": "application/json"})
            assert_error(response, 422, "validation_error")


# ---- /v1/analyze/llm -----------------------------------------------------------------------


def critique_json(score: float = 7.5) -> str:
    return json.dumps(
        {
            "overall_score": score,
            "discard_reason": None,
            "best_in_group": True,
            "composition": "Centred subject, balanced frame.",
            "pose_quality": "Relaxed and natural.",
            "background_quality": "Clean studio backdrop.",
            "highlights": ["sharp eyes"],
            "issues": [],
            "summary": "A strong portrait.",
        }
    )


def test_llm_critique_of_a_private_url_is_sent_inline(
    http: httpx.Client, llm: OpenAICompatServer, images: LocalHttpServer
) -> None:
    llm.push(Reply(content=critique_json(), prompt_tokens=300, completion_tokens=90))
    before = len(llm.requests)
    payload = {"image_url": images.url("/portrait.jpg"), "ref_id": "r-1", "max_tokens": 300}
    response = http.post("/v1/analyze/llm", json=payload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ref_id"] == "r-1" and body["error"] is None
    assert body["analysis"]["overall_score"] == 7.5 and body["analysis"]["best_in_group"] is True
    assert body["model_used"] == LLM_MODEL and body["tokens_used"] == 390
    assert body["processing_ms"] >= 0
    (sent,) = llm.requests[before:]
    assert sent.headers["authorization"] == f"Bearer {LLM_KEY}"
    (image_url,) = sent.image_urls()
    assert image_url.startswith("data:image/jpeg;base64,")
    inline = Image.open(io.BytesIO(base64.b64decode(image_url.split(",", 1)[1])))
    assert inline.size == (512, 512)


def test_llm_include_metrics_grounds_the_prompt(
    http: httpx.Client, llm: OpenAICompatServer
) -> None:
    llm.push(Reply(content=critique_json()))
    before = len(llm.requests)
    payload = {"image": {"data": b64(PORTRAIT)}, "include_metrics": True, "language": "es"}
    body = http.post("/v1/analyze/llm", json=payload).json()
    metrics = body["metrics"]
    assert metrics["blur"]["laplacian_variance"] > 0 and metrics["emotion"]["faces_detected"] >= 1
    prompt = "\n".join(llm.requests[before].message_texts())
    assert str(round(metrics["blur"]["laplacian_variance"], 1))[:4] in prompt
    assert "español" in prompt.lower() or "espanol" in prompt.lower()


@pytest.mark.parametrize(
    ("replies", "status", "code"),
    [
        ([Reply(status=500)], 502, "llm_provider_error"),
        ([Reply(status=401)], 502, "llm_provider_error"),
        (
            [Reply(content="not json"), Reply(content=critique_json(score=42))],
            422,
            "llm_invalid_response",
        ),
        ([Reply(hang=True)], 504, "llm_timeout"),
    ],
)
def test_llm_failures_use_the_envelope(
    http: httpx.Client, llm: OpenAICompatServer, replies: list[Reply], status: int, code: str
) -> None:
    llm.push(*replies)
    response = http.post("/v1/analyze/llm", json={"image": {"data": b64(GRADIENT)}})
    assert_error(response, status, code)
    assert LLM_KEY not in response.text


def test_llm_with_the_generated_client(
    client: bentoml.SyncHTTPClient, llm: OpenAICompatServer
) -> None:
    llm.push(Reply(content=critique_json(score=4.0)))
    body = client.analyze_llm({"image": {"data": b64(PORTRAIT)}, "ref_id": "c-1"})
    assert body["ref_id"] == "c-1" and body["analysis"]["overall_score"] == 4.0


def test_llm_needs_exactly_one_image_source(http: httpx.Client) -> None:
    response = http.post("/v1/analyze/llm", json={"ref_id": "x"})
    assert_error(response, 422, "validation_error")


def test_secrets_never_reach_the_logs(server: Server) -> None:
    assert LLM_KEY not in server.log()


def test_logs_are_structured_json(server: Server) -> None:
    festora_lines = [line for line in server.log().splitlines() if '"name": "festora' in line]
    for line in festora_lines:
        record = json.loads(line)
        assert {"time", "level", "name", "message"} <= set(record)
