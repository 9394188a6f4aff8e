"""The consume loop over the real RabbitMQ: rejects, acks, once mode, shutdown,
crashes and lost connections, and never a second Job for one request."""

import json
import signal
import time

import pytest

from tests.support.rabbit import close_handler_connections, fresh_queue
from tests.support.requester import SEED_REQUEST
from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.integration


def test_an_invalid_request_is_rejected_acked_and_dead_lettered(handlers, requester):
    dlq = fresh_queue("dead")
    handlers.start(dead_letter_queue=dlq)
    cid = requester.submit(dict(SEED_REQUEST, timeOut=-5))
    reply = requester.wait_reply(cid)
    assert reply["type"] == "mstc.cloud.worker.job.rejected.v1"
    assert (reply["data"]["field"], reply["data"]["reason"]) == ("timeOut", "InvalidTimeout")
    wait_until(lambda: requester.queue_depth(dlq) == 1, "the copy reaches the dead-letter queue")
    props, body = requester.get_one(dlq)
    assert json.loads(body)["timeOut"] == -5
    assert props.headers["x-rejected-field"] == "timeOut" and props.correlation_id == cid
    assert requester.queue_depth() == 0


def test_a_dead_letter_copy_the_broker_refuses_keeps_the_request_until_the_copy_is_taken(handlers, requester):
    dlq = fresh_queue("dead")  # full, and refusing what does not fit
    requester.channel.queue_declare(dlq, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    requester.channel.basic_publish("", dlq, b"already there")
    handler = handlers.start(dead_letter_queue=dlq)
    cid = requester.submit(dict(SEED_REQUEST, timeOut=-5))
    wait_until(lambda: handler.consumer.stats.requeued >= 1, "the refused copy sends the request back", timeout=30)
    assert requester.replies_for(cid) == []  # no answer while nothing keeps the request
    requester.channel.queue_purge(dlq)
    assert requester.wait_reply(cid, timeout=30)["data"]["reason"] == "InvalidTimeout"
    wait_until(lambda: requester.queue_depth(dlq) == 1, "the copy reaches the dead-letter queue")
    assert json.loads(requester.get_one(dlq)[1])["timeOut"] == -5
    assert requester.queue_depth() == 0
    assert handler.consumer.stats.replies_dropped == 0


def test_a_body_that_is_not_json_is_rejected_and_the_next_request_still_runs(handlers, requester, fakekube, namespace):
    handlers.start()
    bad = requester.submit(b"\x00\xff not json")
    good = requester.submit()
    assert requester.wait_reply(bad)["data"]["reason"] == "InvalidJson"
    assert requester.wait_reply(good)["data"]["status"] == "succeeded"
    assert len(fakekube.created_jobs(namespace)) == 1


def test_requests_run_concurrently_up_to_the_concurrency(handlers, requester, fakekube, namespace):
    handlers.start(concurrency=4)
    started = time.monotonic()
    cids = [requester.submit(job_request("scenario/succeed:1.0"), correlation_id=f"c{i}") for i in range(4)]
    for cid in cids:
        assert requester.wait_reply(cid)["data"]["status"] == "succeeded"
    assert time.monotonic() - started < 3.5  # four 1-second jobs, not run one after another
    assert len(fakekube.created_jobs(namespace)) == 4


def test_a_request_without_reply_to_is_answered_on_the_configured_routing_key(handlers, requester):
    reply_queue = requester.channel.queue_declare(queue="", exclusive=True).method.queue
    handlers.start(reply_routing_key=reply_queue)
    requester.submit(reply_to=None, correlation_id="no-reply-to")
    wait_until(lambda: requester.queue_depth(reply_queue) == 1, "the reply arrives on the routing key")
    props, body = requester.get_one(reply_queue)
    assert props.correlation_id == "no-reply-to" and json.loads(body)["data"]["status"] == "succeeded"


def test_a_reply_to_a_vanished_queue_is_dropped_and_the_request_still_acked(handlers, requester):
    handlers.start()
    requester.submit(reply_to="amq.gen-no-such-queue")
    cid = requester.submit()
    assert requester.wait_reply(cid)["data"]["status"] == "succeeded"
    assert requester.queue_depth() == 0


def test_lifecycle_events_precede_the_terminal_reply_when_asked_for(handlers, requester):
    handlers.start()
    cid = requester.submit(job_request("scenario/succeed:0.5"), headers={"x-mstc-progress": "true"})
    requester.wait_reply(cid)
    kinds = [r["data"]["status"] for r in requester.replies_for(cid)]
    assert kinds == ["accepted", "started", "succeeded"]
    assert len({r["id"] for r in requester.replies_for(cid)}) == 3


def test_once_mode_handles_one_message_and_exits_zero(handlers, requester, fakekube, namespace):
    first, second = requester.submit(correlation_id="one"), requester.submit(correlation_id="two")
    proc = handlers.spawn("--once")
    assert proc.wait(30) == 0, handlers.log_of()
    requester.wait_reply(first)
    requester.collect(0.5)
    assert requester.replies_for(second) == []
    assert requester.queue_depth() == 1
    assert len(fakekube.created_jobs(namespace)) == 1


def test_once_mode_gives_back_what_it_was_handed_and_did_not_take_while_its_job_runs(
        handlers, requester, fakekube, namespace):
    """A prefetch above 1 (or the other lanes) hands a ``--once`` handler several deliveries in
    one go: the ones it does not take go back to the queue at once, for the next handler, not
    when its Job ends."""
    cids = [requester.submit(job_request("scenario/succeed:4"), correlation_id=f"r{i}") for i in range(20)]
    proc = handlers.spawn("--once", concurrency=20)
    wait_until(lambda: fakekube.created_jobs(namespace), "its one Job is created", timeout=20)
    wait_until(lambda: requester.queue_depth() == 19, "the requests it did not take are ready again", timeout=3)
    assert proc.poll() is None  # still following its Job
    assert proc.wait(30) == 0, handlers.log_of()
    assert requester.wait_reply(cids[0])["data"]["status"] == "succeeded"
    assert len(fakekube.created_jobs(namespace)) == 1


def test_idle_mode_exits_after_the_idle_time(handlers):
    proc = handlers.spawn("--idle-exit-seconds", "1")
    assert proc.wait(30) == 0, handlers.log_of()


def test_sigterm_lets_in_flight_work_finish_within_the_grace(handlers, requester, fakekube, namespace):
    proc = handlers.spawn(shutdown_grace_seconds=10)
    cid = requester.submit(job_request("scenario/succeed:2"))
    wait_until(lambda: fakekube.created_jobs(namespace), "the job is created", timeout=20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, handlers.log_of()
    assert requester.wait_reply(cid)["data"]["status"] == "succeeded"
    assert requester.queue_depth() == 0


def test_work_past_the_grace_stays_unacked_and_the_next_handler_adopts_its_job(handlers, requester, fakekube, namespace):
    proc = handlers.spawn(shutdown_grace_seconds=0.5)
    cid = requester.submit(job_request("scenario/succeed:4"))
    wait_until(lambda: fakekube.created_jobs(namespace), "the job is created", timeout=20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, handlers.log_of()
    requester.collect(0.3)
    assert requester.replies_for(cid) == []
    handlers.start()
    assert requester.wait_reply(cid)["data"]["status"] == "succeeded"
    assert len(fakekube.created_jobs(namespace)) == 1


def test_a_request_redelivered_after_the_handler_is_killed_mid_watch_adopts_the_job(handlers, requester, fakekube,
                                                                                    namespace):
    proc = handlers.spawn()
    cid = requester.submit(job_request("scenario/succeed:2"))
    wait_until(lambda: fakekube.created_jobs(namespace), "the job is created", timeout=20)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    handlers.spawn()
    reply = requester.wait_reply(cid, timeout=30)
    assert reply["data"]["status"] == "succeeded"
    requester.collect(1.0)
    assert len(requester.terminal_replies_for(cid)) == 1
    assert len(fakekube.created_jobs(namespace)) == 1
    assert "adopting" in handlers.log_of()


def test_a_connection_closed_by_the_broker_is_reopened_and_the_job_adopted(handlers, requester, fakekube, namespace):
    handler = handlers.start()
    cid = requester.submit(job_request("scenario/succeed:2"))
    wait_until(lambda: fakekube.created_jobs(namespace), "the job is created")
    close_handler_connections()
    assert requester.wait_reply(cid, timeout=30)["data"]["status"] == "succeeded"
    requester.collect(0.5)
    assert len(requester.terminal_replies_for(cid)) == 1
    assert len(fakekube.created_jobs(namespace)) == 1
    assert handler.consumer.stats.reconnects >= 1
    assert handler.consumer.metrics.value("cloud_worker_broker_reconnects_total") == handler.consumer.stats.reconnects
