"""The Job's log as an object in the output bucket, as the original service provides it.

The original's client lists its output bucket with its prefix after the reply and looks
for ``<prefix>-<job name>.log`` (``<job name>.log`` without a prefix). So once the
backend's ``run`` returns (the Job succeeded, failed, timed out or was cancelled) and
before the reply is built, the handler reads the Job's log through the backend (the pod
log endpoint, or a local process's kept output), cuts it at ``job_log_max_bytes`` with
a marker line, and writes it there, creating the bucket if it is missing.

It is a step of its own, between the backend and the reply, so neither the backends nor
the pure reply builder do I/O on the other's behalf, and both request forms and both
backends share it. It runs whenever the handler has bucket credentials
(``Settings.s3_keys``). It never costs the requester its reply: whatever goes wrong is
returned as ``LogUpload.error`` and the reply says so (``data.logUploadError``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from handler.core.bucketurl import BucketUrl, InvalidBucketUrl, parse_bucket_url, trusted_with_keys
from handler.core.config import Settings
from handler.core.errors import WorkerError
from handler.core.events import LogUpload
from handler.core.outcome import Outcome
from handler.core.request import WorkRequest

if TYPE_CHECKING:
    from handler.adapters.storage import Bucket, S3Credentials

log = logging.getLogger(__name__)

class LogSource(Protocol):
    """Where the Job's log is read: the backend (``JobBackend.job_log``)."""

    def job_log(self, request: WorkRequest, outcome: Outcome, limit_bytes: int) -> bytes | None:
        """The Job's log from its start, at most ``limit_bytes`` bytes; None when there is none."""


BucketOpener = Callable[[BucketUrl, "S3Credentials"], "Bucket"]

CONTENT_TYPE = "text/plain; charset=utf-8"
#: Why a request with bucket URLs gets no log object from a handler without bucket keys.
NO_CREDENTIALS = ("the handler has no bucket credentials to write the Job's log with: give it AWS_ACCESS_KEY_ID and "
                  "AWS_SECRET_ACCESS_KEY (or MINIO_ROOT_USER and MINIO_ROOT_PASSWORD)")


def truncation_marker(limit: int) -> bytes:
    return (f"\n[cloud-worker: log cut at {limit} bytes; the handler's limit is "
            f"CLOUD_WORKER_JOB_LOG_MAX_BYTES]\n").encode()


def log_body(full: bytes | None, outcome: Outcome, limit: int) -> tuple[bytes, bool]:
    """The log object's content and whether it was cut. Without a full log (the pod is
    gone, or never ran), the reply's log tail stands in, said so on its first line."""
    if full is None:
        if outcome.log_tail:
            note = "[cloud-worker: the full log is no longer available; these are its last lines]\n"
            full = note.encode() + outcome.log_tail.encode("utf-8", "replace")
        else:
            full = f"[cloud-worker: no log: {outcome.message}]\n".encode("utf-8", "replace")
    if len(full) <= limit:
        return full, False
    return full[:limit] + truncation_marker(limit), True


def object_url(url: BucketUrl, key: str) -> str:
    where = f"{url.scheme}://{url.endpoint}/{url.bucket}" if url.endpoint else f"s3://{url.bucket}"
    return f"{where}/{key}"


def upload_job_log(request: WorkRequest, outcome: Outcome, source: LogSource, settings: Settings,
                   opener: BucketOpener | None = None) -> LogUpload | None:
    """Write the Job's log (read from ``source``, the backend) to ``request.log_key`` in
    the output bucket. Without bucket credentials for this request nothing is read or
    tried, and the error says which settings would give them."""
    key = request.log_key
    if settings.s3_keys(request.named_buckets) is None:
        return LogUpload(key, request.output_bucket_url, error=NO_CREDENTIALS)
    try:
        # minio comes with the s3 extra; a handler without it still replies.
        from handler.adapters.storage import S3Credentials, open_bucket
    except ImportError as exc:
        return LogUpload(key, request.output_bucket_url,
                         error=f"this handler cannot write the Job's log: install mstc-cloud-worker[s3] ({exc})")
    credentials = S3Credentials.for_handler(settings, request.named_buckets)
    assert credentials is not None  # s3_keys said so above
    try:
        parsed = parse_bucket_url(request.output_bucket_url)
    except InvalidBucketUrl as exc:  # only from a Job whose annotations were edited by hand
        return LogUpload(key, request.output_bucket_url, error=f"no output bucket to write the log to: {exc}")
    whole = BucketUrl(parsed.scheme, parsed.endpoint, parsed.secure, parsed.bucket)
    shown = object_url(whole, key)
    if not trusted_with_keys(whole, settings):
        return LogUpload(key, shown, error=f"the handler writes the Job's log only to its own S3 endpoint "
                                           f"({settings.s3_endpoint_url}) or to CLOUD_WORKER_ALLOWED_BUCKET_HOSTS, "
                                           f"and {whole.endpoint} is neither")
    limit, budget = settings.job_log_max_bytes, settings.log_upload_timeout_seconds
    open_ = opener or (lambda url, creds: open_bucket(url, creds, timeout=budget))
    written: list[LogUpload] = []

    def write() -> None:
        written.append(_write(request, outcome, source, open_(whole, credentials), key, shown, limit))

    # The whole step (reading the log, every attempt of the PUT) has one deadline: a bucket
    # host that accepts connections and never answers must not hold the reply, nor the
    # delivery past the broker's consumer timeout. Past it the upload is left to finish
    # (or fail) on its own thread.
    worker = threading.Thread(target=write, name=f"log-upload-{request.job_name}", daemon=True)
    worker.start()
    worker.join(budget)
    if not written:
        log.warning("request %s: writing the log of job %s to %s took longer than %g s: replying without it",
                    request.request_id, request.job_name, shown, budget)
        return LogUpload(key, shown, error=f"writing the Job's log to {shown} took longer than {budget:g} s "
                                           "(CLOUD_WORKER_LOG_UPLOAD_TIMEOUT_SECONDS)")
    return written[0]


def _write(request: WorkRequest, outcome: Outcome, source: LogSource, bucket: Bucket, key: str, shown: str,
           limit: int) -> LogUpload:
    """Read the Job's log from ``source`` and put it in ``bucket``; never raises."""
    try:
        body, truncated = log_body(source.job_log(request, outcome, limit + 1), outcome, limit)
        bucket.put_bytes(key, body, CONTENT_TYPE)
    except WorkerError as exc:
        log.warning("request %s: could not write the log of job %s to %s: %s", request.request_id,
                    request.job_name, shown, exc)
        return LogUpload(key, shown, error=f"could not write the Job's log to {shown}: {exc}")
    except Exception as exc:  # noqa: BLE001 - a log object must never cost the requester the reply
        log.exception("request %s: writing the log of job %s to %s failed", request.request_id,
                      request.job_name, shown)
        return LogUpload(key, shown, error=f"could not write the Job's log to {shown}: {type(exc).__name__}: {exc}")
    log.info("request %s: log of job %s written to %s (%d bytes%s)", request.request_id, request.job_name, shown,
             len(body), ", cut" if truncated else "")
    return LogUpload(key, shown, size=len(body), truncated=truncated)
