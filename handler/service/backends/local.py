"""The local backend: each request's Job is a local process, reported like a Kubernetes Job.

For one machine with nothing but RabbitMQ (the demo, trials, development). The images
file (``handler.service.backends.localimages``) names the command that stands in for each image; it runs
in a fresh working directory with the environment the pod would get: the handler's
``PATH`` (its own bin directory first), ``HOME`` and locale, the image's ``env``, the S3
credentials the handler was given for jobs, then ``manifest.container_env(request)``.

The Kubernetes semantics are kept where a client can see them:

- the timeout is ``activeDeadlineSeconds``: at the deadline the process group gets
  SIGTERM, then SIGKILL after ``TERMINATION_GRACE_SECONDS``, and the reply is
  ``timedout``/``DeadlineExceeded``;
- the backoff limit (the profile's ``backoffLimit``, else ``CLOUD_WORKER_JOB_BACKOFF_LIMIT``)
  retries a failed process (at once, not with the Job controller's exponential delay),
  within the same deadline, except after a fail-fast exit code (``PodFailurePolicy``);
- a profile's ``resources.limits`` become the process's resource limits (``locallimits``);
- the outcome is decided by the same pure code that reads a real Job: the process's end
  is written down as the Job and pod status the Job controller and kubelet would write,
  and ``outcome.finished_outcome`` / ``stuck_outcome`` classify it, so status, reason,
  ``podReason``, exit code, message and times look exactly as they do from a cluster;
- the log tail is the last ``log_tail_lines`` lines of stdout and stderr together, cut to
  ``log_tail_bytes`` as the API server's ``limitBytes`` does;
- a redelivered request adopts its running (or finished, for ``job_ttl_seconds``) job
  instead of starting a second one. The registry that makes this work is in this process,
  so one handler runs per state folder (``localstate``: a second is refused), and every
  job is also written down there for ``cloud-worker status`` and ``logs`` to read.
  Closing the backend stops the jobs it started (a cluster would keep them; a local
  process cannot outlive its parent's bookkeeping).

An image the file does not map fails at once with reason ``ErrImagePull``, as a pod
whose image cannot be pulled does, with a message naming the file.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handler.adapters.embedded_s3 import EmbeddedS3, endpoint_configured
from handler.core.config import Settings
from handler.core.errors import Interrupted
from handler.core.events import ACCEPTED, STARTED
from handler.core.manifest import (
    TERMINATION_LOG_VARIABLE,
    TERMINATION_MESSAGE_BYTES,
    build_job,
    cancel_annotations,
    container_env,
    expand_env_value,
    request_from_job,
)
from handler.core.messages import CancelOutcome, CancelRequest, CancelStatus
from handler.core.outcome import Outcome, utcnow
from handler.core.profiles import Profiles
from handler.core.request import WorkRequest
from handler.service.backends import JobView, Progress
from handler.service.backends.localimages import ImageMap, LocalImage, load_image_map
from handler.service.backends.locallimits import command_with_limits, limits_of, notes
from handler.service.backends.localstate import LocalState
from handler.service.backends.localstatus import Ended, cancelled_outcome, cannot_start_outcome, reported_outcome

log = logging.getLogger(__name__)

#: The ``namespace`` replies name for local jobs.
LOCAL_NAMESPACE = "local"
#: The images file used when CLOUD_WORKER_LOCAL_IMAGES is empty (in a source checkout).
DEFAULT_IMAGES_FILE = Path(__file__).resolve().parents[3] / "examples" / "images.toml"
#: Seconds between SIGTERM and SIGKILL at the deadline: time for the job toolkit to
#: upload outputs and error files, yet shorter than Kubernetes' 30 s so a demo or test
#: that times out does not hang.
TERMINATION_GRACE_SECONDS = 10.0
#: Longest wait between looks at a request's stop flag, in seconds (``wake`` ends it early).
MAX_WAIT = 1.0
#: Variables of the handler's environment a job also gets (a pod has its image's).
PASSED_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SYSTEMROOT")
#: The S3 credential and endpoint variables handed to jobs (a pod gets them from a Secret).
S3_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_CA_BUNDLE", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY",
    "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD",
)



@dataclass
class _LocalJob:
    request: WorkRequest
    command: tuple[str, ...]
    env: dict[str, str]
    pod_name: str
    started: bool = False
    outcome: Outcome | None = None
    finished_at: float | None = None  # monotonic, for the TTL
    process: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = field(default=None, repr=False)
    #: Set by ``cancel``: the process is stopped and the job ends ``cancelled``.
    cancel_reason: str | None = None
    #: The last attempt's output from its start, up to ``job_log_max_bytes`` + 1 bytes
    #: (the one more tells the log object it was cut), as a pod log keeps it.
    log_head: bytearray = field(default_factory=bytearray, repr=False)
    #: The same output, in the state folder for ``cloud-worker logs``.
    log_file: Any = field(default=None, repr=False)


class LocalBackend:
    def __init__(self, settings: Settings, images: ImageMap, credentials_env: Mapping[str, str],
                 base_env: Mapping[str, str], closers: Sequence[Callable[[], None]] = (),
                 state: LocalState | None = None, profiles: Profiles | None = None) -> None:
        self.settings = settings
        self.profiles = profiles or Profiles.builtin()
        self.state = state or LocalState.for_settings(settings)
        self.images = images
        self.namespace = LOCAL_NAMESPACE
        self._credentials_env = dict(credentials_env)
        self._base_env = dict(base_env)
        self._closers = list(closers)
        self._cond = threading.Condition()
        self._jobs: dict[str, _LocalJob] = {}
        self._closed = False
        self._started = False
        self._counts: collections.Counter[str] = collections.Counter()

    # --- JobBackend
    def start(self) -> None:
        self.state.claim()
        self._started = True
        log.info("local backend: jobs written down in %s", self.state.root)
        log.info("local backend: %d image(s) mapped by %s: %s", len(self.images.names()), self.images.source,
                 ", ".join(self.images.names()))
        for profile in self.profiles.by_name.values() if self.profiles.configured else ():
            applied, ignored = notes(profile)
            log.info("local backend: profile %s: %s%s", profile.name,
                     "; ".join(applied) or "no process limits",
                     f"; ignored here (only a cluster has them): {', '.join(ignored)}" if ignored else "")

    def inspect(self) -> None:
        """Nothing to open: ``lookup`` and ``log_stream`` read the state folder as they go."""

    def reachable(self) -> bool:
        return True

    def log_stream(self, job_name: str, follow: bool) -> Iterator[bytes]:
        return self.state.log_stream(job_name, follow)

    def ready(self) -> bool:
        return not self._closed

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            running = [job for job in self._jobs.values() if job.outcome is None]
            self._cond.notify_all()
        for job in running:
            if job.process is not None:
                log.warning("stopping local job %s (pid %d): the backend is closing", job.request.job_name,
                            job.process.pid)
                _signal_group(job.process, signal.SIGTERM)
        for job in running:
            if job.thread is not None:
                job.thread.join(TERMINATION_GRACE_SECONDS + 5)
        for closer in self._closers:
            closer()
        self.state.release()
        if self._started:
            log.info("local backend closed: %s", dict(self._counts) or "no jobs")

    def run(self, request: WorkRequest, stop: threading.Event, progress: Progress | None = None) -> Outcome:
        name = request.job_name
        with self._cond:
            if self._closed:
                raise Interrupted(f"local backend closed before job {name} could start")
            self._forget_expired()
            job = self._jobs.get(name)
            if job is None:
                image = self.images.lookup(request.image)
                if image is None:
                    self._counts["unmapped"] += 1
                    return self._unmapped(request)
                job = self._create(request, image)
            else:
                self._counts["adopted"] += 1
                log.info("job %s exists: adopting it for redelivered request %s", name, request.request_id)
                if job.request.request_id != request.request_id:
                    log.warning("job %s belongs to request %s, not %s (hash collision?)", name,
                                job.request.request_id, request.request_id)
        if progress:
            progress(ACCEPTED, {})
        started_sent = False

        def something_to_do() -> bool:
            return job.outcome is not None or stop.is_set() or (job.started and not started_sent)

        while True:
            with self._cond:
                self._cond.wait_for(something_to_do, timeout=MAX_WAIT)
                outcome, started = job.outcome, job.started
            if progress and started and not started_sent:
                started_sent = True
                progress(STARTED, {})
            if outcome is not None:
                return outcome
            if stop.is_set():
                raise Interrupted(f"stopped while following local job {name}")

    def lookup(self, request_id: str) -> JobView | None:
        """The local job of a request: from this process's registry, else (in another
        process, such as ``cloud-worker status``) as the state folder has it."""
        with self._cond:
            job = next((j for j in self._jobs.values() if j.request.request_id == request_id), None)
            if job is None:
                record = self.state.find(request_id)
                if record is None:
                    return None
                status = record.outcome.status.value if record.outcome else "running" if record.started else "pending"
                return JobView(request_from_job(record.manifest), status, record.outcome)
            if job.outcome is not None:
                return JobView(job.request, job.outcome.status.value, job.outcome)
            return JobView(job.request, "running" if job.started else "pending")

    def log_tail(self, outcome: Outcome) -> str:
        return outcome.log_tail  # a local job's outcome carries its log already

    def instrument(self, metrics: Any) -> None:
        """No counters of its own: the registry is in this process."""

    def mark_replied(self, request: WorkRequest, status: str, release: bool = True) -> None:
        """Nothing to record: local jobs live in this process's memory, not in a cluster."""

    def unanswered(self, after_seconds: float) -> list[tuple[WorkRequest, Outcome]]:
        """None: a local job ends with its handler, so no job outlives the one following it."""
        return []

    def stop(self, request: WorkRequest, reason: str) -> CancelOutcome:
        """Stop the request's own running job (the one made for its identity), as a cancel does."""
        with self._cond:
            job = self._jobs.get(request.job_name)
            if job is None or job.request.identity != request.identity:
                return CancelOutcome(CancelStatus.NOT_FOUND, None, f"no local job for request {request.request_id}")
        return self.cancel(CancelRequest(request_id=None, job_name=request.job_name, reason=reason,
                                         event_id=request.identity, event_source=""))

    def job_log(self, request: WorkRequest, outcome: Outcome, limit_bytes: int) -> bytes | None:
        """The job's (last attempt's) output from its start, at most ``limit_bytes`` bytes,
        as the pod log endpoint gives it; None for a job that never ran."""
        with self._cond:
            job = self._jobs.get(request.job_name)
            if job is None or job.outcome is None or not job.started:
                return None
            return bytes(job.log_head[:limit_bytes])

    def cancel(self, target: CancelRequest) -> CancelOutcome:
        """Stop the named running job (SIGTERM to its process group, as a pod deletion
        does); its follower then replies ``cancelled``. A finished job is left alone."""
        with self._cond:
            job = next((j for j in self._jobs.values()
                        if j.request.job_name == target.job_name or j.request.request_id == target.request_id), None)
            if job is None:
                return CancelOutcome(CancelStatus.NOT_FOUND, None, f"no local job for {target.target}")
            manifest = build_job(job.request, self.settings)
            if job.outcome is not None:
                return CancelOutcome(CancelStatus.FINISHED, manifest,
                                            f"job {job.request.job_name} had already finished")
            job.cancel_reason = target.reason
            process = job.process
        if process is not None:
            _signal_group(process, signal.SIGTERM)
        manifest["metadata"]["annotations"].update(cancel_annotations(target.reason))
        log.info("cancelled local job %s (%s)", job.request.job_name, target.reason)
        return CancelOutcome(CancelStatus.CANCELLED, manifest, f"job {job.request.job_name} cancelled")

    # --- inside
    def _create(self, request: WorkRequest, image: LocalImage) -> _LocalJob:
        """Register and start the job; called with the lock held."""
        env = {**self._base_env, **image.env, **self._credentials_env}
        for item in container_env(request):  # expanded as the kubelet would: a process sees what a pod sees
            env[item["name"]] = expand_env_value(item["value"], env)
        # A container's /dev/termination-log: where a job says why it failed, for the reply.
        env[TERMINATION_LOG_VARIABLE] = str(self.state.termination_log(request.job_name))
        job = _LocalJob(request, image.command, env, _pod_name(request.job_name))
        job.log_file = self.state.record(request.job_name, build_job(request, self.settings)).open("ab")
        job.thread = threading.Thread(target=self._execute, args=(job,), name=f"local-{request.job_name}",
                                      daemon=True)
        self._jobs[request.job_name] = job
        self._counts["created"] += 1
        job.thread.start()
        log.info("created local job %s for request %s: %s", request.job_name, request.request_id,
                 " ".join(image.command))
        return job

    def _execute(self, job: _LocalJob) -> None:
        request = job.request
        deadline = time.monotonic() + request.deadline_seconds
        start_time = utcnow()
        attempts = 0
        profile = request.profile
        backoff_limit = self.settings.job_backoff_limit if profile.backoff_limit is None else profile.backoff_limit
        fail_fast = self.settings.job_fail_fast_exit_codes if profile.fail_fast_exit_codes is None else \
            profile.fail_fast_exit_codes
        while True:
            attempts += 1
            ended = self._attempt(job, deadline)
            if ended.exit_code in fail_fast and not ended.timed_out:
                ended = dataclasses.replace(ended, fail_fast=True)
            if (ended.exit_code == 0 or ended.timed_out or ended.cannot_start or job.cancel_reason is not None
                    or attempts > backoff_limit or ended.fail_fast or self._closed):
                break
            log.info("local job %s: attempt %d exited with %s; retrying (backoff limit %d)", request.job_name,
                     attempts, ended.exit_code, backoff_limit)
        if job.cancel_reason is not None:
            outcome = cancelled_outcome(job.cancel_reason, job.pod_name, start_time, ended.end_time)
        else:
            outcome = reported_outcome(ended, job.pod_name, start_time)
        log.info("local job %s %s (%s) after %d attempt(s)", request.job_name, outcome.status.value, outcome.reason,
                 attempts)
        job.log_file.close()
        self.state.finish(request.job_name, outcome)
        with self._cond:
            job.outcome = outcome
            job.finished_at = time.monotonic()
            job.process = None
            self._counts[outcome.status.value] += 1
            self._cond.notify_all()

    def _attempt(self, job: _LocalJob, deadline: float) -> Ended:
        """Run the command once, in a fresh working directory, until it exits or the deadline."""
        lines: collections.deque[bytes] = collections.deque(maxlen=max(1, self.settings.log_tail_lines))
        termination_log = Path(job.env[TERMINATION_LOG_VARIABLE])
        termination_log.write_bytes(b"")  # each attempt's own, as each container's is
        with tempfile.TemporaryDirectory(prefix=f"cloud-worker-{job.request.job_name[:40]}-") as workdir:
            start = utcnow()
            command = command_with_limits(job.command, limits_of(job.request.profile), deadline - time.monotonic())
            try:
                process = subprocess.Popen(
                    command, cwd=workdir, env=job.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            except OSError as exc:
                log.warning("local job %s cannot start %s: %s", job.request.job_name, job.command[0], exc)
                return Ended(None, "", start, utcnow(), cannot_start=f"cannot run {job.command[0]!r}: {exc}")
            with self._cond:
                job.process, job.started = process, True
                job.log_head = bytearray()
                self._cond.notify_all()
            job.log_file.truncate(0)  # a pod's log is its own: a retry starts a new one
            self.state.mark_started(job.request.job_name)
            reader = threading.Thread(target=self._read, args=(job, process, lines), daemon=True)
            reader.start()
            timed_out = False
            try:
                returncode = process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
                log.info("local job %s passed its deadline of %d s: stopping it", job.request.job_name,
                         job.request.deadline_seconds)
                returncode = _terminate(process)
            # The container is gone once its main process is: so is everything it started.
            _signal_group(process, signal.SIGKILL)
            reader.join(5)
            if process.stdout is not None:
                process.stdout.close()
            end = utcnow()
        exit_code = returncode if returncode >= 0 else 128 - returncode
        return Ended(exit_code, self._tail(lines), start, end, timed_out=timed_out,
                     message=_termination_message(termination_log))

    def _read(self, job: _LocalJob, process: subprocess.Popen[bytes], lines: collections.deque[bytes]) -> None:
        limit = max(1, self.settings.log_tail_bytes)
        keep = self.settings.job_log_max_bytes + 1
        for line in process.stdout or ():
            lines.append(line[-limit:] if len(line) > limit else line)
            if len(job.log_head) < keep:
                kept = line[:keep - len(job.log_head)]
                job.log_head += kept
                try:
                    job.log_file.write(kept)
                    job.log_file.flush()
                except ValueError:
                    pass  # closed: the job has ended, and a child it left behind still writes
            log.debug("[%s] %s", job.request.job_name, line.rstrip().decode("utf-8", "replace"))

    def _tail(self, lines: collections.deque[bytes]) -> str:
        if self.settings.log_tail_lines <= 0:
            return ""
        # tailLines, then limitBytes from the start of what is left, as the API server does.
        return b"".join(lines)[: self.settings.log_tail_bytes].decode("utf-8", "replace")

    def _unmapped(self, request: WorkRequest) -> Outcome:
        log.warning("request %s: image %s is not mapped by %s", request.request_id, request.image, self.images.source)
        now = utcnow()
        message = (f"image {request.image!r} is not mapped to a command in {self.images.source} "
                   f"(the local backend runs only the images its images file names)")
        return cannot_start_outcome("ErrImagePull", message, _pod_name(request.job_name), now, now)

    def _forget_expired(self) -> None:
        """Drop finished jobs older than the TTL (``ttlSecondsAfterFinished``); lock held."""
        now = time.monotonic()
        ttl = self.settings.job_ttl_seconds
        for name in [n for n, j in self._jobs.items() if j.finished_at is not None and now - j.finished_at > ttl]:
            del self._jobs[name]
        self.state.forget_expired(ttl)


def _termination_message(path: Path) -> str:
    """What the job wrote to its termination message file, as much as the kubelet reads."""
    try:
        with open(path, "rb") as message:
            return message.read(TERMINATION_MESSAGE_BYTES).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _pod_name(job_name: str) -> str:
    """Like a pod's name: the Job's name and five random characters."""
    return f"{job_name}-{secrets.token_hex(3)[:5]}"


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _terminate(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM the job's process group; SIGKILL it after the grace. Returns the returncode."""
    _signal_group(process, signal.SIGTERM)
    try:
        return process.wait(timeout=TERMINATION_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        return process.wait()


def job_base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the handler's environment a job also gets, with the handler's own bin
    directory first on PATH (so ``cloud-worker`` and ``python`` are the virtualenv's)."""
    env = {name: environ[name] for name in PASSED_THROUGH if environ.get(name)}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, *(p for p in env.get("PATH", os.defpath).split(os.pathsep)
                                               if p and p != bin_dir)])
    return env


def open_local_backend(settings: Settings, environ: Mapping[str, str],
                       s3_env: Mapping[str, str] | None = None, profiles: Profiles | None = None) -> LocalBackend:
    """The local backend as ``cloud-worker consume`` runs it.

    Jobs get ``s3_env`` when given; else the S3 variables of ``environ`` when it
    configures an endpoint (MinIO); else an embedded S3 endpoint is started for them and
    stopped when the backend closes.
    """
    images = load_image_map(Path(settings.local_images) if settings.local_images else DEFAULT_IMAGES_FILE)
    closers: list[Callable[[], None]] = []
    state = LocalState.for_settings(settings)
    if s3_env is None:
        state.claim()  # before an embedded S3 starts: a second handler is refused without one
        s3_env, embedded = s3_for_jobs(environ)
        if embedded is not None:
            closers.append(embedded.stop)
            log.warning(
                "no S3 endpoint configured (AWS_ENDPOINT_URL_S3): jobs use an embedded in-memory S3 at %s; "
                "clients reach it with AWS_ENDPOINT_URL_S3=%s AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s",
                embedded.url, embedded.url, embedded.env["AWS_ACCESS_KEY_ID"], embedded.env["AWS_SECRET_ACCESS_KEY"],
            )
    return LocalBackend(settings, images, s3_env, job_base_env(environ), closers, state, profiles)


def s3_for_jobs(environ: Mapping[str, str]) -> tuple[dict[str, str], EmbeddedS3 | None]:
    """The S3 variables jobs get: those of ``environ`` when it configures an endpoint
    (MinIO), else those of an embedded endpoint started here (the caller stops it)."""
    # MINIO_SERVICE_HOST: the original's way to name the MinIO endpoint (bucket names resolve against it).
    if endpoint_configured(environ) or environ.get("MINIO_SERVICE_HOST"):
        return {name: environ[name] for name in S3_VARIABLES if environ.get(name)}, None
    embedded = EmbeddedS3.start()
    return embedded.env, embedded
