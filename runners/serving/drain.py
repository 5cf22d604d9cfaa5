"""SIGTERM drains: the requests in flight in the API service complete, runner calls included.

`bentoml serve` (BentoML 1.4.40, circus) handles SIGTERM in a way that fails them: with a
20-image batch in flight at SIGTERM, 11 of its images failed (measured), for two reasons.

- The supervisor deletes the runners' Unix socket folder first and only then stops its
  processes (`bentoml._internal.utils.circus.Arbiter.stop` exits its exit stack, whose
  callbacks remove the folder, before stopping the watchers), so the API's new connections
  to its runners fail. `_stop_watchers_first` reverses the order.
- It sends SIGTERM to the API worker and every runner at once, and uvicorn stops taking
  requests at once. So a runner's SIGTERM waits (`_serve_while_used`) until no client
  connection is left open (the API worker has exited, or has left the runner idle past its
  4 s keep-alive: see `client_keepalive`), at most MAX_WAIT_S (the API's request timeout,
  beyond which no request it drains is still running), and then stops as uvicorn does: it
  finishes the requests it has and exits. A second SIGTERM stops it at once.
- A runner the API leaves idle for longer than that keep-alive during its drain (the images
  still in flight all wait on other models, or are being tried again) would stop and leave
  the API's next call to it hanging in a socket nobody serves until the grace period ends.
  So the API worker's SIGTERM starts what it registered with `on_sigterm` (a status call to
  every runner every few seconds, `RunnerHealth.hold_runners`), which keeps a connection to
  each runner in use until the API worker exits.

`install()` is idempotent and does nothing if uvicorn or BentoML no longer look as expected.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

MAX_WAIT_S = 300.0
POLL_S = 0.2
_PATCHED = "_festora_drain_patched"
_on_sigterm: list[Callable[[], Awaitable[None]]] = []
_started: set[asyncio.Task[None]] = set()


def on_sigterm(work: Callable[[], Awaitable[None]]) -> None:
    """Run `work()` on the event loop once the API worker's first SIGTERM arrives; it is
    cancelled with the loop when the worker exits."""
    _on_sigterm.append(work)


def _start_on_sigterm() -> None:
    try:
        loop = asyncio.get_running_loop()  # the signal handler runs in the loop's thread
    except RuntimeError:
        return

    def start() -> None:
        for work in _on_sigterm:
            task = loop.create_task(work())  # type: ignore[arg-type]
            _started.add(task)
            task.add_done_callback(_started.discard)

    loop.call_soon_threadsafe(start)


def _is_runner() -> bool:
    """True in a runner process: a service started as a dependency of the API service."""
    from bentoml._internal.context import server_context

    return server_context.service_type == "service"


def _stop_when_unused(server: Any, handle_exit: Any, sig: int) -> None:
    deadline = time.monotonic() + MAX_WAIT_S
    while server.server_state.connections and time.monotonic() < deadline:
        time.sleep(POLL_S)
    logger.info("runner stopping", extra={"open_connections": len(server.server_state.connections)})
    handle_exit(server, sig, None)


def install() -> bool:
    """Both patches (see the module docstring); True when both are in place."""
    return _stop_watchers_first() & _serve_while_used()


def _stop_watchers_first() -> bool:
    """The supervisor stops its processes, then removes their sockets."""
    try:
        from bentoml._internal.utils.circus import Arbiter
        from circus.arbiter import Arbiter as CircusArbiter
    except ImportError:
        return False
    stop = Arbiter.__dict__.get("stop")
    if stop is None:
        logger.warning("BentoML's Arbiter changed; its socket cleanup order is left as is")
        return False
    if getattr(stop, _PATCHED, False):
        return True

    def stop_then_clean_up(self: Any) -> Any:
        def clean_up(_: object = None) -> None:
            self.exit_stack.__exit__(None, None, None)

        try:
            stopping = CircusArbiter.stop(self)
        except BaseException:
            clean_up()
            raise
        stopping.add_done_callback(clean_up)
        return stopping

    setattr(stop_then_clean_up, _PATCHED, True)
    Arbiter.stop = stop_then_clean_up  # type: ignore[method-assign]
    return True


def _serve_while_used() -> bool:
    """Wrap `uvicorn.Server.handle_exit` so that a runner's first SIGTERM waits for its
    clients to go."""
    try:
        import uvicorn
    except ImportError:
        return False
    handle_exit = getattr(uvicorn.Server, "handle_exit", None)
    if handle_exit is None:
        logger.warning("uvicorn's Server changed; runners stop at once on SIGTERM")
        return False
    if getattr(handle_exit, _PATCHED, False):
        return True

    def patched(self: Any, sig: int, frame: FrameType | None) -> None:
        waiting = getattr(self, "_festora_waiting", False)
        if sig != signal.SIGTERM or self.should_exit or waiting:
            handle_exit(self, sig, frame)
            return
        if not _is_runner():
            _start_on_sigterm()
            handle_exit(self, sig, frame)
            return
        if getattr(self, "server_state", None) is None:
            handle_exit(self, sig, frame)
            return
        self._festora_waiting = True
        threading.Thread(
            target=_stop_when_unused, args=(self, handle_exit, sig), daemon=True
        ).start()

    setattr(patched, _PATCHED, True)
    uvicorn.Server.handle_exit = patched  # type: ignore[method-assign]
    return True
