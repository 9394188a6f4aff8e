"""The RabbitMQ adapter: the only module that imports ``pika``.

pika's ``BlockingConnection`` belongs to the thread that drives it. ``Link`` hides
that rule (dramatiq's RabbitMQ broker does the same): the owning thread pumps the
connection, any other thread hands work over with ``call(fn)`` and blocks for the
result, and a lost connection fails every pending call at once. Every exception pika
can raise on a connection or channel (``AMQPError``, socket errors, and the
``ValueError``/``AssertionError``/``RuntimeError`` some of its internals raise once
the connection is gone) becomes a ``BrokerError`` here, with its cause kept.

``Broker`` is the handler's side: it consumes the work queue on one connection and
publishes replies on a second one, with publisher confirms and ``mandatory``. A
publish the broker punishes by closing the connection (a forged direct reply-to name
answers 541) then costs only the publishing connection, never the deliveries in
flight; ``settle`` publishes a request's replies and only then acks, nacks or rejects
it. ``ClientLink`` is the client's side: one connection, the work queue and an
exclusive reply queue, driven by a background thread.

The work queue is declared exactly as the seed's Python client declares it (durable,
no arguments) and bound to the direct exchange by its own name, or the broker would
refuse one of the two declarations.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from handler.core.config import Settings, redact_url
from handler.core.errors import BrokerError, ConfigError, ReplyRefused, ReplyUndeliverable
from handler.core.messages import Message, Publication

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Everything pika raises on a connection or channel that is failing or gone. Besides
#: its own ``AMQPError`` tree and socket errors, pika raises ``ValueError`` ("Timeout
#: closed before call"), ``AssertionError`` and ``RuntimeError`` from its internals when
#: the connection closed under a call; none of them may escape the consume loop.
PIKA_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPError, OSError, ValueError, AssertionError, RuntimeError, AttributeError,
)
#: AMQP heartbeat, in seconds: short enough to notice a dead broker within a minute
#: even while every worker thread is busy following a Job.
HEARTBEAT = 30
#: Seconds a cross-thread call waits for the connection's thread.
CALL_TIMEOUT = 60.0
#: Seconds a delivery stays unacked after its Job's deadline and slack: reading the log
#: tail, publishing the reply and waiting for its confirm.
CONSUMER_TIMEOUT_MARGIN = 60
#: ``connection.close`` code of an operator's ``rabbitmqctl close_connection`` or a broker
#: shutting down: the connection's trouble, not a refusal of the message being published.
CONNECTION_FORCED = 320
#: Seconds the publishing connection may sit idle before it is reopened rather than
#: trusted: nothing pumps it (no heartbeats), and a middlebox may have dropped it silently.
PUBLISHER_IDLE_SECONDS = 30.0
#: The handlers' connections carry this name (tools and tests look for them).
CONNECTION_NAME = "mstc-cloud-worker"


class Settle(enum.Enum):
    """What to do with a delivery once its publications are confirmed."""

    ACK = "ack"
    REQUEUE = "requeue"
    REJECT = "reject"


def connect(url: str, name: str, *, heartbeat: int = HEARTBEAT, timeout: float | None = None) -> pika.BlockingConnection:
    """A new connection, or ``ConfigError`` (bad URL) / ``BrokerError`` (unreachable)."""
    try:
        params = pika.URLParameters(url)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{redact_url(url)!r} is not a valid AMQP URL: {exc}") from exc
    params.heartbeat = heartbeat
    params.blocked_connection_timeout = 60
    params.client_properties = {"connection_name": name}
    if timeout is not None:
        params.connection_attempts = 1
        params.socket_timeout = params.stack_timeout = timeout
    try:
        return pika.BlockingConnection(params)
    except PIKA_ERRORS as exc:
        raise BrokerError(f"cannot connect to the broker at {redact_url(url)}: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    """A pika error as one readable phrase (its repr is a tuple of codes)."""
    if isinstance(exc, pika.exceptions.ConnectionClosed | pika.exceptions.ChannelClosed):
        return f"{exc.reply_code} {exc.reply_text}"
    if isinstance(exc, pika.exceptions.AMQPConnectionError) and exc.args:
        return f"{type(exc).__name__}: {exc.args[0]!r}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def declare_work_queue(connection: pika.BlockingConnection, exchange: str, queue_name: str) -> BlockingChannel:
    """Declare the exchange (if missing) and the work queue, bind them; an open channel.

    The exchange is used as whoever declared it first did, and created durable and
    direct (as Spring AMQP's ``DirectExchange`` does) when nobody has."""
    channel = connection.channel()
    try:
        channel.exchange_declare(exchange, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        channel = connection.channel()  # a 404 closes the channel: declare on a new one
        channel.exchange_declare(exchange, exchange_type="direct", durable=True)
    channel.queue_declare(queue_name, durable=True)
    channel.queue_bind(queue_name, exchange, routing_key=queue_name)
    return channel


def consumer_timeout_supported(version: Any) -> bool:
    """The broker honours a consumer's own ``x-consumer-timeout``: RabbitMQ 3.12 and
    later, and 3.11.15+ where it was backported. Older brokers apply only their global
    ``consumer_timeout`` (30 minutes by default)."""
    text = version.decode("ascii", "replace") if isinstance(version, bytes) else str(version or "")
    numbers = tuple(int(n) for n in re.findall(r"\d+", text)[:3])
    return numbers >= (3, 12) or (3, 11, 15) <= numbers < (3, 12)


def longest_delivery_seconds(settings: Settings) -> float:
    """How long one delivery may stay unacked: the longest Job a request may ask for,
    the slack past its deadline, and the time to reply."""
    return settings.max_timeout_minutes * 60 + settings.deadline_slack_seconds + CONSUMER_TIMEOUT_MARGIN


def consumer_arguments(server_version: Any, settings: Settings) -> dict[str, int] | None:
    """Consumer arguments: where supported, a delivery-ack timeout covering the longest Job
    a request may ask for, so the broker never takes back a delivery whose Job is still
    running. (One consumer serves every request, so it is the longest, not each Job's.)"""
    if not consumer_timeout_supported(server_version):
        return None
    return {"x-consumer-timeout": math.ceil(longest_delivery_seconds(settings) * 1000)}


class _Call:
    """One handed-over call: run once on the connection's thread, or failed (the
    connection was lost, the caller gave up waiting), never both."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._claim = threading.Lock()
        self._claimed = False

    def _take(self) -> bool:
        with self._claim:
            taken, self._claimed = not self._claimed, True
            return taken

    def run(self) -> None:
        if not self._take():
            return  # failed already: the caller was told, so it must not happen now
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            self.error = exc
        self.done.set()

    def fail(self, error: BaseException) -> None:
        if self._take():
            self.error = error
            self.done.set()


class Link:
    """One connection and the thread that owns it. The owner calls ``pump`` (or consumes);
    other threads use ``call``. When the connection is lost, ``lost`` fails every
    pending call at once with the reason."""

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self.connection = connection
        self._owner: int | None = threading.get_ident()
        self._lock = threading.Lock()
        self._pending: set[_Call] = set()
        self._lost: BrokerError | None = None

    def adopt(self) -> None:
        """The calling thread drives the connection from now on."""
        self._owner = threading.get_ident()

    def hand_over(self) -> None:
        """No thread drives the connection until one ``adopt``s it: calls made meanwhile
        wait for it rather than run on the caller's thread."""
        self._owner = None

    @property
    def is_open(self) -> bool:
        return self._lost is None and self.connection.is_open

    def call(self, fn: Callable[[], T], what: str, timeout: float = CALL_TIMEOUT) -> T:
        """Run ``fn`` on the connection's thread and return its result; pika errors (and
        a lost connection) raise ``BrokerError``, other exceptions pass through."""
        if threading.get_ident() == self._owner:
            return self._translated(fn, what)
        pending = _Call(fn)
        with self._lock:
            if self._lost is not None:
                raise BrokerError(f"{what}: {self._lost}") from self._lost
            self._pending.add(pending)
        try:
            try:
                self.connection.add_callback_threadsafe(pending.run)
            except PIKA_ERRORS as exc:
                raise BrokerError(f"{what}: the broker connection is gone ({describe(exc)})") from exc
            if not pending.done.wait(timeout):
                pending.fail(BrokerError(f"{what}: the connection's thread did not answer within {timeout:g} s"))
                pending.done.wait()  # it started just now: its own result stands
        finally:
            with self._lock:
                self._pending.discard(pending)
        if pending.error is not None:
            if isinstance(pending.error, BrokerError) or not isinstance(pending.error, PIKA_ERRORS):
                raise pending.error
            raise BrokerError(f"{what}: {describe(pending.error)}") from pending.error
        return pending.result

    def _translated(self, fn: Callable[[], T], what: str) -> T:
        try:
            return fn()
        except PIKA_ERRORS as exc:
            raise BrokerError(f"{what}: {describe(exc)}") from exc

    def pump(self, seconds: float) -> None:
        """Run I/O and handed-over calls for a while (owner thread only)."""
        try:
            self.connection.process_data_events(time_limit=seconds)
        except PIKA_ERRORS as exc:
            raise self.lost(exc) from exc

    def lost(self, exc: BaseException) -> BrokerError:
        """Record the connection as lost and fail every pending call with the reason."""
        error = exc if isinstance(exc, BrokerError) else BrokerError(f"connection lost: {describe(exc)}")
        with self._lock:
            self._lost = self._lost or error
            pending, self._pending = list(self._pending), set()
        for call in pending:
            call.fail(error)
        return error

    def close(self) -> None:
        """Close the connection (unacked deliveries go back to the queue)."""
        try:
            if self.connection.is_open:
                self.connection.close()
        except PIKA_ERRORS as exc:
            log.debug("while closing: %s", describe(exc))
        self.lost(BrokerError("the connection was closed"))


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


def _properties(pub: Publication) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=pub.content_type or None,
        correlation_id=pub.correlation_id,
        message_id=pub.message_id,
        reply_to=pub.reply_to,
        headers=dict(pub.headers) or None,
        delivery_mode=pika.DeliveryMode.Persistent,
        expiration=str(math.ceil(pub.expiration_seconds * 1000)) if pub.expiration_seconds else None,
    )


def _publish(channel: BlockingChannel, pub: Publication) -> None:
    """Publish with confirms and ``mandatory`` on a confirming channel; our errors."""
    try:
        channel.basic_publish(pub.exchange, pub.routing_key, pub.body, _properties(pub), mandatory=True)
    except pika.exceptions.UnroutableError as exc:
        raise ReplyUndeliverable(f"no queue for routing key {pub.routing_key!r}") from exc
    except pika.exceptions.NackError as exc:
        raise ReplyRefused(f"the broker refused the message to {pub.routing_key!r}") from exc
    except (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker) as exc:
        if isinstance(exc, pika.exceptions.ConnectionClosedByBroker) and exc.reply_code == CONNECTION_FORCED:
            raise BrokerError(f"publishing to {pub.routing_key!r}: {describe(exc)}") from exc
        # Closed in answer to this very publish (a forged direct reply-to name: 541): a refusal.
        raise ReplyRefused(f"the broker closed the connection rather than take the message to "
                           f"{pub.routing_key!r}: {describe(exc)}") from exc
    except PIKA_ERRORS as exc:
        raise BrokerError(f"publishing to {pub.routing_key!r}: {describe(exc)}") from exc


class Publisher:
    """A connection of its own for publishing (replies, dead-letter copies, retries),
    used by any thread under a lock and reopened on demand. Heartbeats are off: it is
    idle between publishes and nobody pumps it, so a dead one is found (and replaced)
    by the next publish."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._used = 0.0

    def publish(self, pub: Publication) -> None:
        with self._lock:
            channel = self._open_channel()
            try:
                _publish(channel, pub)
            except (BrokerError, ReplyRefused):
                self._drop()  # a refusal may have closed the channel; start afresh next time
                raise
            finally:
                self._used = time.monotonic()

    def _open_channel(self) -> BlockingChannel:
        fresh = time.monotonic() - self._used < PUBLISHER_IDLE_SECONDS
        if fresh and self._channel is not None and self._channel.is_open:
            return self._channel
        self._drop()
        self._connection = connect(self.settings.amqp_url, f"{CONNECTION_NAME}-publisher", heartbeat=0,
                                   timeout=10.0)
        try:
            self._channel = self._connection.channel()
            self._channel.confirm_delivery()
        except PIKA_ERRORS as exc:
            self._drop()
            raise BrokerError(f"opening a publishing channel: {describe(exc)}") from exc
        return self._channel

    def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        try:
            if connection is not None and connection.is_open:
                connection.close()
        except PIKA_ERRORS as exc:
            log.debug("while closing the publisher: %s", describe(exc))

    def close(self) -> None:
        with self._lock:
            self._drop()


class Broker:
    """The handler's broker: consume on one connection, publish on another."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.generation = 0
        self.server_version = ""
        self._link: Link | None = None
        self._channel: BlockingChannel | None = None
        self._consumer_arguments: dict[str, int] | None = None
        self.publisher = Publisher(settings)

    # --- connection (on the consuming thread)
    def connect(self) -> None:
        connection = connect(self.settings.amqp_url, CONNECTION_NAME)
        try:
            channel = self._declare_topology(connection)
            channel.basic_qos(prefetch_count=self.settings.concurrency)
        except PIKA_ERRORS as exc:
            Link(connection).close()
            raise BrokerError(f"declaring {self.settings.queue}: {describe(exc)}") from exc
        # The generation first: a settle racing this sees a new generation or the old link, never a mix.
        self.generation += 1
        self._channel, self._link = channel, Link(connection)
        properties = connection._impl.server_properties or {}  # noqa: SLF001 - pika keeps them there
        version = properties.get("version") or ""
        self.server_version = version.decode("ascii", "replace") if isinstance(version, bytes) else str(version)
        self._consumer_arguments = consumer_arguments(self.server_version, self.settings)
        log.info("connected to %s (RabbitMQ %s), consuming %s; delivery timeout: %s",
                 redact_url(self.settings.amqp_url), self.server_version or "?", self.settings.queue,
                 f"{self._consumer_arguments['x-consumer-timeout']} ms (x-consumer-timeout)"
                 if self._consumer_arguments else "the broker's consumer_timeout (x-consumer-timeout needs 3.12+)")

    def _declare_topology(self, connection: pika.BlockingConnection) -> BlockingChannel:
        s = self.settings
        channel = declare_work_queue(connection, s.exchange, s.queue)
        if s.dead_letter_queue:
            channel.queue_declare(s.dead_letter_queue, durable=True)
        return channel

    @property
    def honours_consumer_timeout(self) -> bool:
        return self._consumer_arguments is not None

    @property
    def is_open(self) -> bool:
        return bool(self._link and self._link.is_open and self._channel and self._channel.is_open)

    def close(self) -> None:
        """Close channel then connection; unacked deliveries go back to the queue."""
        link, channel, self._link, self._channel = self._link, self._channel, None, None
        try:
            if channel is not None and channel.is_open:
                channel.close()
        except PIKA_ERRORS as exc:
            log.debug("while closing the channel: %s", describe(exc))
        if link is not None:
            link.close()

    def close_publisher(self) -> None:
        self.publisher.close()

    # --- consuming (on the connection's thread only)
    def deliveries(self, inactivity_timeout: float) -> Iterator[Delivery | None]:
        """Deliveries as they come; ``None`` after each ``inactivity_timeout`` seconds of quiet.
        A lost connection raises ``BrokerError`` and fails every pending ``call``."""
        link, channel = self._require()
        try:
            for method, props, body in channel.consume(self.settings.queue, inactivity_timeout=inactivity_timeout,
                                                       arguments=self._consumer_arguments):
                if method is None:
                    yield None
                else:
                    yield Delivery(_message(props, body), method.delivery_tag, method.redelivered, self.generation)
        except PIKA_ERRORS as exc:
            raise link.lost(exc) from exc

    def stop_consuming(self) -> None:
        """Stop deliveries; what was delivered and not yet acked stays ours until close."""
        link, channel = self._require()
        try:
            if channel.is_open:
                channel.cancel()
        except PIKA_ERRORS as exc:
            raise link.lost(exc) from exc

    def pump(self, seconds: float) -> None:
        """Run I/O and handed-over calls for a while (after consuming stopped)."""
        link, _ = self._require()
        link.pump(seconds)

    def wake(self) -> None:
        """End the owner's current pump early (from any thread); a closed link is fine."""
        link = self._link
        if link is not None:
            try:
                link.connection.add_callback_threadsafe(lambda: None)
            except PIKA_ERRORS:
                pass  # the connection is gone: the loop is not pumping either

    def _require(self) -> tuple[Link, BlockingChannel]:
        if self._link is None or self._channel is None:
            raise BrokerError("not connected")
        return self._link, self._channel

    # --- from any thread
    def publish(self, pub: Publication) -> None:
        """Publish on the publishing connection and wait for the broker's confirm.
        ``ReplyUndeliverable`` (no such queue), ``ReplyRefused`` (nacked), ``BrokerError``."""
        self.publisher.publish(pub)

    def settle(self, delivery: Delivery, how: Settle) -> None:
        """Ack, requeue or reject (without requeue) a delivery on the connection that
        delivered it; ``BrokerError`` if that connection is gone (the broker has taken the
        delivery back and will redeliver it)."""
        link, channel = self._require()
        if delivery.generation != self.generation:
            raise BrokerError("the delivery belongs to a closed connection; the broker redelivers it")
        tag = delivery.delivery_tag

        def on_connection_thread() -> None:
            if how is Settle.ACK:
                channel.basic_ack(tag)
            else:
                channel.basic_nack(tag, requeue=how is Settle.REQUEUE)

        link.call(on_connection_thread, f"{how.value} of delivery {tag}")


class ClientLink:
    """The client's connection: the work queue to publish to and an exclusive,
    auto-named reply queue, driven by a background thread. Replies are handed to
    ``on_reply(correlation_id, event)``; ``on_lost(error)`` is told when it ends."""

    def __init__(self, amqp_url: str, exchange: str, routing_key: str, *, timeout: float,
                 on_reply: Callable[[str, dict[str, Any]], None], on_lost: Callable[[BaseException], None]) -> None:
        self.exchange, self.routing_key = exchange, routing_key
        # Not "mstc-cloud-worker": that names the handlers' connections (tools and tests look for them).
        connection = connect(amqp_url, "cloud-worker-client", timeout=timeout)
        try:
            self.channel = declare_work_queue(connection, exchange, routing_key)
            self.channel.confirm_delivery()
            self.reply_queue = self.channel.queue_declare("", exclusive=True).method.queue
            self.channel.basic_consume(self.reply_queue, self._on_message, auto_ack=True)
        except PIKA_ERRORS as exc:
            Link(connection).close()
            raise BrokerError(f"cannot set up the client's queues: {describe(exc)}") from exc
        self.timeout = timeout
        self._on_reply, self._on_lost = on_reply, on_lost
        self._link = Link(connection)
        self._link.hand_over()  # driven by the thread below from its first pump on
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cloud-worker-client", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._link.is_open

    def publish(self, pub: Publication) -> None:
        """Publish a request (confirmed by the broker) from any thread."""
        self._link.call(lambda: _publish(self.channel, pub), f"publishing to {pub.routing_key}", self.timeout)

    def _on_message(self, _channel: Any, _method: Any, props: pika.BasicProperties, body: bytes) -> None:
        try:
            event = json.loads(body)
        except ValueError:
            log.warning("dropping a reply for %s that is not JSON: %r", props.correlation_id, body[:200])
            return
        if isinstance(event, dict):
            self._on_reply(props.correlation_id or "", event)

    def _loop(self) -> None:
        self._link.adopt()
        reason: BaseException = BrokerError("the client was closed")
        try:
            while not self._closing.is_set():
                self._link.pump(0.2)
        except BrokerError as exc:
            reason = exc
            log.warning("broker connection lost: %s", exc)
        finally:
            self._link.close()
            self._on_lost(reason)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(self.timeout)


def delete_queue(amqp_url: str, queue_name: str) -> None:
    """Delete a throwaway queue (the demo's own work queue) once nothing uses it."""
    connection = connect(amqp_url, "cloud-worker-demo", timeout=10.0)
    link = Link(connection)
    try:
        link.call(lambda: connection.channel().queue_delete(queue_name), f"deleting queue {queue_name}")
    finally:
        link.close()

