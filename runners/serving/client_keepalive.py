"""Stop the API service's runner clients from reusing connections the runners are closing.

A runner's HTTP server (uvicorn, started by BentoML without a way to configure it) closes a
keep-alive connection after 5 s idle; BentoML 1.4.40's client (`_bentoml_impl.client.proxy2`)
pools connections with aiohttp's default 15 s keep-alive. A request sent on a connection just
as its 5 s run out fails with "Cannot write to closing transport" or "Server disconnected":
an HTTP 500 for the caller (measured: a few per thousand images whenever a runner sits idle
for 5 s between bursts; upstream bentoml/BentoML#5698 proposes the same cure for TCP). The
fix keeps the client's idle connections for less time than the server does.

`install()` is idempotent and does nothing if BentoML's client no longer looks as expected.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

SERVER_KEEPALIVE_S = 5.0  # uvicorn's default, which BentoML's runner workers use
CLIENT_KEEPALIVE_S = 4.0  # reuse only connections idle for less than this
_PATCHED = "_festora_keepalive_patched"


def install() -> bool:
    """Wrap `SessionManager._make_client` so each new session's connector drops idle
    connections after CLIENT_KEEPALIVE_S; True when the patch is in place."""
    try:
        from _bentoml_impl.client.proxy2 import SessionManager
    except ImportError:
        return False
    make_client = getattr(SessionManager, "_make_client", None)
    if make_client is None:
        logger.warning("BentoML's SessionManager changed; runner keep-alive left as is")
        return False
    if getattr(make_client, _PATCHED, False):
        return True

    def patched(self: Any) -> Any:
        session = make_client(self)
        connector = getattr(session, "connector", None)
        current = getattr(connector, "_keepalive_timeout", None)
        if isinstance(current, float) and current > CLIENT_KEEPALIVE_S:
            connector._keepalive_timeout = CLIENT_KEEPALIVE_S  # type: ignore[union-attr]
        return session

    setattr(patched, _PATCHED, True)
    SessionManager._make_client = patched  # type: ignore[method-assign]
    return True
