"""One message must never stop a replica: forged or refused replies, connections closed
under a publish, poison values and errors that persist each cost at most that message,
and the request queued behind it is served within seconds. Over the real RabbitMQ.

Every test ends with the work queue empty: 0 ready and 0 unacknowledged.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handler.core.config import Settings
from handler.core.errors import BrokerError, Rejected, Transient
from handler.core.messages import Message
from handler.core.request import KNOWN_FIELDS, parse_request
from tests.support.rabbit import close_handler_connections, fresh_queue
from tests.support.requester import SEED_REQUEST
from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.integration

#: A direct reply-to name whose encoded pid names a node that does not exist: RabbitMQ
#: closes the publishing connection (541 INTERNAL_ERROR) instead of returning it.
FORGED_REPLY_TO = "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAxMzg4NjI2OQAAAAAAAAAA.bm9wZQ=="


def queue_counts(queue: str) -> tuple[int, int]:
    """(ready, unacknowledged) of ``queue``, as the broker counts them."""
    listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "messages_ready",
                             "messages_unacknowledged"], capture_output=True, text=True, timeout=60,
                            check=True).stdout
    for line in listed.splitlines():
        name, *counts = line.split("\t")
        if name == queue:
            return int(counts[0]), int(counts[1])
    raise AssertionError(f"queue {queue} not listed: {listed}")


def assert_queue_drained(queue: str) -> None:
    wait_until(lambda: queue_counts(queue) == (0, 0), f"{queue} has 0 ready and 0 unacked", timeout=15)


def served_within_seconds(requester, seconds: float = 15.0) -> float:
    """Submit a good request now; how long its reply took."""
    started = time.monotonic()
    cid = requester.submit(job_request("scenario/succeed:0.2"))
    assert requester.wait_reply(cid, timeout=seconds)["data"]["status"] == "succeeded"
    return time.monotonic() - started


def test_a_forged_direct_reply_to_costs_only_its_reply_and_the_next_request_is_served(
        handlers, requester, fakekube, namespace, queue_name, figures):
    handler = handlers.start()
    requester.submit(job_request("scenario/succeed:0.2"), reply_to=FORGED_REPLY_TO, correlation_id="forged")
    good_after = served_within_seconds(requester)
    assert_queue_drained(queue_name)
    stats = handler.consumer.stats
    assert handler.thread.is_alive() and not handler.exit_code
    assert stats.replies_dropped == 1 and stats.received == 2, stats
    assert len(fakekube.created_jobs(namespace)) == 2
    figures.update(crashes=0, wedged_deliveries=0, redeliveries_per_poison_message=stats.received - 2,
                   good_request_served_after_s=round(good_after, 1))


def test_a_connection_closed_while_a_reply_is_published_loses_and_duplicates_no_job(
        handlers, requester, fakekube, namespace, queue_name, figures):
    handler = handlers.start()
    publisher = handler.consumer.broker.publisher
    real_publish, closed = publisher.publish, []

    def publish_after_closing_everything(pub):
        if not closed and b'"succeeded"' in pub.body:  # the terminal reply, deterministically
            closed.append(pub.correlation_id)
            close_handler_connections()
            time.sleep(0.5)  # the broker has closed both of the handler's connections by now
        real_publish(pub)

    publisher.publish = publish_after_closing_everything
    cid = requester.submit(job_request("scenario/succeed:0.2"))
    assert requester.wait_reply(cid, timeout=30)["data"]["status"] == "succeeded"
    good_after = served_within_seconds(requester)
    assert_queue_drained(queue_name)
    requester.collect(0.5)
    assert closed == [cid] and handler.thread.is_alive()
    assert len(fakekube.created_jobs(namespace)) == 2  # the redelivery adopted its Job
    replies = requester.terminal_replies_for(cid)
    assert len({r["id"] for r in replies}) == 1  # a repeat, if any, is the same event
    figures.update(crashes=0, jobs_run_twice=0, duplicate_reply_events=len(replies) - 1,
                   reconnects=handler.consumer.stats.reconnects, good_request_served_after_s=round(good_after, 1))


def test_a_poison_timeout_is_rejected_once_and_the_next_request_is_served(
        handlers, requester, fakekube, namespace, queue_name, figures):
    dlq = fresh_queue("dead")
    handler = handlers.start(dead_letter_queue=dlq)
    poison = requester.publish(json.dumps(dict(SEED_REQUEST, timeOut=10**400)).encode())
    good_after = served_within_seconds(requester)
    reply = requester.wait_reply(poison)
    assert (reply["data"]["field"], reply["data"]["reason"]) == ("timeOut", "TimeoutTooLong")
    assert_queue_drained(queue_name)
    assert handler.consumer.stats.received == 2 and requester.queue_depth(dlq) == 1
    figures.update(crashes=0, redeliveries_per_poison_message=handler.consumer.stats.received - 2,
                   good_request_served_after_s=round(good_after, 1))


def test_an_unexpected_error_before_the_job_exists_rejects_the_request_as_internal_error(
        handlers, requester, fakekube, namespace, queue_name, monkeypatch):
    dlq = fresh_queue("dead")
    handler = handlers.start(dead_letter_queue=dlq)
    real_parse = parse_request

    def parse_with_a_bug(message, settings_, *profiles):
        if b"boom" in message.body:
            raise KeyError("a bug in the handler")
        return real_parse(message, settings_, *profiles)

    monkeypatch.setattr("handler.service.handling.parse_request", parse_with_a_bug)
    cid = requester.submit(dict(SEED_REQUEST, jobName="boom"))
    reply = requester.wait_reply(cid)
    assert (reply["data"]["status"], reply["data"]["reason"]) == ("rejected", "InternalError")
    served_within_seconds(requester)
    assert_queue_drained(queue_name)
    props, _ = requester.get_one(dlq)
    assert props.headers["x-rejected-reason"] == "InternalError" and handler.consumer.stats.received == 2


def test_a_refused_reply_is_retried_then_dropped_and_never_holds_the_delivery(
        handlers, requester, fakekube, namespace, queue_name, figures):
    full = fresh_queue("full")
    requester.channel.queue_declare(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    try:
        handler = handlers.start()
        started = time.monotonic()
        requester.submit(job_request("scenario/succeed:0.2"), reply_to=full)
        good_after = served_within_seconds(requester)
        assert_queue_drained(queue_name)
        assert handler.consumer.stats.replies_dropped == 1
        assert handler.consumer.metrics.value("cloud_worker_replies_dropped_total", reason="refused") == 1
        assert len(fakekube.created_jobs(namespace)) == 2
        figures.update(wedged_deliveries=0, refused_reply_settled_after_s=round(time.monotonic() - started, 1),
                       good_request_served_after_s=round(good_after, 1))
    finally:
        requester.channel.queue_delete(full)


def test_a_transient_error_that_persists_is_retried_with_growing_delays_then_dead_lettered(
        handlers, requester, fakekube, namespace, queue_name, figures):
    dlq = fresh_queue("dead")
    handler = handlers.start(dead_letter_queue=dlq, max_attempts=4, retry_delay_seconds=0.3)
    calls: list[float] = []

    def api_server_down(request, stop, progress=None):
        calls.append(time.monotonic())
        raise Transient("create job: 503 the API server is restarting")

    handler.consumer.handler.backend.run = api_server_down
    cid = requester.submit(job_request("scenario/succeed:0.2"))
    reply = requester.wait_reply(cid, timeout=30)
    assert (reply["data"]["status"], reply["data"]["reason"]) == ("failed", "RetriesExhausted")
    assert "503 the API server is restarting" in reply["data"]["message"]
    assert len(calls) == 4
    gaps = [later - earlier for earlier, later in zip(calls, calls[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[0] >= 0.3, gaps
    wait_until(lambda: requester.queue_depth(dlq) == 1, "the request reaches the dead-letter queue")
    props, _ = requester.get_one(dlq)
    assert props.headers["x-failed-reason"] == "RetriesExhausted" and props.headers["x-cloud-worker-attempts"] == 4
    assert_queue_drained(queue_name)
    assert fakekube.created_jobs(namespace) == []
    figures.update(attempts=len(calls), delays_s=[round(g, 2) for g in gaps], dead_lettered=1)


# --- numbers at their extremes, in every field: parsing answers or rejects, nothing else
EXTREMES = st.one_of(
    st.integers(min_value=-(10**500), max_value=10**500),
    st.sampled_from([10**400, -(10**400), 2**63, -(2**63) - 1, 2**1024, 0, -0.0, 1e308, -1e308, 5e-324]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1e400", "-1e400", "NaN", "Infinity", "9" * 500, "0x10", " 7 "]),
)


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(sorted(KNOWN_FIELDS | {"unknown"})), value=EXTREMES)
def test_numeric_extremes_in_any_field_are_answered_or_rejected_never_raised(field, value):
    body = json.dumps(dict(SEED_REQUEST, **{field: value})).encode()  # NaN/Infinity as JSON parsers accept them
    try:
        parse_request(Message(body, "application/json"), Settings.from_env({}))
    except Rejected:
        pass


def test_a_reply_the_publishing_connection_cannot_send_is_never_acked_unanswered(
        handlers, requester, fakekube, namespace, queue_name, monkeypatch, figures):
    """Blocked (a memory alarm) or lost, the publishing connection fails every attempt: the
    request goes back to the queue, and its redelivery adopts the Job and replies."""
    monkeypatch.setattr("handler.service.consumer.REQUEUE_DELAY", 0.3)
    monkeypatch.setattr("handler.service.consumer.REPLY_RETRY_DELAY", 0.05)
    handler = handlers.start()
    publisher = handler.consumer.broker.publisher
    real_publish, failed = publisher.publish, []

    def blocked_for_three_attempts(pub):
        if b'"succeeded"' in pub.body and len(failed) < 3:
            failed.append(pub.correlation_id)
            raise BrokerError("publishing: ConnectionBlockedTimeout (a memory alarm)")
        real_publish(pub)

    publisher.publish = blocked_for_three_attempts
    cid = requester.submit(job_request("scenario/succeed:0.2"))
    assert requester.wait_reply(cid, timeout=30)["data"]["status"] == "succeeded"
    assert_queue_drained(queue_name)
    assert len(failed) == 3 and handler.consumer.stats.requeued == 1 and handler.consumer.stats.replies_dropped == 0
    assert len(fakekube.created_jobs(namespace)) == 1  # the redelivery adopted the Job
    figures.update(replies_lost=0, requeued=1, jobs=1)


def test_a_rejected_request_whose_dead_letter_queue_vanished_is_kept_until_the_copy_lands(
        handlers, requester, queue_name, monkeypatch):
    """The dead-letter copy is the only record of a rejected request: it is acked only once
    the copy is confirmed, so a dead-letter queue deleted under the handler loses nothing."""
    monkeypatch.setattr("handler.service.consumer.REQUEUE_DELAY", 0.3)
    dlq = fresh_queue("dead")
    handler = handlers.start(dead_letter_queue=dlq)
    wait_until(lambda: handler.consumer.broker.is_open, "the handler declared its queues")
    requester.channel.queue_delete(dlq)
    cid = requester.submit(dict(SEED_REQUEST, timeOut=-5))
    wait_until(lambda: handler.consumer.stats.requeued >= 1, "the rejected request goes back to the queue")
    assert handler.consumer.stats.rejected == 0  # not settled without its copy
    requester.channel.queue_declare(dlq, durable=True)
    wait_until(lambda: requester.queue_depth(dlq) == 1, "the copy lands once the queue is back", timeout=15)
    assert requester.wait_reply(cid)["data"]["reason"] == "InvalidTimeout"
    assert_queue_drained(queue_name)
