"""A real `redis-server` (Debian's package) on a free loopback port, for tests.

Nothing is persisted; `stop()` and `start()` take it away and bring it back on the same port,
as an outage would.

    with RedisServer() as redis_server:
        env = {"REDIS_URL": redis_server.url}
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from types import TracebackType
from typing import Self

import redis

from tests.serving import free_port

START_TIMEOUT_SECONDS = 10


class RedisServer:
    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: `apt-get install -y redis-server`")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        options = {"bind": "127.0.0.1", "port": str(self.port), "save": "", "appendonly": "no"}
        self._process = subprocess.Popen(
            [self.binary, *(arg for k, v in options.items() for arg in (f"--{k}", v))],
            cwd=tempfile.gettempdir(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return
            except redis.RedisError:
                if self._process.poll() is not None:
                    raise RuntimeError("redis-server exited at start") from None
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis-server not answering in {START_TIMEOUT_SECONDS} s")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
