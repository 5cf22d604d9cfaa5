"""Vision-LLM critique against a real local OpenAI-compatible server (LiteLLM's `openai/` route)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from festora.config import Settings
from festora.critique import (
    LlmAnalyzeRequest,
    LlmAnalyzeResponse,
    PhotoCritique,
    critique_photo,
    parse_reply,
)
from festora.errors import ApiError
from tests.openai_server import OpenAICompatServer, RecordedRequest, Reply

API_KEY = "sk-test-SECRET-9f3c1a77e2"
MODEL = "openai/festora-test-vision"
PHOTO_URL = "https://photos.example.com/event/0042.jpg"


def critique_json(**overrides: Any) -> str:
    critique = {
        "overall_score": 7.5,
        "discard_reason": None,
        "best_in_group": True,
        "composition": "Subject on the left third, clean leading lines.",
        "pose_quality": "Relaxed posture, natural smile.",
        "background_quality": "Softly blurred, no distractions.",
        "highlights": ["sharp eyes", "warm light"],
        "issues": ["slight tilt"],
        "summary": "A strong keeper with minor tilt.",
    }
    critique.update(overrides)
    return json.dumps(critique)


def make_settings(server: OpenAICompatServer | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "llm_api_base": server.base_url if server else None,
        "llm_api_key": API_KEY,
        "llm_timeout_seconds": 10.0,
        "anthropic_api_key": None,
        "openai_api_key": None,
        "gemini_api_key": None,
        "llm_language": "en",
        "llm_max_tokens": 500,
    }
    values.update(overrides)
    return Settings(**values)


def run(
    req: LlmAnalyzeRequest,
    settings: Settings,
    image: Any = None,
    metrics: dict[str, Any] | None = None,
) -> LlmAnalyzeResponse:
    return asyncio.run(critique_photo(req, settings, image=image, metrics=metrics))


def request(**fields: Any) -> LlmAnalyzeRequest:
    return LlmAnalyzeRequest(**{"image_url": PHOTO_URL, "model": MODEL, **fields})


def prompt_of(recorded: RecordedRequest) -> str:
    return "\n".join(recorded.message_texts())


@pytest.fixture
def server() -> Iterator[OpenAICompatServer]:
    with OpenAICompatServer() as srv:
        yield srv


def test_valid_reply(server: OpenAICompatServer) -> None:
    server.push(Reply(content=critique_json(), prompt_tokens=120, completion_tokens=80))
    response = run(request(ref_id="r-1"), make_settings(server))

    assert response.ref_id == "r-1"
    assert response.analysis.overall_score == 7.5
    assert response.analysis.highlights == ["sharp eyes", "warm light"]
    assert response.model_used == MODEL
    assert response.tokens_used == 200
    assert response.processing_ms >= 0 and response.error is None and response.metrics is None
    [sent] = server.requests
    assert sent.body["model"] == "festora-test-vision"
    assert sent.body["max_tokens"] == 500
    assert sent.body["response_format"] == {"type": "json_object"}
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.image_urls() == [PHOTO_URL]


def test_fenced_reply_and_request_max_tokens(server: OpenAICompatServer) -> None:
    server.push(Reply(content=f"```json\n{critique_json(overall_score=3)}\n```"))
    response = run(request(max_tokens=1200), make_settings(server))

    assert response.analysis.overall_score == 3.0
    [sent] = server.requests
    assert sent.body["max_tokens"] == 1200


@pytest.mark.parametrize(
    ("bad_reply", "problem"),
    [
        ('{"overall_score": 7.5, "composition": "cut off', "not valid JSON"),
        (critique_json(overall_score=11), "overall_score"),
        (critique_json(issues=[f"issue {i}" for i in range(6)]), "issues"),
        (critique_json(summary=None), "summary"),
    ],
    ids=["malformed-json", "score-out-of-range", "six-issues", "missing-summary"],
)
def test_unusable_reply_is_repaired_once(
    server: OpenAICompatServer, bad_reply: str, problem: str
) -> None:
    server.push(Reply(content=bad_reply), Reply(content=critique_json(overall_score=6)))
    response = run(request(), make_settings(server))

    assert response.analysis.overall_score == 6.0
    assert response.tokens_used == 300
    first, repair = server.requests
    history = repair.body["messages"]
    assert history[:-2] == first.body["messages"]
    assert history[-2] == {"role": "assistant", "content": bad_reply}
    assert history[-1]["role"] == "user"
    assert problem in history[-1]["content"]


def test_two_unusable_replies_give_422(server: OpenAICompatServer) -> None:
    server.push(
        Reply(content="I cannot rate this photo."), Reply(content=critique_json(overall_score=0))
    )
    with pytest.raises(ApiError) as caught:
        run(request(), make_settings(server))

    err = caught.value
    assert (err.status_code, err.code) == (422, "llm_invalid_response")
    assert err.detail["excerpt"].startswith('{"overall_score": 0')
    assert "overall_score" in err.detail["problem"]
    assert err.detail["tokens_used"] == 300
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [401, 403, 429, 500, 503])
def test_provider_errors_give_502_without_retries(server: OpenAICompatServer, status: int) -> None:
    server.push(Reply(status=status), Reply(content=critique_json()))
    with pytest.raises(ApiError) as caught:
        run(request(), make_settings(server))

    err = caught.value
    assert (err.status_code, err.code) == (502, "llm_provider_error")
    assert err.detail["provider_status"] == status
    assert err.detail["provider"] == "openai"
    assert len(server.requests) == 1


def test_unreachable_provider_gives_502() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = make_settings(llm_api_base=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ApiError) as caught:
        run(request(), settings)

    assert (caught.value.status_code, caught.value.code) == (502, "llm_provider_error")
    assert caught.value.detail["provider_status"] is None


def test_silent_provider_gives_504_within_timeout(server: OpenAICompatServer) -> None:
    server.push(Reply(hang=True))
    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        run(request(), make_settings(server, llm_timeout_seconds=1.0))

    assert (caught.value.status_code, caught.value.code) == (504, "llm_timeout")
    assert time.monotonic() - started < 3.0


@dataclass
class Decoded:
    rgb: np.ndarray
    width: int
    height: int


def gradient(height: int, width: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs % 256, ys % 256, (xs + ys) % 256], axis=-1).astype(np.uint8)


def received_jpeg(recorded: RecordedRequest) -> Image.Image:
    [url] = recorded.image_urls()
    prefix = "data:image/jpeg;base64,"
    assert url.startswith(prefix)
    picture = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    picture.load()
    return picture


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [(2000, 3000, (1568, 1045)), (4000, 1000, (392, 1568)), (600, 800, (800, 600))],
)
def test_inline_image_arrives_as_downsized_jpeg(
    server: OpenAICompatServer, height: int, width: int, expected: tuple[int, int]
) -> None:
    server.push(Reply(content=critique_json()))
    rgb = gradient(height, width)
    run(request(), make_settings(server), image=rgb)

    picture = received_jpeg(server.requests[0])
    assert (picture.format, picture.mode, picture.size) == ("JPEG", "RGB", expected)


def test_decoded_image_object_and_base64_request(server: OpenAICompatServer) -> None:
    server.push(Reply(content=critique_json()))
    req = LlmAnalyzeRequest(model=MODEL, image={"data": "aGVsbG8=", "image_id": "p-1"})
    run(req, make_settings(server), image=Decoded(gradient(300, 400), 400, 300))

    assert received_jpeg(server.requests[0]).size == (400, 300)


def test_english_and_spanish_prompts_differ(server: OpenAICompatServer) -> None:
    server.push(*(Reply(content=critique_json()) for _ in range(3)))
    run(request(), make_settings(server))
    run(request(language="es"), make_settings(server))
    run(request(), make_settings(server, llm_language="fr"))

    english, spanish, french = (prompt_of(r) for r in server.requests)
    assert "Write every string value in English" in english
    assert "Escribe todos los textos en español" in spanish
    assert "Critica la foto adjunta" in spanish and "Critique the attached photo" not in spanish
    assert "Write every string value in French" in french
    for prompt in (english, spanish, french):
        assert '"overall_score"' in prompt and '"summary"' in prompt


def test_custom_prompt_replaces_instructions_but_keeps_format(server: OpenAICompatServer) -> None:
    server.push(Reply(content=critique_json()))
    run(request(custom_prompt="Judge only the bride's dress."), make_settings(server))

    prompt = prompt_of(server.requests[0])
    assert "Judge only the bride's dress." in prompt
    assert "professional photo editor" not in prompt
    assert '"overall_score": number from 1.0 to 10.0' in prompt


def test_include_metrics_grounds_prompt_and_is_returned(server: OpenAICompatServer) -> None:
    metrics = {
        "blur": {"laplacian_variance": np.float32(143.25), "is_blurry": False},
        "quality": {"brisque_score": 21.123456, "nima_technical_score": 6.4},
        "aesthetic": {"nima_aesthetic_score": 5.9},
        "faces": 2,
    }
    server.push(Reply(content=critique_json()), Reply(content=critique_json()))
    grounded = run(request(include_metrics=True), make_settings(server), metrics=metrics)
    plain = run(request(), make_settings(server), metrics=metrics)

    with_metrics, without_metrics = (prompt_of(r) for r in server.requests)
    for number in ("143.25", "21.123", "6.4", "5.9", '"faces": 2'):
        assert number in with_metrics
        assert number not in without_metrics
    assert grounded.metrics == {
        "blur": {"laplacian_variance": 143.25, "is_blurry": False},
        "quality": {"brisque_score": 21.123, "nima_technical_score": 6.4},
        "aesthetic": {"nima_aesthetic_score": 5.9},
        "faces": 2,
    }
    assert plain.metrics is None
    json.dumps(grounded.model_dump())


@pytest.mark.parametrize(
    ("model", "env_var"),
    [
        ("anthropic/claude-sonnet-4-5", "ANTHROPIC_API_KEY"),
        ("openai/gpt-4o", "OPENAI_API_KEY"),
        ("gemini/gemini-2.5-flash", "GEMINI_API_KEY"),
    ],
)
def test_missing_provider_key_gives_503(model: str, env_var: str) -> None:
    with pytest.raises(ApiError) as caught:
        run(request(model=model), make_settings())

    err = caught.value
    assert (err.status_code, err.code) == (503, "llm_not_configured")
    assert env_var in err.message
    assert err.detail["env_vars"] == [env_var]


def test_api_base_does_not_capture_anthropic() -> None:
    with OpenAICompatServer() as srv, pytest.raises(ApiError) as caught:
        run(request(model="anthropic/claude-sonnet-4-5"), make_settings(srv))
    assert caught.value.code == "llm_not_configured"
    assert srv.requests == []


def test_default_model_and_keyless_api_base(server: OpenAICompatServer) -> None:
    server.push(Reply(content=critique_json()))
    settings = make_settings(server, llm_api_key=None, llm_default_model="openai/local-llava")
    response = run(request(model=None), settings)

    assert response.model_used == "openai/local-llava"
    assert server.requests[0].body["model"] == "local-llava"


def test_unknown_model_is_a_validation_error(capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ApiError) as caught:
        run(request(model="no-such-model"), make_settings())
    assert (caught.value.status_code, caught.value.code) == (422, "validation_error")
    assert capfd.readouterr().out == ""


def test_api_key_never_appears_in_errors_or_logs(
    server: OpenAICompatServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = f"Incorrect API key provided: {API_KEY}"
    server.push(
        Reply(status=401, error_message=echo),
        Reply(status=500, error_message=echo),
        Reply(content=f"not json {API_KEY}"),
        Reply(content=f"still not json {API_KEY}"),
    )
    bodies = []
    for _ in range(3):
        with pytest.raises(ApiError) as caught:
            run(request(), make_settings(server))
        bodies.append(caught.value.to_response().body.decode())

    assert [json.loads(b)["error"] for b in bodies] == [
        "llm_provider_error",
        "llm_provider_error",
        "llm_invalid_response",
    ]
    assert server.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    captured = capfd.readouterr()
    for text in (*bodies, caplog.text, captured.out, captured.err):
        assert API_KEY not in text
    assert "***" in bodies[2]


def test_request_validation() -> None:
    image = {"url": PHOTO_URL}
    with pytest.raises(ValidationError, match="exactly one"):
        LlmAnalyzeRequest(image_url=PHOTO_URL, image=image)
    with pytest.raises(ValidationError, match="exactly one"):
        LlmAnalyzeRequest()
    with pytest.raises(ValidationError):
        LlmAnalyzeRequest(image_url=PHOTO_URL, max_tokens=99)
    with pytest.raises(ValidationError):
        LlmAnalyzeRequest(image_url=PHOTO_URL, max_tokens=2001)
    with pytest.raises(ValidationError):
        LlmAnalyzeRequest(image_url=PHOTO_URL, language="english please")
    req = LlmAnalyzeRequest(image=image, language="es-MX")
    assert (req.model, req.max_tokens, req.include_metrics) == (None, None, False)


def test_parse_critique_tolerates_prose_and_blank_reasons() -> None:
    reply = (
        "Here is my review:\n" + critique_json(discard_reason="  ", pose_quality="") + "\nThanks"
    )
    critique = parse_reply(reply, PhotoCritique)
    assert critique.discard_reason is None and critique.pose_quality is None
