"""``cloud-worker status``, ``logs`` and ``cancel``: a request after it was sent.

``status`` and ``logs`` read where the job is, as ``GET /jobs/<id>`` does: the backend's
``lookup`` (the watch cache of the Jobs in a cluster, the state folder of the local
handler on this machine), and the pod's log (``follow=true``) or the local job's log
file. ``cancel`` goes the way every request goes, over RabbitMQ: it publishes the cancel
event and waits for the handler's answer, so it reaches the job in either backend
without access to the cluster.

A target is a request id or a Job name; a Job name is told apart by its shape (the
client's name, a dash and ten hexadecimal digits, as ``naming.job_name`` makes it).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from handler.core.config import Settings
from handler.core.errors import NotFound, Transient
from handler.core.events import encode, reply_event
from handler.core.exitcodes import ExitCode
from handler.core.naming import HASH_CHARS, MAX_NAME
from handler.core.outcome import CONTAINER
from handler.service.backends import JobBackend

#: A Job name as ``naming.job_name`` makes them (a request id from ``submit`` is 32 hex digits, no dash).
JOB_NAME_SHAPE = re.compile(rf"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?-[0-9a-f]{{{HASH_CHARS}}}")
#: The exit code ``status`` gives for each way a request ends (as ``submit`` does).
EXIT_FOR_STATUS = {"pending": ExitCode.OK, "running": ExitCode.OK, "succeeded": ExitCode.OK,
                   "failed": ExitCode.FAILED, "timedout": ExitCode.TIMEDOUT, "rejected": ExitCode.REJECTED,
                   "cancelled": ExitCode.CANCELLED}
#: Seconds between looks at a job that has not started, or whose log stream ended early.
POLL_SECONDS = 0.5


class Writer(Protocol):
    """Where log lines go: a text stream, or anything with ``write`` (``submit --follow``)."""

    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


def is_job_name(target: str) -> bool:
    return len(target) <= MAX_NAME and JOB_NAME_SHAPE.fullmatch(target) is not None


def inspecting_backend(settings: Settings, environ: Mapping[str, str]) -> JobBackend:
    """The backend the handler uses, opened to look, not to run: the Kubernetes one
    reads the Jobs through its watch cache; the local one reads the state folder (it
    claims nothing and starts no S3)."""
    if settings.backend == "local":
        from handler.service.backends.local import open_local_backend

        return open_local_backend(settings, environ, s3_env={})
    from handler.service.runtime import open_backend

    backend = open_backend(settings, environ)
    backend.start()
    return backend


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


def print_local_log(backend: Any, job_name: str, out: Writer, follow: bool) -> int:
    """The local job's log file, and with ``follow`` what is added to it until the job ends."""
    state = backend.state
    record = state.read(job_name)
    if record is None:
        return ExitCode.NOT_FOUND
    position = 0
    while True:
        try:
            with open(record.log_path, "rb") as log_file:
                if log_file.seek(0, 2) < position:
                    position = 0  # a retry starts a new log, as a new pod does
                log_file.seek(position)
                chunk = log_file.read()
        except FileNotFoundError:
            return ExitCode.OK  # expired while we read it
        if chunk:
            position += len(chunk)
            _write(out, chunk)
        if not follow or record.outcome is not None and not chunk:
            return ExitCode.OK
        if not chunk:
            time.sleep(POLL_SECONDS)
            record = state.read(job_name) or record


def print_pod_log(settings: Settings, job_name: str, out: Writer, follow: bool) -> int:
    """The log of the Job's newest pod (container ``job``), and with ``follow`` until the
    container ends. The stream is asked for again when it ends early (a dropped
    connection, a silent job), skipping what was printed."""
    from handler.adapters.kube import Kube

    kube = Kube(settings)
    try:
        printed: dict[str, int] = {}
        while True:
            pods, _ = kube.list("pods", f"job-name={job_name}")
            pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", default=None)
            if pod is None:
                if printed:
                    return ExitCode.OK  # its pod was followed, and is gone (deleted with a cancelled Job)
                exists = kube.read_job(job_name) is not None
                if not follow or not exists:
                    return ExitCode.OK if exists else ExitCode.NOT_FOUND
                time.sleep(POLL_SECONDS)
                continue
            name = pod["metadata"]["name"]
            state = _container_state(pod)
            if not follow:
                _write(out, kube.pod_log(name, CONTAINER, settings.job_log_max_bytes))
                return ExitCode.OK
            if "waiting" in state or not state:
                time.sleep(POLL_SECONDS)
                continue
            seen = 0
            printed.setdefault(name, 0)
            try:
                for chunk in kube.follow_pod_log(name, CONTAINER):
                    new = chunk[max(0, printed.get(name, 0) - seen):]
                    seen += len(chunk)
                    if new:
                        _write(out, new)
                    printed[name] = max(printed.get(name, 0), seen)
            except NotFound:
                return ExitCode.OK  # the pod is gone: so is its log
            except Transient:
                pass
            if "terminated" in state:
                return ExitCode.OK
            time.sleep(POLL_SECONDS)
    finally:
        kube.close()


def _container_state(pod: dict[str, Any]) -> dict[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            return status.get("state") or {}
    return {}


def _write(out: Writer, chunk: bytes) -> None:
    out.write(chunk.decode("utf-8", "replace"))
    out.flush()


def print_log(backend: JobBackend, settings: Settings, target: str, out: Writer = sys.stdout,
              follow: bool = False) -> int:
    name = job_name_of(backend, target)
    if name is None:
        return ExitCode.NOT_FOUND
    if settings.backend == "local":
        return print_local_log(backend, name, out, follow)
    return print_pod_log(settings, name, out, follow)
