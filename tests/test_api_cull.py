"""POST /v1/cull end to end: a real `bentoml serve` on generated weights, a shoot made of the
packages' real photos (tests/photos.py), over raw HTTP and the generated client.

Random-init NIMA scores say nothing, so the shoot is culled with NIMA's weights at zero; the
groups rest on EXIF, pHash and CLIP as confirmation only (random-init CLIP embeds different
photos close together, see PLATFORM.md).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bentoml
import httpx
import pytest

from tests.openai_server import OpenAICompatServer, Reply
from tests.photos import shoot
from tests.serving import Server, serve

pytestmark = pytest.mark.slow

LLM_MODEL = "openai/festora-editor"
NO_NIMA = {"technical": 0.0, "aesthetic": 0.0}
BURST = ("1-sharp", "2-blurred", "3-shifted", "4-darker", "5-copy")
SHOOT = shoot()
IMAGES = [{"data": base64.b64encode(s.data).decode(), "image_id": s.image_id} for s in SHOOT]


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
        "LLM_API_KEY": "sk-cull-test",
        "LLM_TIMEOUT_SECONDS": "5",
        "RATE_LIMIT_ENABLED": "false",
        "CULL_MAX_ANALYSES": "40",
        "ENVIRONMENT": "test",
    }
    with serve(env, tmp_path_factory.mktemp("logs") / "cull.log") as running:
        yield running


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def from_images(http: httpx.Client) -> dict[str, Any]:
    response = http.post("/v1/cull", json={"images": IMAGES, "weights": NO_NIMA})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def analyses(http: httpx.Client) -> list[dict[str, Any]]:
    response = http.post("/v1/analyze/batch", json={"images": IMAGES})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "processing_time_ms"}


def codes(image: dict[str, Any]) -> set[str]:
    return {reason["code"] for reason in image["reasons"]}


def test_the_shoot_is_grouped_ranked_and_judged(from_images: dict[str, Any]) -> None:
    groups = [(g["kind"], g["image_ids"]) for g in from_images["groups"]]
    images = {i["image_id"]: i for i in from_images["images"]}

    assert from_images["total_images"] == len(SHOOT)
    assert [i["image_id"] for i in from_images["images"]] == [s.image_id for s in SHOOT]
    assert [kind for kind, _ in groups] == ["burst", "burst", "single", "similar", "single"]
    for prefix, (_, ids) in zip("ab", groups, strict=False):
        assert sorted(ids) == [prefix + name for name in BURST]
        assert ids[0] == f"{prefix}1-sharp" and images[ids[0]]["verdict"] == "keep"
        assert images[ids[0]]["rank"] == 1
        blurred = images[f"{prefix}2-blurred"]
        assert blurred["verdict"] == "reject" and "blurry" in codes(blurred)
        copy = images[f"{prefix}5-copy"]
        assert copy["verdict"] == "reject" and "duplicate" in codes(copy)
        assert copy["duplicate_of"] == f"{prefix}1-sharp"
    assert groups[2] == ("single", ["c-coffee"]) and groups[4] == ("single", ["e-china"])
    assert sorted(groups[3][1]) == ["d1-flower", "d2-flower-shifted"]
    assert images["c-coffee"]["verdict"] == images["e-china"]["verdict"] == "keep"
    assert from_images["weights_used"]["technical"] == 0.0


def test_analyses_carry_the_cheap_analyses(analyses: list[dict[str, Any]]) -> None:
    first = analyses[0]
    assert first["metadata"]["camera_serial"] == "SN-A"
    assert first["metadata"]["captured_at"] == "2024-06-01T15:00:00.100000+02:00"
    assert len(first["fingerprint"]["phash"]) == 16 and len(first["fingerprint"]["sha256"]) == 64
    assert first["fingerprint"]["sha256"] == analyses[4]["fingerprint"]["sha256"]  # the copy
    assert first["exposure"]["verdict"] == "ok"
    assert analyses[-1]["metadata"]["captured_at"] is None  # no EXIF


def test_culling_the_analyses_gives_the_same_answer(
    http: httpx.Client, from_images: dict[str, Any], analyses: list[dict[str, Any]]
) -> None:
    response = http.post("/v1/cull", json={"analyses": analyses, "weights": NO_NIMA})
    assert response.status_code == 200, response.text
    assert comparable(response.json()) == comparable(from_images)


def without_nulls(value: Any) -> Any:
    """The same JSON without null members: BentoML 1.4's client cannot encode a null where its
    schema has an object (it tests `k in None`); an absent member means the same here."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def test_the_generated_client_culls(
    server: Server, analyses: list[dict[str, Any]], from_images: dict[str, Any]
) -> None:
    with bentoml.SyncHTTPClient(server.url, timeout=120) as client:
        body = client.cull(without_nulls({"analyses": analyses[::-1], "weights": NO_NIMA}))
    assert body["groups"] == from_images["groups"]


def test_weights_are_echoed_and_an_unknown_one_is_422(
    http: httpx.Client, analyses: list[dict[str, Any]]
) -> None:
    weights = {"sharpness": 0.0, "exposure": 1.0, "technical": 0.0, "aesthetic": 0.0}
    body = http.post("/v1/cull", json={"analyses": analyses, "weights": weights}).json()
    assert {k: body["weights_used"][k] for k in weights} == weights
    response = http.post("/v1/cull", json={"analyses": analyses, "weights": {"sharpnes": 1}})
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error" and "sharpnes" in response.text


def _error(response: httpx.Response, code: str) -> str:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == code
    return body["message"]


def test_bad_input_is_422_naming_the_problem(
    http: httpx.Client, analyses: list[dict[str, Any]]
) -> None:
    both = {"images": IMAGES[:1], "analyses": analyses[:1]}
    assert "exactly one" in json.dumps(http.post("/v1/cull", json=both).json())
    assert http.post("/v1/cull", json=both).json()["error"] == "validation_error"
    repeated = [analyses[0], analyses[0]]
    assert "a1-sharp" in _error(http.post("/v1/cull", json={"analyses": repeated}), "cull_error")
    unnamed = [{**analyses[0], "image_id": None}]
    assert "image_id" in _error(http.post("/v1/cull", json={"analyses": unnamed}), "cull_error")
    unhashed = [{**analyses[0], "fingerprint": None}]
    assert "fingerprint" in _error(http.post("/v1/cull", json={"analyses": unhashed}), "cull_error")
    no_quality = [{**a, "quality": None} for a in analyses]
    message = _error(
        http.post("/v1/cull", json={"analyses": no_quality, "weights": {"technical": 1}}),
        "cull_error",
    )
    assert "quality" in message
    too_many = [{**analyses[-1], "image_id": f"x{i}"} for i in range(41)]
    assert "40" in _error(http.post("/v1/cull", json={"analyses": too_many}), "cull_error")
    assert http.post("/v1/cull", json={"analyses": too_many[:40]}).status_code == 200


def test_an_image_that_fails_is_rejected_not_dropped(http: httpx.Client) -> None:
    sent = [*IMAGES[:2], {"data": base64.b64encode(b"not an image").decode(), "image_id": "bad"}]
    body = http.post("/v1/cull", json={"images": sent}).json()
    bad = body["images"][2]
    assert bad["image_id"] == "bad" and bad["verdict"] == "reject"
    assert codes(bad) == {"analysis_failed"}
    assert body["total_images"] == 3


def test_the_llm_compares_finalists_in_one_call_per_group(
    http: httpx.Client, llm: OpenAICompatServer, analyses: list[dict[str, Any]]
) -> None:
    before = len(llm.requests)
    llm.push(*[Reply(content='{"best": 2, "reason": "Everyone looks at the camera."}')] * 3)
    body = http.post(
        "/v1/cull", json={"images": IMAGES, "weights": NO_NIMA, "llm_model": LLM_MODEL}
    ).json()
    calls = llm.requests[before:]
    images = {i["image_id"]: i for i in body["images"]}

    assert len(calls) == 3 and not [w for w in body["warnings"] if "LLM" in w]
    assert sorted(len(c.image_urls()) for c in calls) == [2, 3, 3]  # blurred and copy left out
    assert all(url.startswith("data:image/jpeg;base64,") for c in calls for url in c.image_urls())
    for group in body["groups"][:2]:
        pick = images[group["best_image_id"]]
        assert pick["verdict"] == "keep" and "llm_pick" in codes(pick) and pick["rank"] == 1
        assert group["image_ids"][1].endswith("1-sharp")
        assert images[group["image_ids"][1]]["verdict"] == "maybe"
    assert any(r["message"] == "Everyone looks at the camera." for r in pick["reasons"])


def test_an_llm_failure_never_fails_the_cull(
    http: httpx.Client, llm: OpenAICompatServer, from_images: dict[str, Any]
) -> None:
    llm.push(*[Reply(status=500)] * 3)
    response = http.post(
        "/v1/cull", json={"images": IMAGES, "weights": NO_NIMA, "llm_model": LLM_MODEL}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["groups"] == from_images["groups"] and body["images"] == from_images["images"]
    failures = [w for w in body["warnings"] if "LLM comparison" in w]
    assert len(failures) == 3 and all("llm_provider_error" in w for w in failures)
