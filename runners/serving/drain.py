"""On SIGTERM a runner keeps serving until the API service no longer needs it.

`bentoml serve` (circus) sends SIGTERM to the API worker and to every runner at the same
moment, and uvicorn stops taking requests at once. The API worker drains its requests in
flight, but their remaining runner calls then found the runners gone: with a 20-image batch
in flight at SIGTERM, 11 of its images failed (measured). So in a runner process SIGTERM waits
until no client connection is left open (the API worker has exited, or has left the runner
idle past its 4 s keep-alive: see `client_keepalive`), at most MAX_WAIT_S (the API's request
timeout, beyond which no request it drains is still running), and then stops as uvicorn does:
it finishes the requests it has and exits.

`install()` is idempotent and does nothing if uvicorn or BentoML no longer look as expected.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

MAX_WAIT_S = 300.0
POLL_S = 0.2
_PATCHED = "_festora_drain_patched"


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
    """Wrap `uvicorn.Server.handle_exit` so that a runner's first SIGTERM waits for its
    clients to go (see the module docstring); True when the patch is in place."""
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
        if sig != signal.SIGTERM or self.should_exit or waiting or not _is_runner():
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
