"""One logging setup for every process: JSON lines with the request or task ID bound."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from typing import Any

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "certfleet_log_context", default=None
)


def bind(**values: Any) -> contextvars.Token[dict[str, Any] | None]:
    """Bind values (request_id, task_id...) to every log line of the current context."""
    return _context.set({**(_context.get() or {}), **values})


def unbind(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _context.reset(token)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            **(_context.get() or {}),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    # The process's real stderr: in a Celery pool process sys.stderr is a proxy that feeds
    # lines back into logging, and what is written through it from a task's handler is lost.
    handler = logging.StreamHandler(sys.__stderr__ or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel("WARNING")


def fields(**values: Any) -> dict[str, Any]:
    """`log.info("msg", extra=fields(host_id=1))` adds structured fields to one line."""
    return {"fields": values}
