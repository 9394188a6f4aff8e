"""The vocabulary the layers exchange: messages in, publications out, cancels.

Plain frozen dataclasses with no behaviour, so every layer (the pure core, the AMQP
adapter, the service) can speak them without importing one another.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: A Kubernetes object, a CloudEvent's data, a parsed JSON document.
Json = dict[str, Any]

#: ``mstc.cloud.worker.job.<kind>.v1`` is the type of every event this handler sends or takes.
TYPE_PREFIX = "mstc.cloud.worker.job."


def event_type(kind: str) -> str:
    """``succeeded`` → ``mstc.cloud.worker.job.succeeded.v1``."""
    return f"{TYPE_PREFIX}{kind}.v1"


#: A cancel request (see ``request.parse_cancel``) and the answer to its sender.
CANCEL_TYPE = event_type("cancel")
CANCEL_RESULT_TYPE = event_type("cancel.result")


@dataclass(frozen=True)
class Message:
    """A transport-neutral view of an incoming message (AMQP delivery or HTTP request)."""

    body: bytes
    content_type: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    #: The AMQP ``expiration`` the publisher set, in seconds: the broker drops the message if
    #: it sits in the queue that long, also after it was delivered once and went back.
    expiration_seconds: float | None = None
    #: When the message arrived (``time.monotonic``), for the receipt-to-Job-created metric.
    received_at: float = field(default_factory=time.monotonic, compare=False, repr=False)


@dataclass(frozen=True)
class Publication:
    """One message to publish: where, what, and with which correlation id."""

    exchange: str
    routing_key: str
    body: bytes
    content_type: str
    correlation_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    #: A reply whose requester may be gone (its reply_to queue deleted): an unroutable
    #: reply is logged, not retried. Dead-letter copies must be routable.
    may_be_unroutable: bool = False
    #: Set on a request republished for another attempt (it keeps its own identity).
    message_id: str | None = None
    reply_to: str | None = None
    #: The broker drops the message if no consumer took it within this many seconds.
    expiration_seconds: float | None = None


class CancelStatus(enum.StrEnum):
    CANCELLED = "cancelled"
    NOT_FOUND = "notFound"
    FINISHED = "finished"


@dataclass(frozen=True)
class CancelRequest:
    """What to cancel (a request id or a Job name), why, and where to confirm it."""

    request_id: str | None
    job_name: str | None
    reason: str
    event_id: str
    event_source: str
    reply_to: str | None = None
    correlation_id: str | None = None

    @property
    def target(self) -> str:
        return f"job {self.job_name}" if self.job_name else f"request {self.request_id}"


@dataclass(frozen=True)
class CancelOutcome:
    status: CancelStatus
    #: The Job as marked (cancelled) or as found (finished); None when there is none.
    job: Json | None
    message: str
