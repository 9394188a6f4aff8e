"""Logging set-up: one JSON object per line in a pod, plain text on a terminal."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

#: ``extra={...}`` keys copied into the JSON line when a log call passes them.
CONTEXT_KEYS = ("request_id", "job_name", "correlation_id")


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
        for key in CONTEXT_KEYS:
            if hasattr(record, key):
                line[key] = getattr(record, key)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str, fmt: str, stream=None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    handler.setFormatter(
        JsonFormatter() if use_json else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pika narrates every frame at INFO; its warnings are what we want.
    logging.getLogger("pika").setLevel(max(logging.WARNING, root.level))
