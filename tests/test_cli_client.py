"""The CLI's HTTP client against a real local server that plays a service losing its API
worker: the connection closes without a response (what a SIGKILLed worker's callers see), and
the client sends the request again instead of failing the photo."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

from festora.cli.client import FestoraClient
from tests.httpserver import LocalHttpServer, send_bytes

RESULT = {"image_id": "p1", "error": None}


def test_analyze_cut_off_without_a_response_is_sent_again() -> None:
    cut_offs = iter([True, False])

    def worker_killed_once(handler: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        handler.rfile.read(int(handler.headers["Content-Length"]))
        if next(cut_offs):
            handler.close_connection = True
            return
        body = json.dumps({"result": RESULT}).encode()
        send_bytes(body, content_type="application/json")(handler, stopping)

    with LocalHttpServer() as server:
        server.route("/v1/analyze", worker_killed_once)
        with FestoraClient(server.base_url) as client:
            assert client.analyze(b"jpeg bytes", "p1") == RESULT
        assert len(server.requests_to("/v1/analyze")) == 2
