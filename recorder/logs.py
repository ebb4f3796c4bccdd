"""structlog, configured once at start-up: one JSON event per line on stdout."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import orjson
import structlog

from .config import Secret

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(level: str = "info", stream: object = None, secret: Secret | None = None) -> None:
    """JSON rendered with orjson straight to bytes; loggers cached on first use. With
    ``secret``, the key is scrubbed from every string an event carries (an exception's text
    or a hostile server's message may hold it)."""
    out = stream if stream is not None else sys.stdout.buffer
    scrub = [_Scrub(secret)] if secret is not None else []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *scrub,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.BytesLoggerFactory(out),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


class _Scrub:
    """A processor: the key out of every string value of an event (lists included)."""

    def __init__(self, secret: Secret) -> None:
        self.secret = secret

    def __call__(
        self, logger: Any, method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for name, value in event.items():
            event[name] = self._clean(value)
        return event

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.secret.scrub(value)
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        return value
