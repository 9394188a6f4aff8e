"""Cancelling a request: a CloudEvent names it; its Job is marked, deleted, and the
requester is told ``cancelled``.

A cancel is a CloudEvent of type ``mstc.cloud.worker.job.cancel.v1`` (structured or
binary mode) on the work queue, or the same event over HTTP. It names the request by
``data.requestId``, or its Job by ``subject`` / ``data.jobName``; ``data.reason`` is
optional. ``RequestHandler.process`` recognises it, so every transport gets cancellation by
handing the message to the worker; a transport with its own way of asking (an HTTP
DELETE) builds a ``CancelRequest`` and calls ``RequestHandler.cancel``. ``KubernetesBackend.cancel``
does the cluster side.

Why mark before deleting: the handler following the Job learns of the deletion from the
watch and must tell "cancelled" from "deleted by someone else" (``failed: JobDeleted``).
The mark is an annotation, so it travels with the Job's final state in the deletion
event to every replica. A handler that finds the mark on a live Job (the canceller died
between mark and delete, or a redelivered request adopts a marked Job) deletes it and
replies ``cancelled`` itself.

Who replies: the canceller sends ``cancelled`` to the original requester (reply_to and
correlation id from the Job's annotations) and a ``cancel.result`` to the cancel's own
reply_to; the handler following the Job also replies ``cancelled``. Both ``cancelled``
replies have the same event id (it is derived from the request's identity), so the
requester drops the second as it would any at-least-once duplicate.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from handler.core.config import Settings
from handler.core.errors import Rejected
from handler.core.events import TYPE_PREFIX
from handler.core.manifest import ANNOTATION_CANCELLED, ANNOTATION_REQUEST_ID
from handler.core.outcome import Outcome, Status, parse_time
from handler.core.request import MAX_FIELD_CHARS, Message, check_headers, is_cloudevent, read_cloudevent

CANCEL_TYPE = f"{TYPE_PREFIX}cancel.v1"
RESULT_TYPE = f"{TYPE_PREFIX}cancel.result.v1"
REASON = "Cancelled"
DEFAULT_REASON = "cancelled on request"
MAX_REASON_CHARS = 256
#: A cancel is a few short fields: a bigger body is not looked into (it is then refused
#: as a request), so recognising cancels never parses a large body twice.
MAX_CANCEL_BYTES = 64 * 1024
#: A Job name as the handler makes them (``naming.job_name``): DNS-1123, at most 63.
_JOB_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
Json = dict[str, Any]


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


def is_cancel(message: Message) -> bool:
    """The message is a cancel event (cheap: the type must appear in the body or headers)."""
    if not is_cloudevent(message):
        return False
    for key, value in message.headers.items():
        if isinstance(key, str) and key.lower() == "ce-type":
            return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)) == CANCEL_TYPE
    if len(message.body) > MAX_CANCEL_BYTES or CANCEL_TYPE.encode() not in message.body:
        return False
    try:
        body = json.loads(message.body)
    except (ValueError, RecursionError):
        return False
    return isinstance(body, dict) and body.get("type") == CANCEL_TYPE


def parse_cancel(message: Message, settings: Settings) -> CancelRequest:
    """Validate a cancel event, or raise ``Rejected`` saying what is wrong."""
    check_headers(message)
    if len(message.body) > settings.max_body_bytes:
        raise Rejected("body", "BodyTooLarge",
                       f"{len(message.body)} bytes is over the limit of {settings.max_body_bytes}")
    event = read_cloudevent(message)
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise Rejected("data", "InvalidJson", f"not valid JSON: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise Rejected("data", "InvalidBody", f"must be a JSON object, got {type(data).__name__}")
    request_id = _optional_str(data, "requestId")
    job_name = _optional_str(data, "jobName") or event.get_subject() or None
    if job_name is not None and not _JOB_NAME.fullmatch(job_name):
        raise Rejected("jobName", "InvalidJobName", f"{job_name[:80]!r} is not the name of a Job of this handler")
    if request_id is None and job_name is None:
        raise Rejected("requestId", "MissingField",
                       "a cancel names the request (data.requestId) or its Job (subject or data.jobName)")
    reason = (_optional_str(data, "reason") or DEFAULT_REASON)[:MAX_REASON_CHARS]
    return CancelRequest(request_id=request_id, job_name=job_name, reason=reason, event_id=event.get_id(),
                         event_source=event.get_source(), reply_to=message.reply_to or None,
                         correlation_id=message.correlation_id or None)


def _optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
        raise Rejected(name, "InvalidField", f"{name} must be a string of at most {MAX_FIELD_CHARS} characters")
    return value


def mark(reason: str) -> dict[str, str]:
    """The annotations a cancel sets on the Job before deleting it."""
    return {ANNOTATION_CANCELLED: reason}


def cancelled_outcome(job: Mapping[str, Any] | None, now: datetime) -> Outcome | None:
    """``cancelled`` for a Job that carries the cancel mark (live or as deleted), else None."""
    if job is None:
        return None
    reason = (job["metadata"].get("annotations") or {}).get(ANNOTATION_CANCELLED)
    if reason is None:
        return None
    start = parse_time((job.get("status") or {}).get("startTime"))
    return Outcome(Status.CANCELLED, REASON, f"job {job['metadata']['name']} was cancelled: {reason}",
                   start_time=start, completion_time=now)


def result_event(target: CancelRequest, outcome: CancelOutcome, *, source: str, now: datetime) -> CloudEvent:
    """The answer to the cancel's own sender: what became of the Job it named."""
    job_name = outcome.job["metadata"]["name"] if outcome.job else target.job_name
    annotations = (outcome.job or {}).get("metadata", {}).get("annotations") or {}
    data = {
        "status": outcome.status.value,
        "requestId": target.request_id or annotations.get(ANNOTATION_REQUEST_ID),
        "jobName": job_name,
        "reason": target.reason,
        "message": outcome.message,
    }
    key = f"{target.event_source}\x00{target.event_id}\x00{outcome.status.value}"
    attrs: dict[str, Any] = {
        "type": RESULT_TYPE,
        "source": source,
        "id": hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32],
        "time": now,
        "datacontenttype": "application/json",
    }
    if job_name:
        attrs["subject"] = job_name
    return CloudEvent(attributes=attrs, data=data)
