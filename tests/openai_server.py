"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for tests.

It speaks HTTP on a free local port, so LiteLLM (or any client) goes through its real network
path. Each POST to `/v1/chat/completions` takes the next scripted `Reply` and is recorded in
`requests`. Replies can be errors (any status) or hang until the server is closed, which is how
tests provoke provider failures and timeouts without touching the client library.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CHAT_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class Reply:
    """One scripted answer: assistant text with usage, an HTTP error, or a hang."""

    content: str = ""
    status: int = 200
    error_message: str = "scripted error"
    prompt_tokens: int = 100
    completion_tokens: int = 50
    hang: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    def message_texts(self) -> list[str]:
        """Every text part of every message, in order (content may be a str or a part list)."""
        texts: list[str] = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts.extend(p["text"] for p in content if p.get("type") == "text")
        return texts

    def image_urls(self) -> list[str]:
        urls: list[str] = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, list):
                for part in content:
                    if part.get("type") == "image_url":
                        image_url = part["image_url"]
                        urls.append(image_url if isinstance(image_url, str) else image_url["url"])
        return urls


@dataclass
class _State:
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closing: threading.Event = field(default_factory=threading.Event)
    ids: itertools.count = field(default_factory=itertools.count)


class OpenAICompatServer:
    """Usage: `with OpenAICompatServer([Reply(content=...)]) as srv:` then use `srv.base_url`."""

    def __init__(self, replies: list[Reply] | None = None) -> None:
        self._state = _State(replies=deque(replies or []))
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self._state))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._state.lock:
            return list(self._state.requests)

    def push(self, *replies: Reply) -> None:
        with self._state.lock:
            self._state.replies.extend(replies)

    def start(self) -> OpenAICompatServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._state.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OpenAICompatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler_for(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send_json(400, _error_body("request body is not JSON", 400))
                return
            with state.lock:
                state.requests.append(
                    RecordedRequest(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                is_chat = self.path == CHAT_PATH
                reply = state.replies.popleft() if is_chat and state.replies else None
                number = next(state.ids)
            if not is_chat:
                self._send_json(404, _error_body(f"unknown path {self.path}", 404))
            elif reply is None:
                self._send_json(500, _error_body("no scripted reply left", 500))
            elif reply.hang:
                state.closing.wait()
            elif reply.status != 200:
                self._send_json(reply.status, _error_body(reply.error_message, reply.status))
            else:
                self._send_json(200, _completion_body(reply, body.get("model", ""), number))

        def _send_json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _completion_body(reply: Reply, model: str, number: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-test-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }


def _error_body(message: str, status: int) -> dict[str, Any]:
    kinds = {401: "invalid_request_error", 429: "rate_limit_error"}
    return {"error": {"message": message, "type": kinds.get(status, "server_error"), "code": None}}
