"""Quorum queues, RabbitMQ's recommended type for data safety: queues that exist are used
as they are, whatever their type; the operator chooses the type of the queues the
handler creates (``CLOUD_WORKER_QUEUE_TYPE``); and a declaration the broker refuses is a
configuration error naming the queue, never "the broker is unreachable". Over the real
RabbitMQ (its management API says what a queue is).
"""

from __future__ import annotations

import subprocess
import uuid
from urllib.parse import quote

import pika
import pytest
import requests

from handler.core.exitcodes import ExitCode
from tests.support.requester import Requester
from tests.support.waiting import job_request

pytestmark = pytest.mark.integration

QUORUM = {"x-queue-type": "quorum"}
MANAGEMENT = "http://127.0.0.1:15672/api"


def queue_info(name: str) -> dict:
    """The broker's own description of a queue (type, arguments), from its management API."""
    response = requests.get(f"{MANAGEMENT}/queues/%2F/{quote(name, safe='')}", auth=("guest", "guest"), timeout=10)
    response.raise_for_status()
    return response.json()


def declare(amqp_url: str, name: str, arguments: dict) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    connection.channel().queue_declare(name, durable=True, arguments=arguments)
    connection.close()


def delete(amqp_url: str, *names: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    for name in names:
        channel.queue_delete(name)
    connection.close()


def test_existing_quorum_queues_are_used_as_they_are(handlers, rabbitmq, queue_name, figures):
    dlq = f"test.{uuid.uuid4().hex[:8]}.dead"
    declare(rabbitmq, queue_name, QUORUM)
    declare(rabbitmq, dlq, QUORUM)
    client = Requester(rabbitmq, queue_name, queue_arguments=QUORUM)
    try:
        handler = handlers.start(dead_letter_queue=dlq)  # the default type, classic, is only for creating
        good = client.submit(job_request("scenario/succeed:0.2"))
        bad = client.publish(b"not json")
        assert client.wait_reply(good)["data"]["status"] == "succeeded"
        assert client.wait_reply(bad)["data"]["status"] == "rejected"
        assert client.queue_depth(dlq) == 1
        assert handler.thread.is_alive() and handler.consumer.stats.reconnects == 0
    finally:
        client.close()
    assert queue_info(queue_name)["type"] == queue_info(dlq)["type"] == "quorum"
    figures.update(queue_type="quorum", existing=True, replies=2)


def test_the_operator_chooses_quorum_for_the_queues_the_handler_creates(handlers, rabbitmq, queue_name):
    dlq = f"test.{uuid.uuid4().hex[:8]}.dead"
    handler = handlers.start(queue_type="quorum", delivery_limit=7, dead_letter_queue=dlq)
    client = Requester(rabbitmq, queue_name, queue_arguments=dict(QUORUM, **{"x-delivery-limit": 7}))
    try:
        cid = client.submit(job_request("scenario/succeed:0.2"))
        assert client.wait_reply(cid)["data"]["status"] == "succeeded"
    finally:
        client.close()
    for name in (queue_name, dlq):
        info = queue_info(name)
        assert (info["type"], info["arguments"]["x-delivery-limit"]) == ("quorum", 7)
    assert handler.consumer.stats.reconnects == 0


def test_a_declaration_the_broker_refuses_stops_the_handler_as_a_configuration_error(handlers, rabbitmq, queue_name):
    """A user who may not create the work queue (403 ACCESS_REFUSED): exit 3 at once with
    a line naming the queue, not six attempts and exit 4 "broker unreachable"."""
    user, password = f"test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    rabbitmqctl = ["rabbitmqctl", "-q"]
    subprocess.run([*rabbitmqctl, "add_user", user, password], check=True, capture_output=True, timeout=60)
    try:
        # May use the exchange, may not configure (declare) anything named test.*
        subprocess.run([*rabbitmqctl, "set_permissions", "-p", "/", user, "^mstc\\.exchange$", ".*", ".*"],
                       check=True, capture_output=True, timeout=60)
        url = rabbitmq.replace("guest:guest@", f"{user}:{password}@")
        proc = handlers.spawn(amqp_url=url)
        assert proc.wait(60) == ExitCode.CONFIG
        log = handlers.log_of()
        assert queue_name in log and "403" in log and "ACCESS_REFUSED" in log
        assert "unreachable" not in log
    finally:
        subprocess.run([*rabbitmqctl, "delete_user", user], capture_output=True, timeout=60)
