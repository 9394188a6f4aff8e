"""Prometheus metrics of one handler process, in its own registry.

A ``Metrics`` object is built once per process and passed explicitly to the worker, the
consumer and the HTTP face; nothing registers in ``prometheus_client``'s global default
registry, so tests build as many as they like and nothing leaks between them. The
watch's counters already live in ``JobTracker.counters``; a collector reads them at
scrape time instead of adding work to the watch loop, and so it does for what the cache
holds (Jobs our finalizer keeps waiting for their reply) and for how long this process
has been following its oldest Job. Updating a metric is a lock and an addition: cheap
enough for the per-request path. The chart's alerts and dashboard query these names
(docs/alerts.md); tests/test_alerts.py checks they are all exported here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from handler.core.manifest import held_since
from handler.core.outcome import Outcome, Status, utcnow

#: Job run times: from seconds-long test jobs to the two-hour maximum timeout.
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
#: The handler's own latencies (an API call, a publisher confirm): milliseconds to seconds.
#: ``completionTime`` has one-second resolution, so the reply latency's finer buckets
#: only fill for outcomes the handler timestamps itself (deadline, stuck pods).
FAST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "cloud_worker_requests", "Requests handled, by outcome: succeeded, failed, timedout, rejected, "
            "interrupted (left for redelivery or re-POST), transient, error; and by Job profile (a configured name, "
            "default without a profiles file, empty for a request rejected before its profile was known).",
            ["outcome", "profile"], registry=r)
        self.rejected = Counter("cloud_worker_rejected_requests", "Rejected requests, by reason.", ["reason"],
                                registry=r)
        self.failed = Counter(
            "cloud_worker_failed_requests", "Requests answered failed, by reason: BackoffLimitExceeded, "
            "ImagePullBackOff, FailedCreate, ..., and RetriesExhausted (transient failures outlasted every attempt).",
            ["reason"], registry=r)
        self.jobs_in_flight = InFlight(Gauge("cloud_worker_jobs_in_flight", "Jobs this process is following now, "
                                             "by profile.", ["profile"], registry=r))
        r.register(self.jobs_in_flight)
        self.job_duration = Histogram(
            "cloud_worker_job_duration_seconds", "Run time of finished Jobs (startTime to completionTime), by status "
            "and profile.", ["status", "profile"], buckets=JOB_BUCKETS, registry=r)
        self.forwarded = Counter(
            "cloud_worker_forwarded_requests", "Requests taken from the work queue and put in the queue of their "
            "profile's lane (a profile with maxInFlight), by profile.", ["profile"], registry=r)
        self.dispatch = Histogram(
            "cloud_worker_receipt_to_job_created_seconds",
            "Seconds from a request's receipt to its Job being created (or adopted, for a redelivery).",
            buckets=FAST_BUCKETS, registry=r)
        self.reply = Histogram(
            "cloud_worker_job_finished_to_reply_seconds",
            "Seconds from the Job's completionTime to its reply being confirmed by the broker (or written as the "
            "HTTP response).", buckets=FAST_BUCKETS, registry=r)
        self.broker_reconnects = Counter("cloud_worker_broker_reconnects",
                                         "Broker connections lost and reopened.", registry=r)
        self.replies_dropped = Counter(
            "cloud_worker_replies_dropped", "Replies not delivered, by reason: unroutable (the requester's queue is "
            "gone) or refused (the broker nacked or closed every attempt).", ["reason"], registry=r)
        self.unanswered = Counter(
            "cloud_worker_unanswered_jobs", "Jobs answered from the cluster because their request left the queue "
            "unanswered (it expired after going back to the queue, or its handler was killed).", registry=r)
        self.retries = Counter(
            "cloud_worker_request_retries", "Requests put back for another attempt after a transient failure or "
            "an unexpected error once their Job existed.", registry=r)

    def track_profiles(self, names: Iterable[str]) -> None:
        """Show every profile's Jobs in flight from the start (0), not only once one ran."""
        for name in names:
            self.jobs_in_flight.labels(name)

    def watch(self, tracker: Any) -> None:
        """Expose a ``JobTracker``'s counters (watch restarts, re-lists, events) and what its
        cache says of the Jobs our finalizer holds."""
        self.registry.register(_TrackerCollector(tracker))

    def broker_consumer_timeout(self, seconds: float) -> None:
        """Export the broker's ``consumer_timeout`` as this consumer knows it (only a
        consumer holds deliveries: ``serve`` exports none), beside its oldest Job in flight."""
        Gauge("cloud_worker_broker_consumer_timeout_seconds", "The broker's consumer_timeout as configured "
              "(CLOUD_WORKER_BROKER_CONSUMER_TIMEOUT_MINUTES): brokers before RabbitMQ 3.11.15 take back a delivery "
              "unacked for longer.", registry=self.registry).set(seconds)

    def finished(self, outcome: Outcome, profile: str) -> None:
        self.requests.labels(outcome.status.value, profile).inc()
        if outcome.status is Status.FAILED:
            self.failed.labels(outcome.reason).inc()
        if outcome.duration_seconds is not None:
            self.job_duration.labels(outcome.status.value, profile).observe(outcome.duration_seconds)

    def replied(self, outcome: Outcome | None, now: datetime | None = None) -> None:
        """The reply for ``outcome`` is out: observe how long after the Job finished."""
        if outcome is None or outcome.completion_time is None:
            return
        now = now or datetime.now(UTC)
        self.reply.observe(max(0.0, (now - outcome.completion_time).total_seconds()))

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent): for tests and one-line summaries."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def render(self) -> tuple[str, bytes]:
        """The Prometheus text exposition: (content type, body)."""
        return CONTENT_TYPE_LATEST, generate_latest(self.registry)


class InFlight:
    """``cloud_worker_jobs_in_flight`` (by profile), and since when each request in flight
    has been followed: a request is followed on one thread from ``inc`` to ``dec``
    (``RequestHandler.process``), so each thread's start is kept and the oldest exported
    as ``cloud_worker_job_in_flight_longest_seconds`` (its delivery is held unacked as long)."""

    def __init__(self, gauge: Gauge, clock: Any = time.monotonic) -> None:
        self.gauge = gauge
        self.clock = clock
        self._lock = threading.Lock()
        self._since: dict[int, float] = {}

    def labels(self, profile: str) -> _ProfileInFlight:
        return _ProfileInFlight(self, profile)

    def inc(self, profile: str) -> None:
        self.gauge.labels(profile).inc()
        with self._lock:
            self._since[threading.get_ident()] = self.clock()

    def dec(self, profile: str) -> None:
        self.gauge.labels(profile).dec()
        with self._lock:
            self._since.pop(threading.get_ident(), None)

    def longest_seconds(self) -> float:
        with self._lock:
            oldest = min(self._since.values(), default=None)
        return 0.0 if oldest is None else max(0.0, self.clock() - oldest)

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "cloud_worker_job_in_flight_longest_seconds", "Seconds this process has been following its oldest Job in "
            "flight (its request is held unacked as long); 0 when it follows none.", value=self.longest_seconds())


class _ProfileInFlight:
    """One profile's side of ``InFlight``, as ``gauge.labels(profile)`` is of a gauge."""

    def __init__(self, in_flight: InFlight, profile: str) -> None:
        self.in_flight, self.profile = in_flight, profile
        in_flight.gauge.labels(profile)  # shown (0) from the start

    def inc(self) -> None:
        self.in_flight.inc(self.profile)

    def dec(self) -> None:
        self.in_flight.dec(self.profile)


class _TrackerCollector:
    def __init__(self, tracker: Any) -> None:
        self.tracker = tracker

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        counters = self.tracker.counters
        yield CounterMetricFamily("cloud_worker_watch_restarts", "Watch streams that broke and were resumed.",
                                  value=counters.restarts)
        yield CounterMetricFamily("cloud_worker_watch_relists", "Lists of Jobs and pods (start-up, 410 Gone).",
                                  value=counters.relists)
        yield CounterMetricFamily("cloud_worker_watch_events", "Watch events applied to the cache.",
                                  value=counters.events)
        yield CounterMetricFamily("cloud_worker_watch_stalls", "Watches restarted because they sent neither an event "
                                  "nor a bookmark for CLOUD_WORKER_WATCH_STALL_SECONDS.", value=counters.stalls)
        cached = GaugeMetricFamily("cloud_worker_watch_cached_objects", "Objects in the watch cache, by kind: jobs and "
                                   "pods followed, events, and deleted (gone) or adopted replied (remembered) Jobs kept "
                                   "beside them.", labels=["kind"])
        for kind, count in self.tracker.sizes().items():
            cached.add_metric([kind], count)
        yield cached
        now = utcnow()
        held = [(now - since).total_seconds() for since in map(held_since, self.tracker.jobs())
                if since is not None and since <= now]
        yield GaugeMetricFamily("cloud_worker_jobs_held_by_finalizer", "Jobs that ended (or passed their deadline, "
                                "or were deleted) and that the reply finalizer still holds, waiting for their reply to "
                                "be confirmed.", value=len(held))
        yield GaugeMetricFamily("cloud_worker_jobs_held_by_finalizer_longest_seconds", "Seconds the longest-held of "
                                "those Jobs has waited for its reply; 0 when none waits.", value=max(held, default=0.0))
