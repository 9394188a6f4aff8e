"""A test client that behaves like the seed's Python client: publish a request to
``mstc.exchange`` with ``reply_to`` and ``correlation_id``, read replies with
``json.loads(body)``."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pika

SEED_REQUEST = {
    "image": "mstc/python-test:latest",
    "jobName": "test-job",
    "inputBucketUrl": "http://hostname:9000/bucket",
}


class Requester:
    def __init__(self, amqp_url: str, queue: str, exchange: str = "mstc.exchange",
                 queue_arguments: dict | None = None) -> None:
        self.queue = queue
        self.exchange = exchange
        self.connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.connection.channel()
        # The seed client's declaration, verbatim: durable, no arguments (a quorum queue
        # must be declared with its own, or RabbitMQ refuses the declaration).
        self.channel.queue_declare(queue=queue, durable=True, arguments=queue_arguments)
        self.channel.exchange_declare(exchange, exchange_type="direct", durable=True)
        self.channel.queue_bind(queue, exchange, routing_key=queue)
        self.reply_queue = self.channel.queue_declare(queue="", exclusive=True).method.queue
        self.replies: list[dict[str, Any]] = []
        self.raw: list[tuple[pika.BasicProperties, bytes]] = []

    def publish(self, body: Any, *, correlation_id: str | None = "auto", reply_to: str | None = "auto",
                content_type: str | None = "application/json", headers: dict | None = None,
                message_id: str | None = None, expiration: str | None = None) -> str | None:
        if correlation_id == "auto":
            correlation_id = uuid.uuid4().hex
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        props = pika.BasicProperties(
            content_type=content_type, correlation_id=correlation_id, message_id=message_id, headers=headers,
            reply_to=self.reply_queue if reply_to == "auto" else reply_to, delivery_mode=2, expiration=expiration,
        )
        self.channel.basic_publish(self.exchange, self.queue, raw, props)
        return correlation_id

    def submit(self, body: Any = None, **kwargs: Any) -> str | None:
        return self.publish(SEED_REQUEST if body is None else body, **kwargs)

    def collect(self, seconds: float) -> None:
        """Read whatever replies arrive within ``seconds``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            method, props, body = self.channel.basic_get(self.reply_queue, auto_ack=True)
            if method is None:
                self.connection.process_data_events(time_limit=0.05)
                continue
            self.raw.append((props, body))
            reply = json.loads(body)
            reply["_correlation_id"] = props.correlation_id
            self.replies.append(reply)

    def replies_for(self, correlation_id: str) -> list[dict[str, Any]]:
        return [r for r in self.replies if r["_correlation_id"] == correlation_id]

    def terminal_replies_for(self, correlation_id: str) -> list[dict[str, Any]]:
        return [r for r in self.replies_for(correlation_id)
                if r["data"]["status"] not in ("accepted", "started")]

    def wait_reply(self, correlation_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """The first terminal reply for ``correlation_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.terminal_replies_for(correlation_id)
            if found:
                return found[0]
            self.collect(0.1)
        raise AssertionError(f"no terminal reply for {correlation_id} within {timeout} s; got {self.replies}")

    def wait_replies(self, correlation_id: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The first ``count`` terminal replies for ``correlation_id``."""
        deadline = time.monotonic() + timeout
        while len(self.terminal_replies_for(correlation_id)) < count and time.monotonic() < deadline:
            self.collect(0.1)
        found = self.terminal_replies_for(correlation_id)
        assert len(found) >= count, f"{len(found)} of {count} replies for {correlation_id} within {timeout} s"
        return found[:count]

    def queue_depth(self, queue: str | None = None) -> int:
        return self.channel.queue_declare(queue=queue or self.queue, passive=True).method.message_count

    def get_one(self, queue: str) -> tuple[pika.BasicProperties, bytes] | None:
        method, props, body = self.channel.basic_get(queue, auto_ack=True)
        return None if method is None else (props, body)

    def close(self) -> None:
        try:
            self.connection.close()
        except pika.exceptions.AMQPError:
            pass
