"""A delivery is settled once, the Job is let go only once the broker has processed the
ack, and a silent broker connection cannot hold replies or a shutdown. Over the real
RabbitMQ (through a TCP proxy that can fall silent) and the fake API server.
"""

from __future__ import annotations

import time

import pytest
from pika.adapters.blocking_connection import BlockingChannel

from handler.core.manifest import ANNOTATION_REPLIED, FINALIZER
from handler.service.consumer import REQUEUE_DELAY
from tests.reliability.test_broker_policy import assert_queue_drained
from tests.support.rabbit import close_handler_connections
from tests.support.tcpproxy import SilentableProxy
from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.integration


def test_an_error_after_the_ack_is_only_logged_and_costs_no_other_request(handlers, requester, fakekube, namespace,
                                                                          monkeypatch, figures):
    """Settling an acked delivery again would make the broker close the channel (406 unknown
    delivery tag) and abandon every other request in flight on it."""
    handler = handlers.start(concurrency=2)
    other = requester.submit(job_request("scenario/hold"))
    wait_until(lambda: fakekube.created_jobs(namespace), "another request's job runs")
    real_replied = handler.consumer.handler.replied

    def replied_then_fail(result, release=True):
        real_replied(result, release=release)
        raise RuntimeError("recording the reply failed after the ack")

    monkeypatch.setattr(handler.consumer.handler, "replied", replied_then_fail)
    cid = requester.submit(job_request("scenario/succeed:0.2"))
    assert requester.wait_reply(cid)["data"]["status"] == "succeeded"
    monkeypatch.setattr(handler.consumer.handler, "replied", real_replied)
    time.sleep(REQUEUE_DELAY + 1)  # a nack of the acked tag would have closed the channel by now
    fakekube.finish(namespace, fakekube.created_jobs(namespace)[0])
    assert requester.wait_reply(other)["data"]["status"] == "succeeded"
    assert_queue_drained(requester.queue)
    stats = handler.consumer.stats
    figures.update(reconnects=stats.reconnects, abandoned=stats.abandoned, jobs=len(fakekube.created_jobs(namespace)))
    assert stats.reconnects == 0 and stats.abandoned == 0 and len(fakekube.created_jobs(namespace)) == 2


def test_a_job_whose_ack_was_not_confirmed_is_kept_for_a_redelivery(handlers, requester, fakekube, namespace,
                                                                    monkeypatch, figures):
    """AMQP 0-9-1 does not confirm acks: the connection lost right after the ack leaves its
    fate unknown. The Job is then marked replied but kept, so a redelivery would adopt it;
    had it been let go, the TTL would delete it and a redelivery would run the work again."""
    handler = handlers.start()
    real_ack, real_qos, armed, sabotaged = BlockingChannel.basic_ack, BlockingChannel.basic_qos, [], []

    def ack_and_arm(channel, *args, **kwargs):
        if not sabotaged:
            sabotaged.append(True)
            armed.append(True)  # the next basic.qos is this ack's round trip
        return real_ack(channel, *args, **kwargs)

    def qos_after_the_connection_dropped(channel, *args, **kwargs):
        if armed and armed.pop():
            close_handler_connections()  # the ack went out; its confirming round trip cannot come back
            time.sleep(0.5)
        return real_qos(channel, *args, **kwargs)

    monkeypatch.setattr(BlockingChannel, "basic_ack", ack_and_arm)
    monkeypatch.setattr(BlockingChannel, "basic_qos", qos_after_the_connection_dropped)
    cid = requester.submit(job_request("scenario/succeed:0.2"), message_id="unconfirmed-1")
    reply = requester.wait_reply(cid)
    wait_until(lambda: handler.consumer.stats.acks_unconfirmed == 1, "the ack is known to be unconfirmed")
    wait_until(lambda: ANNOTATION_REPLIED in (fakekube.jobs(namespace)[0]["metadata"].get("annotations") or {}),
               "the reply is recorded on the job")
    (job,) = fakekube.jobs(namespace)
    assert FINALIZER in job["metadata"]["finalizers"], "a job whose ack may be undone must not be let go"

    # The message comes back after all (here: published again, as a redelivery would be):
    requester.submit(job_request("scenario/succeed:0.2"), message_id="unconfirmed-1", correlation_id=cid)
    _, again = requester.wait_replies(cid, 2)
    assert again["id"] == reply["id"] and len(fakekube.created_jobs(namespace)) == 1
    wait_until(lambda: not any(FINALIZER in (j["metadata"].get("finalizers") or []) for j in fakekube.jobs(namespace)),
               "the adopting delivery, acked for sure, lets the job go")
    figures.update(jobs=1, jobs_run_twice=0, acks_unconfirmed=handler.consumer.stats.acks_unconfirmed)


@pytest.fixture
def proxy():
    silentable = SilentableProxy(("127.0.0.1", 5672))
    yield silentable
    silentable.close()


def test_a_silent_publishing_connection_delays_replies_by_its_deadline_only(handlers, requester, proxy, figures):
    handler = handlers.start(amqp_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F", concurrency=4,
                             publish_timeout_seconds=2)
    first = requester.submit(job_request("scenario/succeed:0.1"))
    assert requester.wait_reply(first)["data"]["status"] == "succeeded"
    assert proxy.connections == 2  # the consuming connection, then the publishing one
    proxy.silence(2, 2)  # the publishing connection: open, and nothing crosses it any more
    started = time.monotonic()
    cids = [requester.submit(job_request("scenario/succeed:0.1")) for _ in range(4)]
    statuses = [requester.wait_reply(cid, timeout=30)["data"]["status"] for cid in cids]
    took = time.monotonic() - started
    figures.update(replies=len(statuses), seconds_to_all_replies=round(took, 1), publish_timeout_s=2,
                   heartbeat_age_s=round(handler.consumer.heartbeat.age(), 2))
    assert statuses == ["succeeded"] * 4
    assert took < 10, "each publish waits at most its deadline, then goes out on a new connection"
    assert handler.consumer.heartbeat.age() < 1 and handler.consumer.stats.reconnects == 0


def test_the_handler_stops_soon_after_its_grace_while_its_replies_cannot_be_published(
        handlers, requester, proxy, fakekube, namespace, figures):
    handler = handlers.start(amqp_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F", publish_timeout_seconds=2)
    assert requester.wait_reply(requester.submit(job_request("scenario/succeed:0.1")))["data"]["status"] == "succeeded"
    proxy.silence(2)  # the publishing connection and every one opened after it
    requester.submit(job_request("scenario/succeed:0.1"))
    wait_until(lambda: len(fakekube.created_jobs(namespace)) == 2, "the second request's job exists")
    time.sleep(1)  # its reply is being published, into the silence
    started = time.monotonic()
    handler.stop(timeout=20)  # grace 2 s, then one publish deadline at most
    took = time.monotonic() - started
    figures.update(grace_s=2, publish_timeout_s=2, stopped_after_s=round(took, 1))
    assert took < 8
    requester.collect(0.5)
    assert requester.queue_depth() == 1  # left for redelivery, unanswered: never acked without its reply
