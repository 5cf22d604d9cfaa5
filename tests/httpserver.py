"""A real threaded HTTP/1.1 (or HTTPS) server on a free local port, for tests.

Tests map paths to `Responder`s; each request runs its responder on its own thread through the
standard library's handler, so clients go through their real network path. The responders
below play the awkward peers an image fetcher must survive: redirects, bodies without or with
lying Content-Length, endless trickles and servers that never answer. `tls_files` makes a
throwaway CA and a certificate for `localhost` with the `openssl` command.

    with LocalHttpServer() as server:
        url = server.route("/cat.png", send_bytes(png, content_type="image/png"))
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Self

# A responder writes one whole response. `stopping` is set when the server closes: responders
# that stream or wait must return soon after.
Responder = Callable[[BaseHTTPRequestHandler, threading.Event], None]
_DISCONNECTED = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, ssl.SSLError)


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased


class LocalHttpServer:
    """Serves registered routes on `host`:<free port> from a background thread until closed."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.requests: list[SeenRequest] = []
        self.stopping = threading.Event()
        self._routes: dict[str, Responder] = {}
        self._lock = threading.Lock()
        self._server = _Server(self, host, tls)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        scheme = "https" if self._server.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def route(self, path: str, responder: Responder) -> str:
        """Answer GETs of `path` (query ignored) with `responder`; returns the full URL."""
        with self._lock:
            self._routes[path] = responder
        return self.url(path)

    def requests_to(self, path: str) -> list[SeenRequest]:
        with self._lock:
            return [seen for seen in self.requests if seen.path == path]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        headers = {name.lower(): value for name, value in handler.headers.items()}
        with self._lock:
            self.requests.append(SeenRequest(handler.command, path, headers))
            responder = self._routes.get(path, send_bytes(b"not found", status=404))
        try:
            responder(handler, self.stopping)
        except _DISCONNECTED:
            handler.close_connection = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def do_GET(self) -> None:
        self.server.owner._dispatch(self)

    do_HEAD = do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: LocalHttpServer, host: str, tls: ssl.SSLContext | None) -> None:
        self.owner = owner
        self.tls = tls
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, 0), _Handler)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        connection, address = super().get_request()
        if self.tls is not None:
            connection = self.tls.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, address

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up or reject the certificate are expected here, not errors."""


def _start(
    handler: BaseHTTPRequestHandler,
    status: int,
    headers: Iterable[tuple[str, str]],
    *,
    close: bool = False,
) -> None:
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    if close:
        handler.send_header("Connection", "close")
        handler.close_connection = True
    handler.end_headers()


def send_bytes(
    body: bytes,
    *,
    status: int = 200,
    content_type: str = "application/octet-stream",
    headers: Iterable[tuple[str, str]] = (),
) -> Responder:
    """A plain response with an honest Content-Length."""

    def respond(handler: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        fields = [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers]
        _start(handler, status, fields)
        if handler.command != "HEAD":
            handler.wfile.write(body)

    return respond


def redirect_to(location: str, *, status: int = 302) -> Responder:
    return send_bytes(b"", status=status, headers=[("Location", location)])


def send_chunked(body: bytes, *, chunk_size: int = 16_384) -> Responder:
    """No Content-Length: the body comes in `Transfer-Encoding: chunked` pieces."""

    def respond(handler: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        _start(handler, 200, [("Transfer-Encoding", "chunked")])
        for start in range(0, len(body), chunk_size):
            _write_chunk(handler, body[start : start + chunk_size])
        handler.wfile.write(b"0\r\n\r\n")

    return respond


def send_until_close(body: bytes) -> Responder:
    """No Content-Length and no chunking: the body ends when the server closes the connection."""

    def respond(handler: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        _start(handler, 200, [("Content-Type", "application/octet-stream")], close=True)
        handler.wfile.write(body)

    return respond


def send_with_declared_length(declared: int, body: bytes) -> Responder:
    """Content-Length says `declared` whatever `body` holds; all of `body` is sent, then close."""

    def respond(handler: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        _start(handler, 200, [("Content-Length", str(declared))], close=True)
        handler.wfile.write(body)

    return respond


def trickle_forever(chunk: bytes = b"x", *, interval: float = 0.05) -> Responder:
    """A chunked body that never ends: `chunk` every `interval` seconds until the client leaves."""

    def respond(handler: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        _start(handler, 200, [("Transfer-Encoding", "chunked")], close=True)
        while not stopping.is_set():
            _write_chunk(handler, chunk)
            if interval:
                stopping.wait(interval)

    return respond


def never_answer() -> Responder:
    """Reads the request and sends nothing until the server closes."""

    def respond(handler: BaseHTTPRequestHandler, stopping: threading.Event) -> None:
        handler.close_connection = True
        stopping.wait()

    return respond


def _write_chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    handler.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
    handler.wfile.flush()


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path  # trust this to accept the server
    server_context: ssl.SSLContext  # pass as `tls=` to LocalHttpServer
    server_names: list[str]  # the SNI name of each handshake, in order


def tls_files(directory: Path, *, hostname: str = "localhost") -> TlsFiles:
    """A throwaway CA and a server certificate valid for the DNS name `hostname` only."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_extensions = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign"]
    openssl(
        *["req", "-x509", *new_key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
        *["-subj", "/CN=festora test CA", "-addext", ca_extensions[0], "-addext", ca_extensions[1]],
    )
    openssl("req", *new_key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=test")
    (directory / "server.ext").write_text(
        f"subjectAltName=DNS:{hostname}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        *["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key"],
        *["-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext"],
    )
    server_names: list[str] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "server.pem", directory / "server.key")
    context.sni_callback = lambda _socket, name, _context: server_names.append(name or "")
    return TlsFiles(ca_file=directory / "ca.pem", server_context=context, server_names=server_names)
