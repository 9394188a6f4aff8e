"""``cloud-worker status``, ``logs`` and ``cancel``: a request after it was sent.

``status`` and ``logs`` read where the job is, as ``GET /jobs/<id>`` does: the backend's
``lookup`` (the watch cache of the Jobs in a cluster, the state folder of the local
handler on this machine) and its ``log_stream`` (the pod's log, or the local job's log
file), from the backend ``runtime.open_for_inspection`` opens. ``cancel`` goes the way every request goes, over RabbitMQ: it publishes the cancel
event and waits for the handler's answer, so it reaches the job in either backend
without access to the cluster.

A target is a request id or a Job name; a Job name is told apart by its shape (the
client's name, a dash and ten hexadecimal digits, as ``naming.job_name`` makes it).
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from typing import Any, Protocol

from handler.core.config import Settings
from handler.core.errors import NotFound
from handler.core.events import encode, reply_event
from handler.core.exitcodes import ExitCode
from handler.core.naming import HASH_CHARS, MAX_NAME
from handler.service.backends import JobBackend

#: A Job name as ``naming.job_name`` makes them (a request id from ``submit`` is 32 hex digits, no dash).
JOB_NAME_SHAPE = re.compile(rf"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?-[0-9a-f]{{{HASH_CHARS}}}")
#: The exit code ``status`` gives for each way a request ends (as ``submit`` does).
EXIT_FOR_STATUS = {"pending": ExitCode.OK, "running": ExitCode.OK, "succeeded": ExitCode.OK,
                   "failed": ExitCode.FAILED, "timedout": ExitCode.TIMEDOUT, "rejected": ExitCode.REJECTED,
                   "cancelled": ExitCode.CANCELLED}


class Writer(Protocol):
    """Where log lines go: a text stream, or anything with ``write`` (``submit --follow``)."""

    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


def is_job_name(target: str) -> bool:
    return len(target) <= MAX_NAME and JOB_NAME_SHAPE.fullmatch(target) is not None


# --- status
def status(backend: JobBackend, settings: Settings, request_id: str) -> tuple[int, dict[str, Any]]:
    """The exit code and the document ``GET /jobs/<request id>`` would answer."""
    view = backend.lookup(request_id)
    if view is None:
        return ExitCode.NOT_FOUND, {
            "requestId": request_id, "status": "unknown",
            "message": f"no job for this request id: not taken by a handler yet, never sent, or finished more than "
                       f"{settings.job_ttl_seconds} s ago (CLOUD_WORKER_JOB_TTL_SECONDS) and since deleted"}
    doc: dict[str, Any] = {"requestId": view.request.request_id, "jobName": view.request.job_name,
                           "status": view.status}
    if view.outcome is not None:
        event = reply_event(view.request, view.outcome, source=settings.event_source, namespace=backend.namespace,
                            now=view.outcome.completion_time or datetime.now(UTC))
        doc["reply"] = json.loads(encode(event).body)
    return EXIT_FOR_STATUS.get(view.status, ExitCode.FAILED), doc


# --- logs
def job_name_of(backend: JobBackend, target: str) -> str | None:
    if is_job_name(target):
        return target
    view = backend.lookup(target)
    return view.request.job_name if view is not None else None


def print_log(backend: JobBackend, target: str, out: Writer = sys.stdout, follow: bool = False) -> int:
    """Print the log of ``target``'s job (and with ``follow`` until it ends); the exit code."""
    name = job_name_of(backend, target)
    if name is None:
        return ExitCode.NOT_FOUND
    try:
        for chunk in backend.log_stream(name, follow):
            out.write(chunk.decode("utf-8", "replace"))
            out.flush()
    except NotFound:
        return ExitCode.NOT_FOUND
    return ExitCode.OK
