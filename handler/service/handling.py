"""Handling one request, whatever transport it came on: parse, run the Job, build replies.

``RequestHandler.process`` returns the publications that finish the request (the terminal reply,
and for a rejected request a dead-letter copy); the transport sends them and only then
acknowledges the message. Lifecycle events go out through ``emit`` as they happen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.v1.event import CloudEvent


from handler.service import logs, tracing
from handler.service.backends import JobBackend
from handler.core.config import Settings
from handler.core.errors import Interrupted, Rejected, Transient
from handler.core.events import (
    ACCEPTED,
    EncodedEvent,
    cancel_result_event,
    encode,
    lifecycle_event,
    rejected_event,
    reply_event,
)
from handler.service.metrics import Metrics
from handler.core.outcome import Outcome
from handler.core.manifest import cancelled_outcome, request_from_job
from handler.core.messages import CancelRequest, CancelStatus, Message, Publication
from handler.core.request import WorkRequest, is_cancel, parse_cancel, parse_request, request_identity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """How a request ended, and what to publish before acknowledging it."""

    status: str
    publications: list[Publication]
    request: WorkRequest | None = None
    outcome: Outcome | None = None
    rejection: Rejected | None = None
    #: The terminal reply itself, for transports that answer in kind (HTTP).
    reply: CloudEvent | None = None


def _now() -> datetime:
    return datetime.now(UTC)


class RequestHandler:
    def __init__(self, settings: Settings, backend: JobBackend, clock: Callable[[], datetime] = _now,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.clock = clock
        self.metrics = metrics or Metrics()

    def process(
        self, message: Message, stop: threading.Event, emit: Callable[[Publication], None] | None = None
    ) -> Result:
        """Run one request to its end. Raises ``Interrupted`` if ``stop`` is set first."""
        if is_cancel(message):
            return self._cancel(message)
        try:
            request = parse_request(message, self.settings)
        except Rejected as error:
            return self._rejected(message, error)

        def progress(kind: str, detail: dict[str, Any]) -> None:
            if kind == ACCEPTED:
                self.metrics.dispatch.observe(time.monotonic() - message.received_at)
            if request.progress_events and emit is not None:
                event = lifecycle_event(kind, request, source=self.settings.event_source,
                                        namespace=self.backend.namespace, now=self.clock(), detail=detail)
                for pub in self._replies(encode(event), request.reply_to, request.correlation_id):
                    emit(pub)
        self.metrics.jobs_in_flight.inc()
        try:
            with tracing.job_span(request) as span:
                outcome = self.backend.run(request, stop, progress)
                tracing.record_status(span, outcome.status.value)
        except Interrupted:
            self.metrics.requests.labels("interrupted").inc()
            raise
        except Transient:
            self.metrics.requests.labels("transient").inc()
            raise
        except Exception:
            self.metrics.requests.labels("error").inc()
            raise
        finally:
            self.metrics.jobs_in_flight.dec()
        self.metrics.finished(outcome)
        log.info("request %s: job %s %s (%s)", request.request_id, request.job_name, outcome.status.value,
                 outcome.reason, extra=logs.context(request))
        event = reply_event(request, outcome, source=self.settings.event_source,
                            namespace=self.backend.namespace, now=self.clock())
        pubs = self._replies(encode(event), request.reply_to, request.correlation_id)
        return Result(outcome.status.value, pubs, request=request, outcome=outcome, reply=event)

    def replied(self, result: Result) -> None:
        """The terminal reply of ``result`` is confirmed: record it on the Job, so a handler
        adopting the Job later knows (a backend without a durable record has no such step)."""
        if result.request is not None and result.outcome is not None:
            self.backend.mark_replied(result.request, result.status)

    def _cancel(self, message: Message) -> Result:
        """A cancel event: cancel the Job it names, tell the Job's requester ``cancelled``
        and the cancel's sender what became of it (see ``RequestHandler.cancel`` and the README's "Cancel")."""
        try:
            target = parse_cancel(message, self.settings)
            return self.cancel(target)
        except Rejected as error:
            return self._rejected(message, error)

    def cancel(self, target: CancelRequest) -> Result:
        """Cancel the Job ``target`` names (for any transport: an HTTP DELETE builds the
        ``CancelRequest`` itself). The publications are the ``cancelled`` reply to the
        Job's requester and the answer to ``target.reply_to``; ``reply`` is that answer.
        Raises ``Transient`` to retry."""
        outcome = self.backend.cancel(target)
        now = self.clock()
        log.info("cancel of %s: %s (%s)", target.target, outcome.status.value, outcome.message)
        pubs: list[Publication] = []
        cancelled = None
        if outcome.status is CancelStatus.CANCELLED:
            cancelled = cancelled_outcome(outcome.job, now)
        if cancelled is not None:
            original = request_from_job(outcome.job)
            event = reply_event(original, cancelled, source=self.settings.event_source,
                                namespace=self.backend.namespace, now=now)
            pubs += self._replies(encode(event), original.reply_to, original.correlation_id)
        answer = cancel_result_event(target, outcome, source=self.settings.event_source, now=now)
        pubs += self._replies(encode(answer), target.reply_to, target.correlation_id)
        return Result(f"cancel-{outcome.status.value}", pubs, reply=answer)

    def reject(self, message: Message, error: Rejected) -> Result:
        """The ``rejected`` result for a message refused before parsing (an HTTP body over the limit)."""
        return self._rejected(message, error)

    def _rejected(self, message: Message, error: Rejected) -> Result:
        identity = request_identity(message)
        request_id = message.message_id or message.correlation_id or identity
        self.metrics.requests.labels("rejected").inc()
        self.metrics.rejected.labels(error.reason).inc()
        log.warning("request %s rejected: %s", request_id, error,
                    extra=logs.context(request_id=request_id, correlation_id=message.correlation_id))
        event = rejected_event(error, identity=identity, request_id=request_id,
                               source=self.settings.event_source, now=self.clock())
        pubs = self._replies(encode(event), message.reply_to, message.correlation_id)
        if self.settings.dead_letter_queue:
            # A header flood is not copied: with ours added it might not fit one AMQP frame.
            flood = error.field == "headers"
            headers = {} if flood else {str(k): v for k, v in message.headers.items()}
            headers.update({"x-rejected-field": error.field, "x-rejected-reason": error.reason,
                            "x-rejected-message": error.message[:1024]})
            if message.reply_to:
                headers["x-original-reply-to"] = message.reply_to
            pubs.append(Publication("", self.settings.dead_letter_queue, message.body,
                                    message.content_type or "", message.correlation_id, headers))
        return Result("rejected", pubs, rejection=error, reply=event)

    def _replies(self, event: EncodedEvent, reply_to: str | None, correlation_id: str | None) -> list[Publication]:
        if reply_to:
            return [Publication("", reply_to, event.body, event.content_type, correlation_id, event.headers,
                                may_be_unroutable=True)]
        if self.settings.reply_routing_key:
            return [Publication(self.settings.reply_exchange, self.settings.reply_routing_key, event.body,
                                event.content_type, correlation_id, event.headers, may_be_unroutable=True)]
        # Normal over HTTP (the reply is the response); worth a look on the queue.
        log.debug("no reply_to and no reply routing key configured: reply not published")
        return []
