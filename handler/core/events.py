"""Reply and lifecycle CloudEvents: pure builders over plain data, and their encoding.

Replies are structured-mode JSON CloudEvents, so the seed's clients, which read the
reply with ``json.loads(body)``, keep working and newer ones get typed events. The
original's client reads ``json.loads(body)["result"]`` and takes its second word as the
Job's name; a terminal reply therefore carries ``result`` as a top-level extension
attribute ("Job <job name> succeeded."), besides the longer ``data.result``. The
event ``id`` is derived from the request and the event type (for a rejection, also from
what it says): a reply sent twice (after a crash between publish and ack) has the same
id, and consumers can deduplicate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloudevents.core.bindings import rabbitmq
from cloudevents.core.v1.event import CloudEvent

from handler.core.errors import Rejected
from handler.core.manifest import ANNOTATION_REQUEST_ID
from handler.core.messages import CANCEL_RESULT_TYPE, CancelOutcome, CancelRequest, event_type
from handler.core.outcome import Outcome, Status
from handler.core.request import WorkRequest

ACCEPTED = "accepted"
STARTED = "started"
#: The extension attribute the original's client reads (CloudEvents extension names are
#: lowercase letters and digits; this one is both the client's key and a valid name).
RESULT_ATTRIBUTE = "result"


@dataclass(frozen=True)
class LogUpload:
    """What became of the Job's log object in the output bucket (``service.joblog``)."""

    key: str
    url: str
    #: None: uploaded; else why not (the reply goes out all the same).
    error: str | None = None
    size: int = 0
    truncated: bool = False


@dataclass(frozen=True)
class EncodedEvent:
    body: bytes
    content_type: str
    headers: dict[str, str]


def _event_id(*parts: str) -> str:
    """A deterministic event id: the same parts (request identity, kind) give the same id."""
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _request_fields(request: WorkRequest, namespace: str) -> dict[str, Any]:
    fields = {
        "requestId": request.request_id,
        "jobName": request.job_name,
        "requestJobName": request.client_job_name,
        "namespace": namespace,
        "image": request.image,
        "timeOut": request.timeout_minutes,
        "inputBucketUrl": request.input_bucket_url,
        "outputBucketUrl": request.output_bucket_url,
    }
    if request.profile.configured:  # a handler with a profiles file: which one ran the Job
        fields["profile"] = request.profile.name
    return fields


def _attributes(kind: str, identity: str, source: str, subject: str | None, now: datetime,
                request: WorkRequest | None, type_: str | None = None) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "type": type_ or event_type(kind),
        "source": source,
        "id": _event_id(identity, kind),
        "time": now,
        "datacontenttype": "application/json",
    }
    if subject:
        attrs["subject"] = subject
    if request is not None and request.traceparent:
        attrs["traceparent"] = request.traceparent
        if request.tracestate:
            attrs["tracestate"] = request.tracestate
    return attrs


def result_text(status: Status, job_name: str, outcome_message: str, duration: float | None) -> str:
    """The seed-style one-line ``result`` string."""
    took = f" in {duration:.1f} s" if duration is not None else ""
    return f"Job {job_name} {status.value}{took}: {outcome_message}"


def reply_event(request: WorkRequest, outcome: Outcome, *, source: str, namespace: str, now: datetime,
                log_upload: LogUpload | None = None) -> CloudEvent:
    """The terminal reply for a request whose Job ran (or could not); with ``log_upload``,
    where its log went (``logObject``, ``logObjectUrl``) or why it did not (``logUploadError``)."""
    data = _request_fields(request, namespace)
    data.update(
        status=outcome.status.value,
        reason=outcome.reason,
        podReason=outcome.pod_reason,
        message=outcome.message,
        exitCode=outcome.exit_code,
        podName=outcome.pod_name,
        startTime=_iso(outcome.start_time),
        completionTime=_iso(outcome.completion_time),
        durationSeconds=outcome.duration_seconds,
        logTail=outcome.log_tail,
        result=result_text(outcome.status, request.job_name, outcome.message, outcome.duration_seconds),
    )
    if request.file_prefix is not None:
        data["prefix"] = request.file_prefix
    if log_upload is not None:
        if log_upload.error is None:
            data.update(logObject=log_upload.key, logObjectUrl=log_upload.url, logObjectBytes=log_upload.size,
                        logTruncated=log_upload.truncated)
        else:
            data.update(logUploadError=log_upload.error)
    attrs = _attributes(outcome.status.value, request.identity, source, request.job_name, now, request)
    attrs[RESULT_ATTRIBUTE] = f"Job {request.job_name} {outcome.status.value}."
    return CloudEvent(attributes=attrs, data=data)


def rejected_event(error: Rejected, *, identity: str, request_id: str, source: str, now: datetime) -> CloudEvent:
    """The reply to a request that cannot run; says exactly which field is wrong."""
    data = {
        "requestId": request_id,
        "status": Status.REJECTED.value,
        "reason": error.reason,
        "field": error.field,
        "message": error.message,
        "result": f"Request rejected: {error.field}: {error.message}",
    }
    attrs = _attributes(Status.REJECTED.value, identity, source, None, now, None)
    # The answer is part of the id: two different rejections are two events (a client drops
    # duplicates by id), and the same rejection of the same request keeps its id.
    attrs["id"] = _event_id(identity, Status.REJECTED.value, error.field, error.reason, error.message)
    attrs[RESULT_ATTRIBUTE] = data["result"]  # so the original's client reads it, not a KeyError
    return CloudEvent(attributes=attrs, data=data)


def lifecycle_event(kind: str, request: WorkRequest, *, source: str, namespace: str, now: datetime,
                    detail: dict[str, Any] | None = None) -> CloudEvent:
    """A non-terminal event (``accepted`` when the Job exists, ``started`` when its pod runs)."""
    data = _request_fields(request, namespace)
    data.update(status=kind, **(detail or {}))
    return CloudEvent(attributes=_attributes(kind, request.identity, source, request.job_name, now, request), data=data)


def cancel_result_event(target: CancelRequest, outcome: CancelOutcome, *, source: str, now: datetime) -> CloudEvent:
    """The answer to a cancel's own sender: what became of the Job it named."""
    job_name = outcome.job["metadata"]["name"] if outcome.job else target.job_name
    annotations = (outcome.job or {}).get("metadata", {}).get("annotations") or {}
    data = {
        "status": outcome.status.value,
        "requestId": target.request_id or annotations.get(ANNOTATION_REQUEST_ID),
        "jobName": job_name,
        "reason": target.reason,
        "message": outcome.message,
    }
    identity = f"{target.event_source}\x00{target.event_id}"
    attrs = _attributes(outcome.status.value, identity, source, job_name, now, None, type_=CANCEL_RESULT_TYPE)
    return CloudEvent(attributes=attrs, data=data)


def encode(event: CloudEvent) -> EncodedEvent:
    """Structured-mode JSON, the body a plain ``json.loads`` reads."""
    message = rabbitmq.to_structured_event(event)
    return EncodedEvent(body=message.body, content_type=message.content_type or "", headers=dict(message.headers))
