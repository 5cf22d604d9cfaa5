"""Structured logs for the `festora` loggers: one JSON object a line when LOG_JSON is true.

Request bodies, headers and settings are never logged, so API keys and image data stay out.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter

from festora.config import Settings


def configure_logging(settings: Settings) -> None:
    logger = logging.getLogger("festora")
    if getattr(logger, "_festora_configured", False):
        return
    handler = logging.StreamHandler()
    if settings.log_json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(settings.log_level.upper())
    logger.propagate = False
    logger._festora_configured = True  # type: ignore[attr-defined]
