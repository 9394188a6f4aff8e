"""Metric values follow the work: counted through the worker, the real consumer (in a
thread and as a subprocess serving /metrics on its health port) and the watch."""

import json
import socket
from datetime import UTC, datetime, timedelta

import pytest
import requests

from handler.core.config import Settings
from handler.core.messages import Message
from handler.core.outcome import Outcome, Status
from handler.service.handling import RequestHandler
from handler.service.metrics import Metrics
from tests.support.backends import StubBackend
from tests.support.requester import SEED_REQUEST
from tests.support.waiting import job_request, wait_until

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def plain(body):
    return Message(json.dumps(body).encode(), "application/json", correlation_id="c-1")


def test_the_worker_counts_outcomes_durations_and_the_time_to_create_the_job():
    outcome = Outcome(Status.FAILED, "BackoffLimitExceeded", "boom", exit_code=3,
                      start_time=NOW - timedelta(seconds=42), completion_time=NOW)
    worker = RequestHandler(Settings.from_env({}), StubBackend(outcome, create_delay=0.05))
    m = worker.metrics
    worker.process(plain(SEED_REQUEST), stop=None)
    worker.process(plain(dict(SEED_REQUEST, timeOut=-1)), stop=None)
    # Without a profiles file every Job is of the built-in profile "default"; a rejected
    # request's profile is not known ("").
    assert m.value("cloud_worker_requests_total", outcome="failed", profile="default") == 1
    assert m.value("cloud_worker_requests_total", outcome="rejected", profile="") == 1
    assert m.value("cloud_worker_rejected_requests_total", reason="InvalidTimeout") == 1
    assert m.value("cloud_worker_job_duration_seconds_sum", status="failed", profile="default") == 42
    assert m.value("cloud_worker_job_duration_seconds_bucket", status="failed", profile="default", le="60.0") == 1
    assert m.value("cloud_worker_job_duration_seconds_bucket", status="failed", profile="default", le="30.0") == 0
    assert m.value("cloud_worker_receipt_to_job_created_seconds_count") == 1
    assert 0.05 <= m.value("cloud_worker_receipt_to_job_created_seconds_sum") < 1
    assert m.value("cloud_worker_jobs_in_flight", profile="default") == 0


def test_failed_requests_are_counted_by_reason_so_exhausted_retries_can_be_told_apart():
    m = Metrics()
    for reason in ("BackoffLimitExceeded", "RetriesExhausted", "RetriesExhausted"):
        m.finished(Outcome(Status.FAILED, reason, "x"), "default")
    m.finished(Outcome(Status.SUCCEEDED, "Completed", "ok"), "default")
    assert m.value("cloud_worker_failed_requests_total", reason="RetriesExhausted") == 2
    assert m.value("cloud_worker_failed_requests_total", reason="BackoffLimitExceeded") == 1
    assert m.value("cloud_worker_failed_requests_total", reason="Completed") == 0


def test_the_oldest_job_in_flight_is_timed_from_its_own_thread_and_forgotten_when_it_ends():
    import threading

    from handler.service.metrics import InFlight

    now = [100.0]
    in_flight = InFlight(Metrics().jobs_in_flight.gauge, clock=lambda: now[0])
    started, finish = threading.Event(), threading.Event()

    def follow():  # a request followed on a thread of its own, as the consumer's workers do
        in_flight.labels("default").inc()
        started.set()
        finish.wait(10)
        in_flight.labels("default").dec()

    worker = threading.Thread(target=follow)
    worker.start()
    started.wait(10)
    now[0] = 130.0
    in_flight.labels("gpu").inc()  # a second, younger request on this thread
    now[0] = 160.0
    assert in_flight.longest_seconds() == 60.0  # the worker's, started at 100
    finish.set()
    worker.join(10)
    assert in_flight.longest_seconds() == 30.0  # this thread's, started at 130
    in_flight.labels("gpu").dec()
    assert in_flight.longest_seconds() == 0.0


def test_jobs_held_by_the_reply_finalizer_are_counted_with_the_longest_wait():
    from handler.core.manifest import FINALIZER

    class Tracker:
        counters = type("C", (), {"restarts": 0, "relists": 0, "events": 0, "stalls": 0})()

        def sizes(self):
            return {"jobs": 3}

        def jobs(self):
            ended = datetime.now(UTC) - timedelta(hours=2)
            held = {"metadata": {"name": "old", "finalizers": [FINALIZER]}, "status": {"conditions": [
                {"type": "Complete", "status": "True", "lastTransitionTime": ended.isoformat()}]}}
            running = {"metadata": {"name": "running", "finalizers": [FINALIZER],
                                    "creationTimestamp": datetime.now(UTC).isoformat()},
                       "spec": {"activeDeadlineSeconds": 600}, "status": {}}
            released = {"metadata": {"name": "released", "finalizers": []}, "status": held["status"]}
            return [held, running, released]

    m = Metrics()
    m.watch(Tracker())
    assert m.value("cloud_worker_jobs_held_by_finalizer") == 1
    assert 7190 < m.value("cloud_worker_jobs_held_by_finalizer_longest_seconds") < 7300


def test_only_a_consumer_exports_the_brokers_consumer_timeout():
    m = Metrics()
    assert b"cloud_worker_broker_consumer_timeout_seconds" not in m.render()[1]
    m.broker_consumer_timeout(1800)
    assert m.value("cloud_worker_broker_consumer_timeout_seconds") == 1800


def test_the_reply_latency_runs_from_the_jobs_completion_and_never_goes_negative():
    m = Metrics()
    m.replied(Outcome(Status.SUCCEEDED, "Completed", "ok", completion_time=NOW), now=NOW + timedelta(seconds=0.3))
    m.replied(Outcome(Status.SUCCEEDED, "Completed", "ok", completion_time=NOW), now=NOW - timedelta(seconds=0.5))
    m.replied(None)
    assert m.value("cloud_worker_job_finished_to_reply_seconds_count") == 2
    assert m.value("cloud_worker_job_finished_to_reply_seconds_sum") == pytest.approx(0.3)


def test_each_metrics_object_has_its_own_registry():
    first, second = Metrics(), Metrics()
    first.requests.labels("succeeded", "default").inc()
    assert second.value("cloud_worker_requests_total", outcome="succeeded", profile="default") == 0
    assert b"cloud_worker_requests_total" in first.render()[1]



@pytest.mark.integration
def test_the_consumers_metrics_follow_jobs_in_flight_outcomes_and_watch_restarts(handlers, requester, fakekube,
                                                                                 namespace, faults):
    faults.cut_watch_after = 1  # every watch stream breaks after one event and is resumed
    handler = handlers.start(concurrency=2)
    m = handler.consumer.metrics
    m.watch(handler.backend.tracker)
    held = requester.submit(job_request("scenario/hold"))
    wait_until(lambda: m.value("cloud_worker_jobs_in_flight", profile="default") == 1, "the held job is in flight")
    ok = requester.submit(job_request("scenario/succeed:0.2"))
    bad = requester.submit(dict(SEED_REQUEST, image="Not An Image"))
    assert requester.wait_reply(ok)["data"]["status"] == "succeeded"
    assert requester.wait_reply(bad)["data"]["reason"] == "InvalidImage"
    assert m.value("cloud_worker_jobs_in_flight", profile="default") == 1
    faults.cut_watch_after = None
    hold = next(j for j in fakekube.jobs(namespace) if j["spec"]["template"]["spec"]["containers"][0]["image"]
                == "scenario/hold")
    fakekube.finish(namespace, hold["metadata"]["name"])
    assert requester.wait_reply(held)["data"]["status"] == "succeeded"
    wait_until(lambda: m.value("cloud_worker_job_finished_to_reply_seconds_count") == 2, "both replies confirmed")
    assert m.value("cloud_worker_jobs_in_flight", profile="default") == 0
    assert m.value("cloud_worker_requests_total", outcome="succeeded", profile="default") == 2
    assert m.value("cloud_worker_rejected_requests_total", reason="InvalidImage") == 1
    assert m.value("cloud_worker_receipt_to_job_created_seconds_count") == 2
    assert m.value("cloud_worker_job_duration_seconds_count", status="succeeded", profile="default") == 2
    assert m.value("cloud_worker_watch_restarts_total") == handler.backend.tracker.counters.restarts > 0


@pytest.mark.integration
def test_the_consumer_serves_metrics_beside_its_probes(handlers, requester):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handlers.spawn(http_port=port)
    base = f"http://127.0.0.1:{port}"
    cid = requester.submit(job_request("scenario/succeed:0.2"))
    assert requester.wait_reply(cid, timeout=30)["data"]["status"] == "succeeded"

    def scraped():
        return requests.get(base + "/metrics", timeout=5).text

    wait_until(lambda: "cloud_worker_job_finished_to_reply_seconds_count 1.0" in scraped(), "the reply is counted")
    text = scraped()
    assert 'cloud_worker_requests_total{outcome="succeeded",profile="default"} 1.0' in text
    assert 'cloud_worker_jobs_in_flight{profile="default"} 0.0' in text
    relists = next(line for line in text.splitlines() if line.startswith("cloud_worker_watch_relists_total"))
    assert float(relists.split()[1]) >= 2  # jobs and pods listed at start-up
    # The replied Job has left the watch cache; its final state is kept among the gone.
    wait_until(lambda: 'cloud_worker_watch_cached_objects{kind="jobs"} 0.0' in scraped(), "the replied job leaves")
    assert 'cloud_worker_watch_cached_objects{kind="gone"} 1.0' in scraped()
    assert requests.get(base + "/healthz", timeout=5).status_code == 200
    assert requests.get(base + "/readyz", timeout=5).json() == {"ready": True, "broker": True, "kubernetes": True}
