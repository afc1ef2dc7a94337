"""Structured JSON logs with a correlation id.

``bind_correlation(cid)`` puts the id into a context variable; every log line written in
that task carries it. Services bind it from the ``correlation_id`` of each event they
handle, so ``grep <id>`` over all four services' logs follows one customer message.

Customer names, phones and addresses are never passed to a logger; ``redact`` masks
anything that looks like a phone number or e-mail address in free text that must be
logged (e.g. a validation error echoing input).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

_PHONE = re.compile(r"(?<!\d)(?:\+?\d[\d\- ]{6,}\d)(?!\d)")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


def redact(text: str) -> str:
    """Mask phone numbers and e-mail addresses in free text."""
    return _EMAIL.sub("<email>", _PHONE.sub("<phone>", text))


def setup_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Configure structlog and route the standard library's logging through it."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            # First: a call below the configured level costs a level check, not a render.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Chatty libraries: their warnings matter, their info lines do not.
    for name in ("aiokafka", "uvicorn.access", "jieba", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def get_logger(name: str | None = None) -> Any:
    return structlog.stdlib.get_logger(name)


def bind_correlation(correlation_id: str | None) -> None:
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id)


@contextmanager
def correlation(correlation_id: str | None) -> Iterator[None]:
    """Bind a correlation id for the duration of a block."""
    with structlog.contextvars.bound_contextvars(correlation_id=correlation_id):
        yield
