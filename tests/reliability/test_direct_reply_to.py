"""Replies to RabbitMQ's direct reply-to (Spring RabbitTemplate's default RPC style), by
what the broker really does. With ``mandatory``, RabbitMQ up to 4.1 returns a reply to
``amq.rabbitmq.reply-to.…`` as unroutable even as it delivers it (3.10 here), and 4.2+
never returns it; so the handler asks whether the requester is still there (a passive
declare of the name) and publishes without ``mandatory``. Over the real RabbitMQ.
"""

from __future__ import annotations

import json
import uuid

import pika
import pytest

from tests.reliability.test_broker_policy import FORGED_REPLY_TO, assert_queue_drained, served_within_seconds
from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.integration


class DirectRequester:
    """An RPC client as Spring's RabbitTemplate is one: it consumes ``amq.rabbitmq.reply-to``
    (no-ack) and publishes its request on the same channel, with that name as reply_to."""

    def __init__(self, amqp_url: str, queue: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        self.replies: list[dict] = []
        self.channel.basic_consume("amq.rabbitmq.reply-to", self._on_reply, auto_ack=True)
        self.queue = queue

    def _on_reply(self, _channel, _method, props, body) -> None:
        self.replies.append(dict(json.loads(body), _correlation_id=props.correlation_id))

    def submit(self, body: dict) -> str:
        correlation_id = uuid.uuid4().hex
        self.channel.basic_publish("mstc.exchange", self.queue, json.dumps(body).encode(), pika.BasicProperties(
            content_type="application/json", correlation_id=correlation_id, reply_to="amq.rabbitmq.reply-to"))
        return correlation_id

    def wait_reply(self, correlation_id: str, timeout: float = 20.0) -> dict:
        def arrived() -> bool:
            self.connection.process_data_events(0.1)
            return any(r["_correlation_id"] == correlation_id for r in self.replies)

        wait_until(arrived, f"the reply to {correlation_id} arrives", timeout=timeout)
        return next(r for r in self.replies if r["_correlation_id"] == correlation_id)

    def close(self) -> None:
        self.connection.close()


def dropped(handler, reason: str) -> float:
    return handler.consumer.metrics.value("cloud_worker_replies_dropped_total", reason=reason)


def test_a_reply_to_a_live_direct_reply_to_requester_arrives_and_is_not_counted_as_dropped(
        handlers, requester, queue_name, rabbitmq, figures):
    handler = handlers.start()
    client = DirectRequester(rabbitmq, queue_name)  # the work queue exists: the requester fixture declared it
    try:
        cid = client.submit(job_request("scenario/succeed:0.2"))
        reply = client.wait_reply(cid)
    finally:
        client.close()
    assert reply["data"]["status"] == "succeeded"
    assert_queue_drained(queue_name)
    assert handler.consumer.stats.replies_dropped == 0
    assert dropped(handler, "unroutable") == dropped(handler, "refused") == 0
    figures.update(replies=1, counted_as_dropped=0)


def test_a_reply_to_a_direct_reply_to_requester_that_left_is_dropped_as_unroutable(
        handlers, requester, queue_name, rabbitmq, fakekube, namespace):
    handler = handlers.start()
    client = DirectRequester(rabbitmq, queue_name)
    client.submit(job_request("scenario/hold"))
    wait_until(lambda: fakekube.created_jobs(namespace), "the job runs")
    client.close()  # the requester leaves while its job runs
    fakekube.finish(namespace, fakekube.created_jobs(namespace)[0])
    wait_until(lambda: handler.consumer.stats.replies_dropped == 1, "the reply is dropped")
    assert dropped(handler, "unroutable") == 1 and dropped(handler, "refused") == 0
    assert_queue_drained(queue_name)
    assert served_within_seconds(requester) < 15


@pytest.mark.parametrize("name, reason", [
    ("amq.rabbitmq.reply-to.not-a-name-the-broker-gave", "unroutable"),  # 404 NOT_FOUND to the passive declare
    (FORGED_REPLY_TO, "refused"),  # decodes to a node that does not exist: 541 INTERNAL_ERROR
])
def test_a_forged_direct_reply_to_name_costs_only_its_reply(handlers, requester, queue_name, name, reason):
    handler = handlers.start()
    requester.submit(job_request("scenario/succeed:0.2"), reply_to=name)
    good_after = served_within_seconds(requester)
    wait_until(lambda: handler.consumer.stats.replies_dropped == 1, "the forged reply is dropped")
    assert dropped(handler, reason) == 1
    assert_queue_drained(queue_name)
    assert handler.consumer.stats.reconnects == 0 and good_after < 15


def test_forged_names_answered_at_the_same_moment_as_a_live_one_cost_only_their_own_replies(
        handlers, requester, queue_name, rabbitmq, fakekube, namespace):
    """The broker answers a forged name by closing the connection that asked, and every
    question on it dies with it: only a name asked alone is taken as refused."""
    handler = handlers.start(concurrency=5)
    client = DirectRequester(rabbitmq, queue_name)
    try:
        for _ in range(4):
            requester.submit(job_request("scenario/hold"), reply_to=FORGED_REPLY_TO)
        cid = client.submit(job_request("scenario/hold"))
        wait_until(lambda: len(fakekube.created_jobs(namespace)) == 5, "the five jobs run")
        for name in fakekube.created_jobs(namespace):  # all at once: their replies go out together
            fakekube.finish(namespace, name)
        assert client.wait_reply(cid, timeout=60)["data"]["status"] == "succeeded"
        wait_until(lambda: handler.consumer.stats.replies_dropped == 4, "the forged replies are dropped", timeout=60)
    finally:
        client.close()
    assert dropped(handler, "refused") == 4 and dropped(handler, "unroutable") == 0
    assert_queue_drained(queue_name)
