"""One exception root, ``WorkerError``, split by what the caller must do next.

- ``ConfigError``: the process cannot run as configured; exit 3 with one line saying what to fix.
- ``Rejected``: the request itself is wrong. Reply ``rejected``, ack, never retry.
- ``JobFailedToStart``: the cluster refused the Job for a reason a retry cannot fix
  (403 from RBAC, 422 invalid). Reply ``failed`` with the API server's message, ack.
- ``NotFound``: the object asked for does not exist (a 404). The caller decides what
  absence means (a Job already deleted, a pod already gone).
- ``JobExists``: creating the Job answered 409; the request was delivered before: adopt it.
- ``Transient``: the API server, broker or S3 endpoint is unwell. Retry with backoff, or
  leave the message for redelivery. Subclasses: ``ResourceGone`` (a watch's
  resourceVersion expired: re-list), ``BrokerError`` (connection or channel lost),
  ``StorageUnavailable`` (S3 unreachable or 5xx).
- ``Interrupted``: the process is shutting down or lost its broker connection; the
  request is left unacked on purpose and will be adopted by the next delivery.
- ``ReplyUndeliverable``: the broker returned the reply (its ``reply_to`` queue does
  not exist); the requester is gone, the reply is dropped.
- ``ReplyRefused`` (a ``BrokerError``): the broker nacked a publish; retried a few
  times with a delay, then given up.
- ``StorageError`` and its kinds (``StorageConfigError``, ``StorageAccessDenied``,
  ``NoSuchBucket``, ``UnsafeKey``, ``StorageUnavailable``): an S3 operation failed.

Adapters translate their library's exceptions into these, keeping the cause
(``raise ... from exc``): ``kube.translate``, the AMQP module, ``storage``.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(WorkerError):
    """Settings or cluster configuration are unusable."""


class Rejected(WorkerError):
    """A request that can never succeed as sent. ``field`` names the culprit."""

    def __init__(self, field: str, reason: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = reason
        self.message = message


class JobFailedToStart(WorkerError):
    """The API server refused the Job permanently (forbidden, invalid)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class Transient(WorkerError):
    """Worth retrying: 5xx, 429, connection resets, broker drops."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFound(WorkerError):
    """The object does not exist (HTTP 404)."""


class JobExists(WorkerError):
    """Creating the Job answered 409: this request was delivered before."""


class ResourceGone(Transient):
    """A watch's resourceVersion is too old (410 Gone): re-list, then watch again."""


class Interrupted(WorkerError):
    """Work abandoned on purpose (shutdown, lost channel); the message stays unacked."""


class BrokerError(Transient):
    """The broker connection or channel failed."""


class ReplyUndeliverable(WorkerError):
    """The broker returned the reply: no queue for its routing key (the requester is gone)."""


class ReplyRefused(BrokerError):
    """The broker nacked a publish (e.g. the target queue is full with ``x-overflow:
    reject-publish``): worth a few retries, then given up."""


class StorageError(WorkerError):
    """An S3 operation failed. Subclasses say what the caller must do next."""


class StorageConfigError(StorageError):
    """Credentials or endpoint settings are missing or unusable: fix the configuration."""


class StorageAccessDenied(StorageError):
    """The endpoint refused the credentials or the operation. Retrying will not help."""


class NoSuchBucket(StorageError):
    """The bucket does not exist. Retrying will not help."""


class StorageUnavailable(StorageError, Transient):
    """The endpoint is unreachable, timed out or answered 5xx: worth retrying later."""


class UnsafeKey(StorageError):
    """An object key that would land outside the local directory it is downloaded to."""
