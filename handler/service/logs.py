"""Logging set-up: one JSON object per line in a pod, plain text on a terminal.

The libraries underneath speak for themselves only where we cannot: pika logs every
failed connection attempt at ERROR with a traceback, and every returned message, and
urllib3 a warning per retry, yet each of those also reaches us as an exception that the
adapter translates and the caller reports once, in one line that says what to fix. So
their loggers are kept to CRITICAL unless the level is DEBUG.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

#: ``extra={...}`` keys copied into the JSON line when a log call passes them.
CONTEXT_KEYS = ("request_id", "job_name", "correlation_id")
#: ``extra={...}`` keys whose value is an object: nested as it is in the JSON line, and
#: appended as JSON to a text line (``log.info("settings", extra={"settings": {...}})``).
OBJECT_KEYS = ("settings",)
#: Loggers of libraries whose failures reach us as exceptions we report ourselves.
QUIET_LIBRARIES = ("pika", "urllib3")


def context(request: Any = None, **ids: str | None) -> dict[str, str]:
    """``extra=`` for a log call about a request (a ``WorkRequest``, or the ids given):
    the ids that are known, for the JSON line."""
    if request is not None:
        ids = {"request_id": request.request_id, "job_name": request.job_name,
               "correlation_id": request.correlation_id, **ids}
    return {k: v for k, v in ids.items() if v}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS + OBJECT_KEYS:
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        objects = [f"{key}={json.dumps(getattr(record, key), default=str)}" for key in OBJECT_KEYS
                   if hasattr(record, key)]
        return " ".join([text, *objects])


def configure(level: str, fmt: str, stream=None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL)
