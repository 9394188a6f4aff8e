"""Handling one request, whatever transport it came on: parse, run the Job, build replies.

``Worker.process`` returns the publications that finish the request (the terminal reply,
and for a rejected request a dead-letter copy); the transport sends them and only then
acknowledges the message. Lifecycle events go out through ``emit`` as they happen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from handler.backends import JobBackend
from handler.config import Settings
from handler.errors import Rejected
from handler.events import EncodedEvent, encode, lifecycle_event, rejected_event, reply_event
from handler.outcome import Outcome
from handler.request import Message, WorkRequest, parse_request, request_identity

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Result:
    """How a request ended, and what to publish before acknowledging it."""

    status: str
    publications: list[Publication]
    request: WorkRequest | None = None
    outcome: Outcome | None = None
    rejection: Rejected | None = None


def _now() -> datetime:
    return datetime.now(UTC)


class Worker:
    def __init__(self, settings: Settings, backend: JobBackend, clock: Callable[[], datetime] = _now) -> None:
        self.settings = settings
        self.backend = backend
        self.clock = clock

    def process(
        self, message: Message, stop: threading.Event, emit: Callable[[Publication], None] | None = None
    ) -> Result:
        """Run one request to its end. Raises ``Interrupted`` if ``stop`` is set first."""
        try:
            request = parse_request(message, self.settings)
        except Rejected as error:
            return self._rejected(message, error)
        progress = None
        if request.progress_events and emit is not None:
            def progress(kind: str, detail: dict[str, Any]) -> None:
                event = lifecycle_event(kind, request, source=self.settings.event_source,
                                        namespace=self.backend.namespace, now=self.clock(), detail=detail)
                for pub in self._replies(encode(event), request.reply_to, request.correlation_id):
                    emit(pub)
        outcome = self.backend.run(request, stop, progress)
        log.info("request %s: job %s %s (%s)", request.request_id, request.job_name, outcome.status.value,
                 outcome.reason)
        event = reply_event(request, outcome, source=self.settings.event_source,
                            namespace=self.backend.namespace, now=self.clock())
        pubs = self._replies(encode(event), request.reply_to, request.correlation_id)
        return Result(outcome.status.value, pubs, request=request, outcome=outcome)

    def _rejected(self, message: Message, error: Rejected) -> Result:
        identity = request_identity(message)
        request_id = message.message_id or message.correlation_id or identity
        log.warning("request %s rejected: %s", request_id, error)
        event = rejected_event(error, identity=identity, request_id=request_id,
                               source=self.settings.event_source, now=self.clock())
        pubs = self._replies(encode(event), message.reply_to, message.correlation_id)
        if self.settings.dead_letter_queue:
            headers = {str(k): v for k, v in message.headers.items()}
            headers.update({"x-rejected-field": error.field, "x-rejected-reason": error.reason,
                            "x-rejected-message": error.message[:1024]})
            if message.reply_to:
                headers["x-original-reply-to"] = message.reply_to
            pubs.append(Publication("", self.settings.dead_letter_queue, message.body,
                                    message.content_type or "", message.correlation_id, headers))
        return Result("rejected", pubs, rejection=error)

    def _replies(self, event: EncodedEvent, reply_to: str | None, correlation_id: str | None) -> list[Publication]:
        if reply_to:
            return [Publication("", reply_to, event.body, event.content_type, correlation_id, event.headers,
                                may_be_unroutable=True)]
        if self.settings.reply_routing_key:
            return [Publication(self.settings.reply_exchange, self.settings.reply_routing_key, event.body,
                                event.content_type, correlation_id, event.headers, may_be_unroutable=True)]
        log.info("no reply_to and no reply routing key configured: reply not sent")
        return []
