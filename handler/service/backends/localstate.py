"""The local backend's state folder: what other processes on the machine may read.

A local job lives in the handler process that started it, so two handlers on one
machine could not share their jobs: a cancel or a redelivery reaching the other one
would not find the job, and two embedded S3 endpoints would split the clients' files.
So one local-mode handler runs per state folder (``CLOUD_WORKER_LOCAL_STATE_DIR``), held
by a lock file the operating system releases when the process dies however it dies, and
a second one is refused with a line saying why (exit 3): more jobs at once is
``--concurrency``, not more handlers.

The handler also writes each job down here, one folder per Job name: the manifest the
cluster would hold (``job.json``, from which ``manifest.request_from_job`` reads the
request back), the output as it is written (``log``, at most ``job_log_max_bytes``), a
``started`` marker and, at the end, the outcome (``outcome.json``). ``cloud-worker
status`` and ``logs -f`` read these from another process, the way they read a Job and
its pod from the API server; finished jobs are removed after ``job_ttl_seconds``, as
``ttlSecondsAfterFinished`` removes a Job. The lock file holds the handler's pid while
it runs, which is how those tools, started without ``--backend``, know that jobs run
here (``holder``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from handler.core.config import Settings
from handler.core.errors import ConfigError, NotFound
from handler.core.manifest import ANNOTATION_REQUEST_ID
from handler.core.outcome import Outcome, Status, parse_time

log = logging.getLogger(__name__)

#: Held by the one handler using the folder.
HANDLER_LOCK = "handler.lock"
#: Seconds between looks at a job's log file that has not grown (``log_stream`` with follow).
POLL_SECONDS = 0.5


def default_state_dir() -> Path:
    """``cloud-worker-<uid>`` in the system's temporary folder: per user and per machine."""
    return Path(tempfile.gettempdir()) / f"cloud-worker-{os.getuid()}"


def state_dir(settings: Settings) -> Path:
    return Path(settings.local_state_dir).expanduser() if settings.local_state_dir else default_state_dir()


def outcome_to_json(outcome: Outcome) -> dict[str, Any]:
    return {"status": outcome.status.value, "reason": outcome.reason, "message": outcome.message,
            "exitCode": outcome.exit_code, "podReason": outcome.pod_reason, "podName": outcome.pod_name,
            "startTime": outcome.start_time.isoformat() if outcome.start_time else None,
            "completionTime": outcome.completion_time.isoformat() if outcome.completion_time else None,
            "logTail": outcome.log_tail}


def outcome_from_json(doc: dict[str, Any]) -> Outcome:
    return Outcome(Status(doc["status"]), doc["reason"], doc["message"], exit_code=doc.get("exitCode"),
                   pod_reason=doc.get("podReason"), pod_name=doc.get("podName"),
                   start_time=parse_time(doc.get("startTime")), completion_time=parse_time(doc.get("completionTime")),
                   log_tail=doc.get("logTail") or "")


@dataclass(frozen=True)
class JobRecord:
    """A job as written down: its manifest, whether it started, its outcome once it ended."""

    name: str
    manifest: dict[str, Any]
    started: bool
    outcome: Outcome | None
    log_path: Path


class LocalState:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs = root / "jobs"
        self._lock: BinaryIO | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> LocalState:
        return cls(state_dir(settings))

    # --- the handler's lock
    def claim(self) -> None:
        """Become the folder's one handler, or raise ``ConfigError`` naming the one that is."""
        if self._lock is not None:
            return
        self._prepare()
        handle = open(self.root / HANDLER_LOCK, "a+b")  # noqa: SIM115 - held open for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().decode("ascii", "replace").strip() or "?"
            handle.close()
            raise ConfigError(
                f"another local-mode handler (pid {holder}) already runs the jobs of {self.root}; one handler "
                "per state folder runs them all: raise its CLOUD_WORKER_CONCURRENCY to run more jobs at once, "
                "or give this one its own CLOUD_WORKER_LOCAL_STATE_DIR and its own CLOUD_WORKER_QUEUE") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()).encode())
        handle.flush()
        self._lock = handle

    def release(self) -> None:
        if self._lock is not None:
            self._lock.truncate(0)  # no pid: nobody runs the jobs of this folder now
            self._lock.close()  # closing the file drops the lock
            self._lock = None

    def holder(self) -> int | None:
        """The pid of the handler running the jobs of this folder, when one runs (its pid
        is in the lock file and the process is alive); None otherwise. Only reads: taking
        the lock even for a moment could refuse a handler starting at that moment."""
        try:
            pid = int((self.root / HANDLER_LOCK).read_text(encoding="ascii").strip())
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None  # a handler that died without releasing the folder
        except PermissionError:
            pass  # alive, another user's (the folder is this user's: see _prepare)
        return pid

    def _prepare(self) -> None:
        self.jobs.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)  # job logs and manifests name buckets and requests: the user's alone
        owner = self.root.stat().st_uid
        if owner != os.getuid():
            raise ConfigError(f"the state folder {self.root} belongs to user {owner}, not to this user "
                              f"({os.getuid()}): set CLOUD_WORKER_LOCAL_STATE_DIR to a folder of your own")

    # --- the jobs, written by the handler
    def record(self, name: str, manifest: dict[str, Any]) -> Path:
        """A job's folder afresh, with its manifest; returns the path of its log."""
        folder = self.jobs / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        _write_json(folder / "job.json", manifest)
        (folder / "log").touch()
        return folder / "log"

    def termination_log(self, name: str) -> Path:
        """The job's termination message file (a container's ``/dev/termination-log``)."""
        return self.jobs / name / "termination-log"

    def mark_started(self, name: str) -> None:
        (self.jobs / name / "started").touch()

    def finish(self, name: str, outcome: Outcome) -> None:
        _write_json(self.jobs / name / "outcome.json", outcome_to_json(outcome))

    def forget_expired(self, ttl_seconds: float) -> None:
        now = time.time()
        for done in self.jobs.glob("*/outcome.json"):
            try:
                if now - done.stat().st_mtime > ttl_seconds:
                    shutil.rmtree(done.parent, ignore_errors=True)
            except FileNotFoundError:
                continue

    # --- read by anyone
    def read(self, name: str) -> JobRecord | None:
        folder = self.jobs / name
        try:
            manifest = json.loads((folder / "job.json").read_text())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return None
        try:
            outcome = outcome_from_json(json.loads((folder / "outcome.json").read_text()))
        except (FileNotFoundError, ValueError, KeyError):
            outcome = None
        return JobRecord(name, manifest, (folder / "started").exists(), outcome, folder / "log")

    def find(self, request_id: str) -> JobRecord | None:
        """The newest job of a request (by its request-id annotation)."""
        found = [r for r in self.records() if (r.manifest["metadata"].get("annotations") or {})
                 .get(ANNOTATION_REQUEST_ID) == request_id]
        return max(found, key=lambda r: r.log_path.parent.stat().st_mtime, default=None)

    def knows(self, target: str) -> bool:
        """A job of this name, or of this request id, is written down here."""
        return self.read(target) is not None or self.find(target) is not None

    def log_stream(self, name: str, follow: bool) -> Iterator[bytes]:
        """The job's log file, and with ``follow`` what is added to it until the job ends;
        ``NotFound`` when no such job is written down."""
        record = self.read(name)
        if record is None:
            raise NotFound(f"no local job {name} in {self.root}")
        position = 0
        while True:
            try:
                with open(record.log_path, "rb") as log_file:
                    if log_file.seek(0, 2) < position:
                        position = 0  # a retry starts a new log, as a new pod does
                    log_file.seek(position)
                    chunk = log_file.read()
            except FileNotFoundError:
                return  # expired while we read it
            if chunk:
                position += len(chunk)
                yield chunk
            if not follow or record.outcome is not None and not chunk:
                return
            if not chunk:
                time.sleep(POLL_SECONDS)
                record = self.read(name) or record

    def records(self) -> Iterator[JobRecord]:
        if not self.jobs.is_dir():
            return
        for folder in sorted(self.jobs.iterdir()):
            record = self.read(folder.name)
            if record is not None:
                yield record


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    """Whole or not at all: a reader never sees half a file."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(doc, default=str))
    partial.replace(path)
