"""The RabbitMQ adapter: the only module that imports ``pika``.

One ``BlockingConnection`` owned by the consuming thread. Worker threads never touch
the channel: they hand publish-then-ack work back with ``add_callback_threadsafe``
(dramatiq's pattern). Replies are published with publisher confirms and
``mandatory=True``, so an ack is only ever sent after the broker holds the reply.

The work queue is declared exactly as the seed's Python client declares it (durable,
no arguments), otherwise the broker would refuse one of the two declarations.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator
from typing import Any
from dataclasses import dataclass

import pika
import pika.exceptions

from handler.core.config import Settings, redact_url
from handler.core.errors import BrokerError, ConfigError, ReplyUndeliverable
from handler.core.messages import Message, Publication
from handler.adapters.topology import declare_work_queue

log = logging.getLogger(__name__)

#: AMQP heartbeat, in seconds: short enough to notice a dead broker within a minute
#: even while every worker thread is busy following a Job.
HEARTBEAT = 30
PIKA_ERRORS = (pika.exceptions.AMQPError, OSError)
#: Seconds a delivery stays unacked after its Job's deadline and slack: reading the log
#: tail, publishing the reply and waiting for its confirm.
CONSUMER_TIMEOUT_MARGIN = 60


def consumer_timeout_supported(version: Any) -> bool:
    """The broker honours a consumer's own ``x-consumer-timeout``: RabbitMQ 3.12 and
    later, and 3.11.15+ where it was backported. Older brokers apply only their global
    ``consumer_timeout`` (30 minutes by default)."""
    text = version.decode("ascii", "replace") if isinstance(version, bytes) else str(version or "")
    numbers = tuple(int(n) for n in re.findall(r"\d+", text)[:3])
    return numbers >= (3, 12) or (3, 11, 15) <= numbers < (3, 12)


def consumer_arguments(server_version: Any, settings: Settings) -> dict[str, int] | None:
    """Consumer arguments: where supported, a delivery-ack timeout covering the longest Job
    a request may ask for, so the broker never takes back a delivery whose Job is still
    running. (One consumer serves every request, so it is the longest, not each Job's.)"""
    if not consumer_timeout_supported(server_version):
        return None
    seconds = settings.max_timeout_minutes * 60 + settings.deadline_slack_seconds + CONSUMER_TIMEOUT_MARGIN
    return {"x-consumer-timeout": math.ceil(seconds * 1000)}


@dataclass(frozen=True)
class Delivery:
    message: Message
    delivery_tag: int
    redelivered: bool
    #: Which connection delivered it: a tag is meaningless on any other connection.
    generation: int


def _message(props: pika.BasicProperties, body: bytes) -> Message:
    return Message(
        body=body,
        content_type=props.content_type,
        headers=dict(props.headers or {}),
        message_id=props.message_id,
        correlation_id=props.correlation_id,
        reply_to=props.reply_to,
    )


class Broker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.generation = 0
        self._connection: pika.BlockingConnection | None = None
        self._channel = None
        self.server_version = ""
        self._consumer_arguments: dict[str, int] | None = None

    # --- connection
    def connect(self) -> None:
        try:
            params = pika.URLParameters(self.settings.amqp_url)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"CLOUD_WORKER_AMQP_URL is not a valid AMQP URL: {exc}") from exc
        params.heartbeat = HEARTBEAT
        params.blocked_connection_timeout = 60
        params.client_properties = {"connection_name": "mstc-cloud-worker"}
        try:
            self._connection = pika.BlockingConnection(params)
            self._channel = self._declare_topology()
            self._channel.basic_qos(prefetch_count=self.settings.concurrency)
            self._channel.confirm_delivery()
        except PIKA_ERRORS as exc:
            self.close()
            raise BrokerError(f"cannot connect to {redact_url(self.settings.amqp_url)}: {exc!r}") from exc
        self.generation += 1
        properties = self._connection._impl.server_properties or {}  # noqa: SLF001 - pika keeps them there
        version = properties.get("version") or ""
        self.server_version = version.decode("ascii", "replace") if isinstance(version, bytes) else str(version)
        self._consumer_arguments = consumer_arguments(self.server_version, self.settings)
        log.info("connected to %s (RabbitMQ %s), consuming %s; delivery timeout: %s",
                 redact_url(self.settings.amqp_url), self.server_version or "?", self.settings.queue,
                 f"{self._consumer_arguments['x-consumer-timeout']} ms (x-consumer-timeout)"
                 if self._consumer_arguments else "the broker's consumer_timeout (x-consumer-timeout needs 3.12+)")

    def _declare_topology(self):
        s = self.settings
        channel = declare_work_queue(self._connection, s.exchange, s.queue)
        if s.dead_letter_queue:
            channel.queue_declare(s.dead_letter_queue, durable=True)
        return channel

    @property
    def is_open(self) -> bool:
        return bool(self._connection and self._connection.is_open and self._channel and self._channel.is_open)

    def close(self) -> None:
        """Close channel then connection; unacked deliveries go back to the queue."""
        for thing in (self._channel, self._connection):
            try:
                if thing is not None and thing.is_open:
                    thing.close()
            except PIKA_ERRORS as exc:
                log.debug("while closing: %r", exc)
        self._channel = self._connection = None

    # --- consuming (on the connection's thread only)
    def deliveries(self, inactivity_timeout: float) -> Iterator[Delivery | None]:
        """Deliveries as they come; ``None`` after each ``inactivity_timeout`` seconds of quiet."""
        try:
            for method, props, body in self._channel.consume(self.settings.queue, inactivity_timeout=inactivity_timeout,
                                                             arguments=self._consumer_arguments):
                if method is None:
                    yield None
                else:
                    yield Delivery(_message(props, body), method.delivery_tag, method.redelivered, self.generation)
        except PIKA_ERRORS as exc:
            raise BrokerError(f"consuming {self.settings.queue}: {exc!r}") from exc

    def stop_consuming(self) -> None:
        """Stop deliveries; what was delivered and not yet acked stays ours until close."""
        try:
            if self._channel is not None and self._channel.is_open:
                self._channel.cancel()
        except PIKA_ERRORS as exc:
            raise BrokerError(f"cancelling consumer: {exc!r}") from exc

    def pump(self, seconds: float) -> None:
        """Run I/O and thread-safe callbacks for a while (after consuming stopped)."""
        try:
            self._connection.process_data_events(time_limit=seconds)
        except PIKA_ERRORS as exc:
            raise BrokerError(f"connection lost: {exc!r}") from exc

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the connection's thread (from any thread)."""
        try:
            self._connection.add_callback_threadsafe(fn)
        except (AttributeError, *PIKA_ERRORS) as exc:
            raise BrokerError(f"connection gone: {exc!r}") from exc

    # --- on the connection's thread
    def publish(self, pub: Publication) -> None:
        props = pika.BasicProperties(
            content_type=pub.content_type or None,
            correlation_id=pub.correlation_id,
            headers=dict(pub.headers) or None,
            delivery_mode=pika.DeliveryMode.Persistent,
        )
        try:
            self._channel.basic_publish(pub.exchange, pub.routing_key, pub.body, props, mandatory=True)
        except pika.exceptions.UnroutableError as exc:
            raise ReplyUndeliverable(f"no queue for routing key {pub.routing_key!r}") from exc
        except pika.exceptions.NackError as exc:
            raise BrokerError(f"broker refused message to {pub.routing_key!r}") from exc
        except PIKA_ERRORS as exc:
            raise BrokerError(f"publishing to {pub.routing_key!r}: {exc!r}") from exc

    def ack(self, delivery: Delivery) -> None:
        self._settle(delivery, lambda tag: self._channel.basic_ack(tag))

    def requeue(self, delivery: Delivery) -> None:
        self._settle(delivery, lambda tag: self._channel.basic_nack(tag, requeue=True))

    def _settle(self, delivery: Delivery, how: Callable[[int], None]) -> None:
        if delivery.generation != self.generation or not self.is_open:
            raise BrokerError("delivery belongs to a closed connection; the broker will redeliver it")
        try:
            how(delivery.delivery_tag)
        except PIKA_ERRORS as exc:
            raise BrokerError(f"settling delivery: {exc!r}") from exc
