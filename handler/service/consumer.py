"""The consume loop: deliveries in, requests handled on worker threads, replies and acks out.

The loop's thread owns the consuming connection (``amqp.Broker``); each delivery runs
on a worker thread (``concurrency`` of them, the prefetch count too), which publishes
its replies (confirmed, on the broker's publishing connection) and then settles the
delivery, once: a delivery settled is never settled again, and after its ack anything
that goes wrong is only logged. Shutdown follows arq's wait-for-completion: on SIGTERM
stop taking messages, give in-flight work a grace, leave the rest unacked for
redelivery (the next handler adopts the still-running Job), close channel then
connection. A second signal exits at once. A lost connection abandons in-flight work
the same way and reconnects.

What happens when something fails (the README's "When things fail" table):

- Publishing follows ``replies.Replies``: a reply the broker refuses is retried, then
  dropped; a reply to a queue that no longer exists is dropped at once; a publishing
  connection in trouble puts the request back after ``REQUEUE_DELAY``.
- A transient failure (API server, S3), or an unexpected error once the Job may exist,
  puts the request back as a republished copy after a growing delay, counting attempts
  in its ``x-cloud-worker-attempts`` header (classic queues only say "redelivered");
  after ``max_attempts`` the requester gets ``failed`` and the dead-letter queue a copy.
  Never a requeue at once, so never a hot loop.
- An unexpected error before any Job exists is the handler's bug: ``RequestHandler``
  answers ``rejected`` (``InternalError``) with a dead-letter copy.
- A request of a profile with a ``maxInFlight`` that arrives on the work queue (or on
  another profile's queue) is forwarded: republished, confirmed, to its profile's queue,
  then acked; if the copy cannot be published the request goes back after
  ``REQUEUE_DELAY``. Each profile's queue is consumed on a lane of its own with that many
  threads and that prefetch, so its requests wait in the broker, not in a replica, and
  other work goes on beside them.
- The Job's finalizer is released only once the broker has processed the ack
  (``Broker.settle``); if the connection goes before that, the Job is marked replied but
  kept, so a redelivery adopts it rather than running the work again.
- A worker stuck past its delivery's longest possible time stops the loop's heartbeat,
  so ``/healthz`` fails and the pod is restarted.
- A request that leaves the queue unanswered (expired after going back, its handler
  killed) is answered from its Job by ``unanswered.Sweep``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from handler.adapters.amqp import REPLY_ATTEMPTS, Broker, Delivery, Lane, Settle, longest_delivery_seconds
from handler.core.config import Settings
from handler.core.errors import BrokerError, ConfigError, Interrupted, ReplyUndeliverable, Transient
from handler.core.exitcodes import ExitCode
from handler.core.profiles import profile_queue
from handler.core.request import is_cancel
from handler.core.retry import Backoff
from handler.service.handling import RequestHandler, Result, attempts_of
from handler.service.health import Heartbeat
from handler.service.metrics import Metrics
from handler.service.replies import REPLY_RETRY_DELAY, PublishingFailed, Replies
from handler.service.unanswered import Sweep

log = logging.getLogger(__name__)

#: How often the loop looks at its stop flag and stamps its heartbeat, in seconds. Short,
#: because it is how long SIGTERM takes to stop an idle loop; an idle tick costs ~50 µs.
TICK = 0.1
#: Pause before a delivery whose reply could not be published goes back to the queue.
REQUEUE_DELAY = 5.0
#: Longest delay before a request's next attempt, in seconds.
MAX_RETRY_DELAY = 60.0
#: Connection attempts at start-up before giving up with ExitCode.BROKER_UNREACHABLE.
STARTUP_ATTEMPTS = 6
#: Threads answering cancels, beside the Jobs' (a cancel costs an API call or two).
CANCEL_THREADS = 2
#: Seconds past its bound a worker may run before the loop takes it as stuck.
STUCK_GRACE = 60.0
#: How often the loop looks for stuck workers, in seconds.
STUCK_CHECK = 1.0


def reply_seconds(settings: Settings) -> float:
    """The longest a worker may take from its request's end to its ack: every attempt of
    every publication (a reply and a dead-letter copy), the waits between them, the ack."""
    per_publication = REPLY_ATTEMPTS * settings.publish_timeout_seconds + REPLY_RETRY_DELAY * 2 ** REPLY_ATTEMPTS
    return 2 * per_publication + REQUEUE_DELAY + 60


@dataclass
class _InFlight:
    delivery: Delivery
    stop: threading.Event = field(default_factory=threading.Event)
    #: How the delivery was settled (None: not yet). Set before the broker is asked, so a
    #: delivery whose settle failed half-way is never settled a second time.
    settled: Settle | None = None
    #: ``time.monotonic()`` by which the worker must be done with its current step.
    busy_until: float = 0.0


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
    forwarded: int = 0
    replies_dropped: int = 0
    acks_unconfirmed: int = 0

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
        # Cancels have threads of their own: one is answered however many Jobs are followed.
        self._cancel_pool = ThreadPoolExecutor(max_workers=CANCEL_THREADS, thread_name_prefix="cancel")
        # Each profile with a maxInFlight: as many threads as its lane's prefetch.
        consumed = {lane.profile for lane in broker.profile_lanes}
        if consumed != {p.name for p in handler.profiles.limited}:
            raise ValueError(f"the broker consumes the lanes of profiles {sorted(consumed)}, the handler has "
                             f"{sorted(p.name for p in handler.profiles.limited)}: build it as Broker(settings, "
                             "handler.profiles)")
        self._profile_pools = {lane.profile: ThreadPoolExecutor(max_workers=lane.prefetch,
                                                                thread_name_prefix=f"profile-{lane.profile}")
                               for lane in broker.profile_lanes}
        self._taken = 0
        self._last_work = time.monotonic()
        self._stuck_reported: set[int] = set()
        self._stuck: list[_InFlight] = []
        self._next_stuck_check = 0.0
        self.replies = Replies(broker.publish, self.metrics, on_dropped=self._count_dropped)
        self.sweep = Sweep(settings, handler, self.replies)

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
        log.info("consumer starting: queue=%s concurrency=%d once=%s%s", s.queue, s.concurrency, s.once,
                 "".join(f"; profile {lane.profile}: queue={lane.queue} maxInFlight={lane.prefetch}"
                         for lane in self.broker.profile_lanes))
        backoff = Backoff(base=0.5, cap=s.reconnect_max_seconds, attempts=1)
        attempt, connected_once = 0, False
        try:
            while not self._finished():
                try:
                    self.broker.connect()
                    if not connected_once:
                        self._check_consumer_timeout()
                        self.sweep.start()
                    connected_once, attempt = True, 0
                    self._consume()
                except ConfigError as exc:
                    self._abandon_all()
                    log.error("%s", exc)
                    return ExitCode.CONFIG
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
            self.sweep.stop()
            for pool in (self._pool, self._cancel_pool, *self._profile_pools.values()):
                pool.shutdown(wait=True, cancel_futures=True)
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
            self._beat()
            if delivery is not None:
                self._start(delivery)
                if self.settings.once and delivery.lane is not Lane.CANCEL:
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
            self._beat()

    def _beat(self) -> None:
        """Stamp the heartbeat, unless a worker is stuck: then ``/healthz`` goes stale and
        the pod is restarted (its deliveries go back to the queue, its Jobs are adopted).
        The workers are looked at once a second (``STUCK_CHECK``), not at every tick and
        delivery: with a thousand in flight that scan was a thousand items ten times a second."""
        now = time.monotonic()
        if now >= self._next_stuck_check:
            self._next_stuck_check = now + STUCK_CHECK
            with self._lock:
                self._stuck = [item for item in self._inflight.values() if now > item.busy_until + STUCK_GRACE]
        # Not those done since the last look (``_inflight`` is keyed by the item's id).
        stuck = [item for item in self._stuck if self._inflight.get(id(item)) is item]
        for item in stuck:
            if id(item) not in self._stuck_reported:
                self._stuck_reported.add(id(item))
                log.error("the worker of delivery %s is stuck %.0f s past its bound: letting /healthz fail so the "
                          "process is restarted", item.delivery.delivery_tag, now - item.busy_until)
        if not stuck:
            self.heartbeat.beat()

    def _start(self, delivery: Delivery) -> None:
        item = _InFlight(delivery, busy_until=time.monotonic() + longest_delivery_seconds(self.settings))
        with self._lock:
            self._inflight[id(item)] = item
        self.stats.received += 1
        if delivery.lane is Lane.CANCEL:
            self._cancel_pool.submit(self._handle, item)
            return
        if not self._taken:  # the benchmarks time cold start (process start → here) by this line
            log.info("first delivery received")
        self._taken += 1
        pool = self._profile_pools[delivery.profile] if delivery.lane is Lane.PROFILE and delivery.profile else \
            self._pool
        pool.submit(self._handle, item)

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
                if delivery.lane is Lane.CANCEL:
                    result = self.handler.process_cancel(delivery.message)
                else:
                    # A cancel sent to a work queue (by older clients) is answered where it is.
                    home = delivery.profile if is_cancel(delivery.message) else self.handler.lane_of(delivery.message)
                    if home != delivery.profile:
                        self._forward(item, home)
                        return
                    result = self.handler.process(delivery.message, item.stop, emit=self.replies.emit)
            except Interrupted:
                log.info("delivery %s left unacked: the broker redelivers it and the Job is adopted%s",
                         delivery.delivery_tag, _expiry_note(delivery))
                return
            except Exception as exc:  # noqa: BLE001 - transient trouble, or a bug once the Job may exist
                result = self._retry_or_give_up(item, exc)
                if result is None:
                    return
            item.busy_until = time.monotonic() + reply_seconds(self.settings)
            try:
                self._finish(item, result)
            except PublishingFailed as exc:
                self._requeue_later(item, exc)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: never leave the delivery unsettled
            if item.settled is not None:
                log.exception("unexpected error after delivery %s was settled (%s); nothing more to do",
                              delivery.delivery_tag, item.settled.value)
            else:
                log.exception("unexpected error handling delivery %s", delivery.delivery_tag)
                self._requeue_later(item, exc)
        finally:
            with self._lock:
                self._inflight.pop(id(item), None)
            self._stuck_reported.discard(id(item))
            self._last_work = time.monotonic()
            if self.settings.once or self._stopping.is_set():
                self.broker.wake()

    def _settle(self, item: _InFlight, how: Settle) -> bool:
        """Settle the delivery, once; whether the broker took it (for an ack: processed it).
        A delivery whose connection is gone is back with the broker already."""
        delivery = item.delivery
        if item.settled is not None:
            log.error("delivery %s was settled already (%s); not settling it again (%s)", delivery.delivery_tag,
                      item.settled.value, how.value)
            return False
        item.settled = how
        try:
            self.broker.settle(delivery, how)
            return True
        except BrokerError as exc:
            log.warning("could not %s delivery %s (%s): the broker redelivers it if it had not processed it",
                        how.value, delivery.delivery_tag, exc)
            return False

    def _finish(self, item: _InFlight, result: Result) -> None:
        """Publish what finishes the request, then ack it; record the reply on the Job once
        the ack is in. Only an ack the broker confirmed lets the Job go: after an ack
        whose fate is unknown the Job is kept (marked replied), so a redelivery adopts it
        instead of running the work again."""
        for pub in result.publications:
            self.replies.send(pub, item.stop)  # confirmed, or given up for good (the requester gone, the broker refusing)
        acked = self._settle(item, Settle.ACK)
        if not acked:
            self.stats.acks_unconfirmed += 1
        try:  # after the ack, nothing may settle the delivery again: failures are only logged
            self.handler.replied(result, release=acked)
            self.metrics.replied(result.outcome)
            self.stats.count(result.status)
        except Exception:  # noqa: BLE001 - the requester has its answer; the Job is kept at worst
            log.exception("delivery %s is answered and acked, but recording the reply failed",
                          item.delivery.delivery_tag)

    def _forward(self, item: _InFlight, profile: str | None) -> None:
        """Put a request in the queue of its profile's lane (``profile``; None: the work
        queue), confirmed, then ack it here; if the copy cannot be published, the request
        goes back after a pause (never lost, never a hot loop)."""
        delivery = item.delivery
        queue = profile_queue(self.settings.queue, profile) if profile else self.settings.queue
        copy = self.handler.forward_copy(delivery.message, self.settings.exchange, queue)
        try:
            self.broker.publish(copy)
        except (BrokerError, ReplyUndeliverable) as exc:
            self._requeue_later(item, exc)
            return
        if self._settle(item, Settle.ACK):
            self.stats.forwarded += 1
            self.metrics.forwarded.labels(self.handler.profiles.label(profile)).inc()
            log.info("delivery %s forwarded to %s, the queue of its profile's lane", delivery.delivery_tag, queue)

    def _count_dropped(self) -> None:
        self.stats.replies_dropped += 1

    def _requeue_later(self, item: _InFlight, error: BaseException) -> None:
        """Give the delivery back to the broker after a pause (never at once: no hot loop);
        its redelivery finds the Job by name and replies."""
        delivery = item.delivery
        log.warning("delivery %s not finished (%s): requeueing it in %.0f s%s", delivery.delivery_tag, error,
                    REQUEUE_DELAY, _expiry_note(delivery))
        if item.stop.wait(REQUEUE_DELAY):
            return  # shutting down: left unacked, the broker redelivers it
        if self._settle(item, Settle.REQUEUE):
            self.stats.requeued += 1

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
        queue = profile_queue(self.settings.queue, delivery.profile) if delivery.profile else self.settings.queue
        copy = self.handler.retry_copy(delivery.message, self.settings.exchange, queue, attempt)
        try:
            self.broker.publish(copy)  # one try: a copy refused or lost must never let the original go
        except (BrokerError, ReplyUndeliverable) as exc:
            log.warning("could not put delivery %s back (%s): requeueing it", delivery.delivery_tag, exc)
            self._settle(item, Settle.REQUEUE)
        else:
            self._settle(item, Settle.ACK)
        self.stats.requeued += 1
        self.metrics.retries.inc()
        return None


def _expiry_note(delivery: Delivery) -> str:
    """For a log line: what becomes of a delivery left for the broker that carries an expiration."""
    expiration = delivery.message.expiration_seconds
    if expiration is None:
        return ""
    return (f" (it expires {expiration:g} s after it was published; if it does before a handler takes it again, "
            "its Job is answered from the cluster once it ends)")
