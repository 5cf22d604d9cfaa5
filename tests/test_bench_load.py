"""The benchmark's load clients against a real local HTTP server: every request is sent once,
every answer is checked, and a failed request is counted as an error without stopping its
client."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

from benchmarks.load import Request, Scenario, check_embedding, run
from tests.httpserver import LocalHttpServer

EMBEDDING = {"embedding": {"vector": [0.5, 0.5], "dimensions": 2}}


def analyse(handler: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
    """Answers like /v1/analyze for an `ok` body; a 500 for `fail`; hangs up on `hang up`;
    not HTTP at all on `garbage`."""
    body = json.loads(handler.rfile.read(int(handler.headers["content-length"])))
    if body["kind"] in ("hang up", "garbage"):
        if body["kind"] == "garbage":
            handler.wfile.write(b"not http\r\n\r\n")
        handler.close_connection = True
        return
    status = 500 if body["kind"] == "fail" else 200
    payload = json.dumps({"result": {"image_id": body["n"], **EMBEDDING}}).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def scenario(kinds: list[str], concurrency: int) -> Scenario:
    requests = [
        Request("/v1/analyze", json.dumps({"kind": kind, "n": n}).encode(), 1)
        for n, kind in enumerate(kinds)
    ]
    return Scenario(
        "test", "test", requests, concurrency, check_embedding, 12, "embedding", "base64", "analyze"
    )


def test_every_request_is_sent_once_and_every_answer_checked() -> None:
    kinds = ["ok"] * 7 + ["fail"] * 2 + ["hang up"]
    with LocalHttpServer() as server:
        server.route("/v1/analyze", analyse)
        result = run(server.base_url, scenario(kinds, concurrency=3))

    assert len(result.outcomes) == len(kinds)
    assert [r.method for r in server.requests] == ["POST"] * len(kinds)
    assert result.images_ok == 7
    problems = sorted(result.problems)
    assert problems[0].startswith("HTTP 500") and problems[1].startswith("HTTP 500")
    assert "RemoteDisconnected" in problems[2]


def test_a_client_whose_connection_dropped_goes_on_with_a_new_one() -> None:
    with LocalHttpServer() as server:
        server.route("/v1/analyze", analyse)
        result = run(server.base_url, scenario(["garbage", "ok", "hang up", "ok"], concurrency=1))

    assert result.images_ok == 2
    assert [p.split(":")[0] for p in result.problems] == ["BadStatusLine", "RemoteDisconnected"]


def test_a_wrong_answer_is_not_counted_as_an_image() -> None:
    def no_embedding(handler: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        handler.rfile.read(int(handler.headers["content-length"]))
        payload = json.dumps({"result": {"image_id": "x", "blur": {"score": 1.0}}}).encode()
        handler.send_response(200)
        handler.send_header("content-length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    with LocalHttpServer() as server:
        server.route("/v1/analyze", no_embedding)
        result = run(server.base_url, scenario(["ok", "ok"], concurrency=2))

    assert result.images_ok == 0
    assert result.problems == ["x: expected the embedding only, got ['blur']"] * 2


def test_embedding_only_means_the_baseline_work_and_full_means_every_analysis() -> None:
    from benchmarks.load import ALL_FLAGS, EMBEDDING_ONLY, check_full

    assert [f for f, on in EMBEDDING_ONLY.items() if on] == ["run_embedding"]
    assert set(ALL_FLAGS) == set(EMBEDDING_ONLY) and all(ALL_FLAGS.values())
    assert check_embedding({"image_id": "a", **EMBEDDING}) is None
    problem = check_embedding({"image_id": "a", **EMBEDDING, "fingerprint": {"sha256": "0"}})
    assert problem is not None and "fingerprint" in problem

    full = {
        "image_id": "a",
        **EMBEDDING,
        **{k: {"score": 1} for k in ("blur", "quality", "aesthetic", "exposure", "fingerprint")},
        "metadata": {"camera_make": None},
        "emotion": None,  # no face
    }
    assert check_full(full) is None
    assert check_full({**full, "exposure": None}) == "a: no exposure"
