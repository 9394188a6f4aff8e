"""The consume loop: deliveries in, requests handled on worker threads, replies and acks out.

The loop's thread owns the consuming connection (``amqp.Broker``); each delivery runs
on a worker thread (``concurrency`` of them, the prefetch count too), which publishes
its replies (confirmed, on the broker's publishing connection) and then settles the
delivery. Shutdown follows arq's wait-for-completion: on SIGTERM stop taking messages,
give in-flight work a grace, leave the rest unacked for redelivery (the next handler
adopts the still-running Job), close channel then connection. A second signal exits at
once. A lost connection abandons in-flight work the same way and reconnects.

What happens when something fails (the README's "When things fail" table):

- A reply the broker refuses (nack, or a publish that costs the connection) is tried
  ``REPLY_ATTEMPTS`` times with a delay, then dropped with a log line and
  ``cloud_worker_replies_dropped_total``; a reply to a queue that no longer exists is
  dropped at once. Either way the delivery is settled: a reply never holds it.
- A transient failure (API server, S3), or an unexpected error once the Job may exist,
  puts the request back as a republished copy after a growing delay, counting attempts
  in its ``x-cloud-worker-attempts`` header (classic queues only say "redelivered");
  after ``max_attempts`` the requester gets ``failed`` and the dead-letter queue a copy.
  Never a requeue at once, so never a hot loop.
- An unexpected error before any Job exists is the handler's bug: ``RequestHandler``
  answers ``rejected`` (``InternalError``) with a dead-letter copy.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from handler.adapters.amqp import Broker, Delivery, Settle, longest_delivery_seconds
from handler.core.config import Settings
from handler.core.errors import BrokerError, Interrupted, ReplyRefused, ReplyUndeliverable, Transient
from handler.core.exitcodes import ExitCode
from handler.core.messages import Publication
from handler.core.retry import Backoff
from handler.service.handling import RequestHandler, Result, attempts_of
from handler.service.health import Heartbeat
from handler.service.metrics import Metrics

log = logging.getLogger(__name__)

#: How often the loop looks at its stop flag and stamps its heartbeat, in seconds. Short,
#: because it is how long SIGTERM takes to stop an idle loop; an idle tick costs ~50 µs.
TICK = 0.1
#: Tries of one reply the broker refuses, and the delay before the second (doubled after).
REPLY_ATTEMPTS = 3
REPLY_RETRY_DELAY = 0.5
#: Pause before a delivery whose reply could not be published goes back to the queue.
REQUEUE_DELAY = 5.0
#: Longest delay before a request's next attempt, in seconds.
MAX_RETRY_DELAY = 60.0
#: Connection attempts at start-up before giving up with ExitCode.BROKER_UNREACHABLE.
STARTUP_ATTEMPTS = 6


class _PublishingFailed(Exception):
    """The publishing connection failed every attempt (not a refusal of the message)."""


@dataclass
class _InFlight:
    delivery: Delivery
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass
class Stats:
    received: int = 0
    succeeded: int = 0
    failed: int = 0
    rejected: int = 0
    requeued: int = 0
    abandoned: int = 0
    reconnects: int = 0
    cancels: int = 0
    replies_dropped: int = 0

    def count(self, status: str) -> None:
        attr = {"succeeded": "succeeded", "rejected": "rejected"}.get(status, "failed")
        if status.startswith("cancel-"):  # a cancel event handled (RequestHandler._cancel)
            attr = "cancels"
        setattr(self, attr, getattr(self, attr) + 1)


class Consumer:
    def __init__(self, settings: Settings, handler: RequestHandler, broker: Broker, heartbeat: Heartbeat | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.handler = handler
        self.broker = broker
        self.heartbeat = heartbeat or Heartbeat()
        self.metrics = metrics or handler.metrics
        self.stats = Stats()
        self._stopping = threading.Event()
        self._signals = 0
        self._lock = threading.Lock()
        self._inflight: dict[int, _InFlight] = {}
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="job")
        self._taken = 0
        self._last_work = time.monotonic()

    # --- control
    def stop(self) -> None:
        """Stop taking messages; in-flight work gets the shutdown grace."""
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: object) -> None:
            self._signals += 1
            if self._signals > 1:
                log.warning("second signal: exiting now, in-flight requests stay unacked")
                os._exit(ExitCode.INTERRUPTED)
            log.info("signal %s: finishing in-flight work (grace %.0f s)", signum, self.settings.shutdown_grace_seconds)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def run(self) -> int:
        s = self.settings
        log.info("consumer starting: queue=%s concurrency=%d once=%s", s.queue, s.concurrency, s.once)
        backoff = Backoff(base=0.5, cap=s.reconnect_max_seconds, attempts=1)
        attempt, connected_once = 0, False
        try:
            while not self._finished():
                try:
                    self.broker.connect()
                    if not connected_once:
                        self._check_consumer_timeout()
                    connected_once, attempt = True, 0
                    self._consume()
                except BrokerError as exc:
                    self._abandon_all()
                    self.broker.close()
                    if self._finished():
                        break
                    attempt += 1
                    if not connected_once and attempt >= STARTUP_ATTEMPTS:
                        log.error("broker unreachable after %d attempts: %s", attempt, exc)
                        return ExitCode.BROKER_UNREACHABLE
                    self.stats.reconnects += connected_once
                    if connected_once:
                        self.metrics.broker_reconnects.inc()
                    delay = backoff.delay(min(attempt, 8))
                    if connected_once:
                        log.warning("broker connection lost (%s); reconnecting in %.1f s", exc, delay)
                    else:
                        log.warning("cannot reach the broker (%s); attempt %d of %d, next in %.1f s", exc, attempt,
                                    STARTUP_ATTEMPTS, delay)
                    self._stopping.wait(delay)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self.broker.close()
            self.broker.close_publisher()
            log.info("consumer stopped: %s", self.stats)
        return ExitCode.OK

    def _check_consumer_timeout(self) -> None:
        """On a broker that ignores ``x-consumer-timeout``, say so when the longest Job a
        request may ask for does not fit in the broker's ``consumer_timeout``."""
        s = self.settings
        longest = longest_delivery_seconds(s)
        if not self.broker.honours_consumer_timeout and longest > s.broker_consumer_timeout_minutes * 60:
            log.warning(
                "a request may keep its delivery unacked for %.0f min (CLOUD_WORKER_MAX_TIMEOUT_MINUTES=%g plus "
                "slack) but this RabbitMQ (%s) takes deliveries back after its consumer_timeout of %g min "
                "(CLOUD_WORKER_BROKER_CONSUMER_TIMEOUT_MINUTES): raise consumer_timeout on the broker, or lower "
                "the maximum timeout", longest / 60, s.max_timeout_minutes, self.broker.server_version or "?",
                s.broker_consumer_timeout_minutes)

    def _finished(self) -> bool:
        return self._stopping.is_set() or (self.settings.once and self._taken > 0 and self.inflight == 0)

    # --- the loop, on the connection's thread
    def _consume(self) -> None:
        for delivery in self.broker.deliveries(inactivity_timeout=TICK):
            self.heartbeat.beat()
            if delivery is not None:
                self._start(delivery)
                if self.settings.once:
                    break
            if self._stopping.is_set() or self._idle_expired():
                self._stopping.set()
                break
        else:  # the broker cancelled the consumer (queue deleted, a node of a cluster lost)
            raise BrokerError(f"the broker cancelled the consumer of {self.settings.queue}")
        self.broker.stop_consuming()
        self._drain()
        self.broker.close()

    def _idle_expired(self) -> bool:
        limit = self.settings.idle_exit_seconds
        if limit <= 0 or self.inflight:
            return False
        if time.monotonic() - self._last_work >= limit:
            log.info("idle for %.0f s: exiting", limit)
            return True
        return False

    def _drain(self) -> None:
        """Keep the connection's I/O going until in-flight work settles or the grace ends."""
        grace_ends = None
        while self.inflight:
            if self._stopping.is_set() and grace_ends is None:
                grace_ends = time.monotonic() + self.settings.shutdown_grace_seconds
            if grace_ends is not None and time.monotonic() >= grace_ends:
                log.warning("grace over: leaving %d request(s) unacked for redelivery", self.inflight)
                self._abandon_all()
                deadline = time.monotonic() + 5
                while self.inflight and time.monotonic() < deadline:
                    self.broker.pump(0.1)
                return
            self.broker.pump(TICK)
            self.heartbeat.beat()

    def _start(self, delivery: Delivery) -> None:
        item = _InFlight(delivery)
        with self._lock:
            self._inflight[id(item)] = item
        if not self._taken:  # the benchmarks time cold start (process start → here) by this line
            log.info("first delivery received")
        self._taken += 1
        self.stats.received += 1
        self._pool.submit(self._handle, item)

    def _abandon_all(self) -> None:
        with self._lock:
            items = list(self._inflight.values())
        for item in items:
            item.stop.set()
        if items:
            self.stats.abandoned += len(items)
            self.handler.backend.wake()

    # --- on worker threads
    def _handle(self, item: _InFlight) -> None:
        delivery = item.delivery
        try:
            result: Result | None
            try:
                result = self.handler.process(delivery.message, item.stop, emit=self._emit)
            except Interrupted:
                log.info("delivery %s left unacked: the broker redelivers it and the Job is adopted",
                         delivery.delivery_tag)
                return
            except Exception as exc:  # noqa: BLE001 - transient trouble, or a bug once the Job may exist
                result = self._retry_or_give_up(item, exc)
                if result is None:
                    return
            try:
                self._finish(delivery, result)
            except _PublishingFailed as exc:
                self._requeue_later(item, exc)
        except BrokerError as exc:
            log.warning("could not settle delivery %s (%s): the broker redelivers it", delivery.delivery_tag, exc)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: never leave the delivery unsettled
            log.exception("unexpected error settling delivery %s", delivery.delivery_tag)
            self._requeue_later(item, exc)
        finally:
            with self._lock:
                self._inflight.pop(id(item), None)
            self._last_work = time.monotonic()
            if self.settings.once or self._stopping.is_set():
                self.broker.wake()

    def _finish(self, delivery: Delivery, result: Result) -> None:
        """Publish what finishes the request, then ack it; record the reply on the Job
        only once the ack is in (a Job released earlier might be gone before a
        redelivery could adopt it)."""
        for pub in result.publications:
            self._publish(pub)  # confirmed, or given up for good (the requester gone, the broker refusing)
        self.broker.settle(delivery, Settle.ACK)
        self.handler.replied(result)
        self.metrics.replied(result.outcome)
        self.stats.count(result.status)

    def _emit(self, pub: Publication) -> None:
        """A lifecycle event: one try; losing one is not worth holding the request."""
        try:
            self.broker.publish(pub)
        except (BrokerError, ReplyUndeliverable) as exc:
            log.info("lifecycle event to %s not delivered: %s", pub.routing_key, exc)

    def _publish(self, pub: Publication) -> None:
        """Publish with confirms. A reply the broker refuses (a nack, or the connection
        closed in answer to it) is retried, then dropped: retrying longer would not change
        the broker's mind, and it must not hold the delivery. A publishing connection in
        trouble (blocked, lost) raises ``_PublishingFailed`` after the same attempts: the
        request is put back, and its redelivery adopts the Job and replies again."""
        delay = REPLY_RETRY_DELAY
        for attempt in range(1, REPLY_ATTEMPTS + 1):
            try:
                self.broker.publish(pub)
                return
            except ReplyUndeliverable as exc:
                if not pub.may_be_unroutable:  # a dead-letter copy: its queue must exist, or nothing is kept
                    raise _PublishingFailed(f"no queue {pub.routing_key!r} to keep the copy in: {exc}") from exc
                log.warning("reply to %s dropped: %s (the requester is gone)", pub.routing_key, exc)
                self.metrics.replies_dropped.labels("unroutable").inc()
                self.stats.replies_dropped += 1
                return
            except BrokerError as exc:  # ReplyRefused too
                if attempt == REPLY_ATTEMPTS:
                    if not isinstance(exc, ReplyRefused):
                        raise _PublishingFailed(f"publishing to {pub.routing_key}: {exc}") from exc
                    log.error("reply to %s dropped after %d attempts (%s); the request is settled anyway",
                              pub.routing_key, attempt, exc)
                    self.metrics.replies_dropped.labels("refused").inc()
                    self.stats.replies_dropped += 1
                    return
                log.warning("reply to %s not confirmed (%s); trying again in %.1f s", pub.routing_key, exc, delay)
                time.sleep(delay)
                delay *= 2

    def _requeue_later(self, item: _InFlight, error: BaseException) -> None:
        """Give the delivery back to the broker after a pause (never at once: no hot loop);
        its redelivery finds the Job by name and replies."""
        delivery = item.delivery
        log.warning("delivery %s not finished (%s): requeueing it in %.0f s", delivery.delivery_tag, error,
                    REQUEUE_DELAY)
        if item.stop.wait(REQUEUE_DELAY):
            return  # shutting down: left unacked, the broker redelivers it
        try:
            self.broker.settle(delivery, Settle.REQUEUE)
            self.stats.requeued += 1
        except BrokerError as exc:
            log.info("delivery %s is back with the broker anyway: %s", delivery.delivery_tag, exc)

    def _retry_or_give_up(self, item: _InFlight, error: Exception) -> Result | None:
        """Put the request back for a later attempt (None), or, after the last one, the
        ``failed`` result that ends it."""
        delivery = item.delivery
        attempt = attempts_of(delivery.message) + 1
        if attempt >= self.settings.max_attempts:
            log.error("delivery %s failed on attempt %d of %d (%s): giving up", delivery.delivery_tag, attempt,
                      self.settings.max_attempts, error, exc_info=not isinstance(error, Transient))
            return self.handler.give_up(delivery.message, error, attempt)
        delay = min(self.settings.retry_delay_seconds * 2 ** (attempt - 1), MAX_RETRY_DELAY)
        log.warning("delivery %s failed on attempt %d of %d (%s); trying again in %.1f s", delivery.delivery_tag,
                    attempt, self.settings.max_attempts, error, delay, exc_info=not isinstance(error, Transient))
        if item.stop.wait(delay):
            return None  # shutting down: left unacked, the broker redelivers it
        copy = self.handler.retry_copy(delivery.message, self.settings.exchange, self.settings.queue, attempt)
        try:
            self.broker.publish(copy)
        except (BrokerError, ReplyUndeliverable) as exc:
            log.warning("could not put delivery %s back (%s): requeueing it", delivery.delivery_tag, exc)
            self.broker.settle(delivery, Settle.REQUEUE)
        else:
            self.broker.settle(delivery, Settle.ACK)
        self.stats.requeued += 1
        self.metrics.retries.inc()
        return None
