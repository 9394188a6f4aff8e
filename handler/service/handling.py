"""Handling one request, whatever transport it came on: parse, run the Job, build replies.

``RequestHandler.process`` returns the publications that finish the request (the terminal reply,
and for a rejected request a dead-letter copy); the transport sends them and only then
acknowledges the message. Lifecycle events go out through ``emit`` as they happen.

A request goes down the layers once: parsed by the core (``request``), run by a backend
(``backends``), answered with the core's events (``events``), and handed back to the
transport as ``Publication``s. Nothing here knows which transport or backend it has.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloudevents.core.v1.event import CloudEvent

from handler.core.config import Settings
from handler.core.errors import Interrupted, Rejected, Transient, WorkerError
from handler.core.events import (
    ACCEPTED,
    EncodedEvent,
    cancel_result_event,
    encode,
    lifecycle_event,
    rejected_event,
    reply_event,
)
from handler.core.manifest import cancelled_outcome, request_from_job
from handler.core.messages import CANCEL_TYPE, CancelRequest, CancelStatus, Message, Publication
from handler.core.outcome import Outcome, Status, utcnow
from handler.core.profiles import Profiles
from handler.core.request import (
    WorkRequest,
    is_cancel,
    parse_cancel,
    parse_request,
    profile_of,
    request_identity,
)
from handler.service import logs, tracing
from handler.service.backends import JobBackend
from handler.service.joblog import upload_job_log
from handler.service.metrics import Metrics
from handler.service.profiles import load_profiles

log = logging.getLogger(__name__)
#: How many times a request was tried before: set on the copies put back for a retry.
ATTEMPTS_HEADER = "x-cloud-worker-attempts"


def attempts_of(message: Message) -> int:
    """Attempts a message has had before this one (0 for a first delivery): the largest
    count under any spelling of the header, so a requester's own copy of it can only
    bring the last attempt closer, never put it off."""
    counts = [0]
    for key, value in message.headers.items():
        if isinstance(key, str) and key.lower() == ATTEMPTS_HEADER:
            try:
                counts.append(max(0, min(int(value), 1000)))
            except (TypeError, ValueError, OverflowError):
                continue  # not a count (a string, an infinite float): as if absent
    return max(counts)


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



class RequestHandler:
    def __init__(self, settings: Settings, backend: JobBackend, clock: Callable[[], datetime] = utcnow,
                 metrics: Metrics | None = None, profiles: Profiles | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.clock = clock
        self.metrics = metrics or Metrics()
        #: The Job profiles (``CLOUD_WORKER_PROFILES_FILE``, proven at start-up; else the built-in one).
        self.profiles = profiles if profiles is not None else load_profiles(settings)
        self.metrics.track_profiles(self.profiles.names)

    def process(
        self, message: Message, stop: threading.Event, emit: Callable[[Publication], None] | None = None
    ) -> Result:
        """Run one request to its end. Raises ``Interrupted`` if ``stop`` is set first."""
        try:
            if is_cancel(message):
                return self._cancel(message)
            request = parse_request(message, self.settings, self.profiles)
        except Rejected as error:
            return self._rejected(message, error)
        except Exception as exc:  # noqa: BLE001 - a bug of ours, before any Job exists: never requeue it
            log.exception("handling a request failed before its Job existed: rejecting it as InternalError")
            return self._rejected(message, Rejected("request", "InternalError",
                                                    f"the handler could not read this request ({type(exc).__name__}); "
                                                    "it was kept in the dead-letter queue if one is configured"))

        profile = self.profiles.label(request.profile.name)

        def progress(kind: str, detail: dict[str, Any]) -> None:
            if kind == ACCEPTED:
                self.metrics.dispatch.observe(time.monotonic() - message.received_at)
            if request.progress_events and emit is not None:
                event = lifecycle_event(kind, request, source=self.settings.event_source,
                                        namespace=self.backend.namespace, now=self.clock(), detail=detail)
                for pub in self._replies(encode(event), request.reply_to, request.correlation_id):
                    emit(pub)
        self.metrics.jobs_in_flight.labels(profile).inc()
        try:
            with tracing.job_span(request) as span:
                outcome = self.backend.run(request, stop, progress)
                tracing.record_status(span, outcome.status.value)
        except Interrupted:
            self.metrics.requests.labels("interrupted", profile).inc()
            raise
        except Transient:
            self.metrics.requests.labels("transient", profile).inc()
            raise
        except Exception:
            self.metrics.requests.labels("error", profile).inc()
            raise
        finally:
            self.metrics.jobs_in_flight.labels(profile).dec()
        self.metrics.finished(outcome, profile)
        log.info("request %s: job %s %s (%s)", request.request_id, request.job_name, outcome.status.value,
                 outcome.reason, extra=logs.context(request))
        event = reply_event(request, outcome, source=self.settings.event_source, namespace=self.backend.namespace,
                            now=self.clock(), log_upload=upload_job_log(request, outcome, self.backend, self.settings))
        pubs = self._replies(encode(event), request.reply_to, request.correlation_id)
        return Result(outcome.status.value, pubs, request=request, outcome=outcome, reply=event)

    def lane_of(self, message: Message) -> str | None:
        """Which lane a message's request belongs on: the name of its profile when that has
        a ``maxInFlight`` (a queue and lane of its own), else None (the work queue). A message
        it cannot read belongs anywhere: None, and ``process`` rejects it wherever it is."""
        try:
            return self.profiles.home(profile_of(message, self.settings, self.profiles))
        except Rejected:
            return None

    def forward_copy(self, message: Message, exchange: str, routing_key: str) -> Publication:
        """The message as it came, for the queue of its profile's lane. Unlike a retry copy it
        keeps its expiration (counted again from now): no Job exists for it yet, so an
        expiry there still only means that nobody took it in time."""
        return Publication(exchange, routing_key, message.body, message.content_type or "", message.correlation_id,
                           dict(message.headers), message_id=message.message_id, reply_to=message.reply_to,
                           expiration_seconds=message.expiration_seconds)

    def process_cancel(self, message: Message) -> Result:
        """A message of the cancel lane: a cancel event, answered at once; anything else is
        ``rejected`` (a request sent to the cancel queue is not run from there)."""
        if not is_cancel(message):
            return self._rejected(message, Rejected(
                "type", "NotACancel", f"the cancel queue takes cancel events ({CANCEL_TYPE}) only; send requests to "
                f"the work queue {self.settings.queue}"))
        return self._cancel(message)

    def replied(self, result: Result, release: bool = True) -> None:
        """The terminal reply of ``result`` is confirmed: record it on the Job, so a handler
        adopting the Job later knows (a backend without a durable record has no such step),
        and with ``release`` let the Job go; without it the Job is kept for a redelivery
        that may still come (the request's ack was not confirmed, or nobody holds it)."""
        if result.request is not None and result.outcome is not None:
            self.backend.mark_replied(result.request, result.status, release=release)

    def unanswered(self) -> list[Result]:
        """The replies to Jobs whose requests left the queue unanswered (``core.unanswered``),
        each Job claimed for this replica; publish them, then record them with
        ``replied(result, release=False)``."""
        results = []
        for request, outcome in self.backend.unanswered(self.settings.unanswered_after_seconds):
            log.warning("request %s: job %s %s %.0f s ago and nobody answered it: answering it from the Job",
                        request.request_id, request.job_name, outcome.status.value,
                        (self.clock() - outcome.completion_time).total_seconds() if outcome.completion_time else 0,
                        extra=logs.context(request))
            self.metrics.finished(outcome, self.profiles.label(request.profile.name))
            self.metrics.unanswered.inc()
            event = reply_event(request, outcome, source=self.settings.event_source, namespace=self.backend.namespace,
                                now=self.clock(), log_upload=upload_job_log(request, outcome, self.backend,
                                                                            self.settings))
            pubs = self._replies(encode(event), request.reply_to, request.correlation_id)
            results.append(Result(outcome.status.value, pubs, request=request, outcome=outcome, reply=event))
        return results

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
        if cancelled is not None and outcome.job is not None:
            original = request_from_job(outcome.job)
            event = reply_event(original, cancelled, source=self.settings.event_source,
                                namespace=self.backend.namespace, now=now)
            pubs += self._replies(encode(event), original.reply_to, original.correlation_id)
        answer = cancel_result_event(target, outcome, source=self.settings.event_source, now=now)
        pubs += self._replies(encode(answer), target.reply_to, target.correlation_id)
        return Result(f"cancel-{outcome.status.value}", pubs, reply=answer)

    def give_up(self, message: Message, error: BaseException, attempts: int) -> Result:
        """The ``failed`` result of a request whose attempts ran out: reply with the last
        error, keep a dead-letter copy."""
        try:
            request = parse_request(message, self.settings, self.profiles)
        except Exception:  # noqa: BLE001 - it parsed before; whatever it is now, it is rejected
            return self._rejected(message, Rejected("request", "InternalError", f"gave up: {error}"))
        now = self.clock()
        outcome = Outcome(Status.FAILED, "RetriesExhausted",
                          f"gave up after {attempts} attempt(s); the last failed with: {str(error)[:512]}",
                          completion_time=now)
        self.metrics.finished(outcome, self.profiles.label(request.profile.name))
        event = reply_event(request, outcome, source=self.settings.event_source, namespace=self.backend.namespace,
                            now=now)
        pubs = self._replies(encode(event), request.reply_to, request.correlation_id)
        pubs += self._dead_letter(message, {"x-failed-reason": "RetriesExhausted",
                                            "x-failed-message": str(error)[:1024], ATTEMPTS_HEADER: attempts})
        self._stop_job(request, f"gave up after {attempts} attempt(s)")
        return Result(outcome.status.value, pubs, request=request, outcome=outcome, reply=event)

    def _stop_job(self, request: WorkRequest, reason: str) -> None:
        """Best effort: the requester was told ``failed``, so its Job (if one was created)
        must not run on and write outputs nobody waits for. Its own Job only: a Job of the
        same name made for another request is never touched."""
        try:
            outcome = self.backend.stop(request, reason)
            log.info("request %s: %s", request.request_id, outcome.message, extra=logs.context(request))
        except WorkerError as exc:
            log.warning("request %s: could not stop its job %s: %s", request.request_id, request.job_name, exc,
                        extra=logs.context(request))

    def retry_copy(self, message: Message, exchange: str, routing_key: str, attempts: int) -> Publication:
        """The message as it came, to be published again for its next attempt."""
        headers = {str(k): v for k, v in message.headers.items() if str(k).lower() != ATTEMPTS_HEADER}
        headers[ATTEMPTS_HEADER] = attempts
        return Publication(exchange, routing_key, message.body, message.content_type or "", message.correlation_id,
                           headers, message_id=message.message_id, reply_to=message.reply_to)

    def reject(self, message: Message, error: Rejected) -> Result:
        """The ``rejected`` result for a message refused before parsing (an HTTP body over the limit)."""
        return self._rejected(message, error)

    def _rejected(self, message: Message, error: Rejected) -> Result:
        identity = request_identity(message)
        request_id = message.message_id or message.correlation_id or identity
        self.metrics.requests.labels("rejected", "").inc()
        self.metrics.rejected.labels(error.reason).inc()
        log.warning("request %s rejected: %s", request_id, error,
                    extra=logs.context(request_id=request_id, correlation_id=message.correlation_id))
        event = rejected_event(error, identity=identity, request_id=request_id,
                               source=self.settings.event_source, now=self.clock())
        pubs = self._replies(encode(event), message.reply_to, message.correlation_id)
        pubs += self._dead_letter(message, {"x-rejected-field": error.field, "x-rejected-reason": error.reason,
                                            "x-rejected-message": error.message[:1024]},
                                  keep_headers=error.field != "headers")
        return Result("rejected", pubs, rejection=error, reply=event)

    def _dead_letter(self, message: Message, why: dict[str, Any], keep_headers: bool = True) -> list[Publication]:
        """A copy of ``message`` for the dead-letter queue (if one is configured), saying why.
        A header flood is not copied: with ours added it might not fit one AMQP frame."""
        if not self.settings.dead_letter_queue:
            return []
        headers = {str(k): v for k, v in message.headers.items()} if keep_headers else {}
        headers.update(why)
        if message.reply_to:
            headers["x-original-reply-to"] = message.reply_to
        return [Publication("", self.settings.dead_letter_queue, message.body, message.content_type or "",
                            message.correlation_id, headers)]

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
