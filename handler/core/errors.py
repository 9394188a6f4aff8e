"""One exception root, split by what the caller must do next.

- ``Rejected``: the request itself is wrong. Reply ``rejected``, ack, never retry.
- ``JobFailedToStart``: the cluster refused the Job for a reason a retry cannot fix
  (403 from RBAC, 422 invalid). Reply ``failed`` with the API server's message, ack.
- ``Transient``: the API server or broker is unwell. Retry with backoff, or leave the
  message unacked so the broker redelivers it.
- ``Interrupted``: the process is shutting down or lost its broker connection; the
  request is left unacked on purpose and will be adopted by the next delivery.
- ``ConfigError``: the process cannot run as configured; exit with a distinct code.
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


class JobExists(WorkerError):
    """Creating the Job answered 409: this request was delivered before."""


class ResourceGone(Transient):
    """A watch's resourceVersion is too old (410 Gone): re-list, then watch again."""


class Interrupted(WorkerError):
    """Work abandoned on purpose (shutdown, lost channel); the message stays unacked."""


class BrokerError(Transient):
    """The broker connection or channel failed."""


class ReplyUndeliverable(WorkerError):
    """The broker returned or refused the reply (its reply_to queue does not exist)."""
