"""The RabbitMQ adapter's consuming side, its topology, and the client's link: with
``amqp_wire`` and ``publisher``, the only modules that import ``pika``.

pika's ``BlockingConnection`` belongs to the thread that drives it. ``Link`` hides
that rule (dramatiq's RabbitMQ broker does the same): the owning thread pumps the
connection, any other thread hands work over with ``call(fn)`` and blocks for the
result, and a lost connection fails every pending call at once. Every exception pika
can raise on a connection or channel becomes a ``BrokerError`` here, with its cause kept.

``Broker`` is the handler's side: it consumes the work queue on one connection and
publishes on a second one (``publisher.Publisher``). ``settle`` acks, nacks or rejects a
delivery; an ack is followed by a synchronous round trip on the same channel, so that
when ``settle`` returns the broker has processed the ack (AMQP 0-9-1 does not confirm
acks, and the broker handles a channel's methods in order). ``ClientLink`` is the
client's side: one connection, the work queue and an exclusive reply queue, driven by a
background thread.

Queues are used as they exist (a passive declare first, as for the exchange), whatever
their type; a missing one is created with ``Settings.queue_type``: classic with no
arguments, exactly as the seed's Python client declares the work queue, or quorum. A
403 or 406 while declaring is the operator's to fix (``ConfigError``), never "the
broker is unreachable".
"""

from __future__ import annotations

import collections
import enum
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from handler.adapters.amqp_wire import (
    CONNECTION_FORCED,
    CONNECTION_NAME,
    PIKA_ERRORS,
    connect,
    describe,
    message,
    properties,
)
from handler.adapters.publisher import Publisher
from handler.core.config import Settings, redact_url
from handler.core.errors import BrokerError, ConfigError, ReplyRefused, ReplyUndeliverable
from handler.core.messages import Message, Publication
from handler.core.profiles import Profiles, profile_queue

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds a cross-thread call waits for the connection's thread.
CALL_TIMEOUT = 60.0
#: Seconds a delivery stays unacked besides its Job's deadline and slack, its log upload
#: and its publishes: reading the log tail, the API calls around the Job.
CONSUMER_TIMEOUT_MARGIN = 60
#: Tries of one publish the broker refuses or does not confirm (see ``consumer``).
REPLY_ATTEMPTS = 3
#: Reply codes of a declaration the operator must fix: access refused, and a queue or
#: exchange that exists with other properties.
DECLARE_REFUSALS = (403, 406)


class Lane(enum.Enum):
    """The queues the handler consumes, each with a prefetch of its own: the work queue
    (as many deliveries as requests it runs at once), the cancel queue, so that a cancel is
    never stuck behind the requests it may be about, and one queue per Job profile with a
    ``maxInFlight`` (that many deliveries), so that one kind of work never waits behind, nor
    takes the place of, another."""

    WORK = "work"
    CANCEL = "cancel"
    PROFILE = "profile"


@dataclass(frozen=True)
class ProfileLane:
    """The lane of a Job profile with a ``maxInFlight``: its queue and its prefetch."""

    profile: str
    queue: str
    prefetch: int


def profile_lanes(settings: Settings, profiles: Profiles | None) -> tuple[ProfileLane, ...]:
    """The lanes of the profiles that have a ``maxInFlight``, queues named after the work queue."""
    return tuple(ProfileLane(p.name, profile_queue(settings.queue, p.name), p.max_in_flight)
                 for p in (profiles.limited if profiles is not None else ()) if p.max_in_flight is not None)


#: Cancel events one handler holds at once (they take an API call or two each).
CANCEL_PREFETCH = 4


class Settle(enum.Enum):
    """What to do with a delivery once its publications are confirmed."""

    ACK = "ack"
    REQUEUE = "requeue"
    REJECT = "reject"


def declare_exchange(connection: pika.BlockingConnection, exchange: str) -> BlockingChannel:
    """Use the exchange as whoever declared it first did; create it durable and direct (as
    Spring AMQP's ``DirectExchange`` does) when nobody has. An open channel."""
    channel = connection.channel()
    try:
        channel.exchange_declare(exchange, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        channel = connection.channel()  # a 404 closes the channel: declare on a new one
        channel.exchange_declare(exchange, exchange_type="direct", durable=True)
    return channel


def queue_arguments(queue_type: str, delivery_limit: int) -> dict[str, Any] | None:
    """The arguments a queue the handler creates is declared with: none for a classic
    queue (as the original clients declare the work queue), the type and the delivery
    limit for a quorum queue."""
    if queue_type == "quorum":
        return {"x-queue-type": "quorum", "x-delivery-limit": delivery_limit}
    return None


def ensure_queue(connection: pika.BlockingConnection, name: str, arguments: dict[str, Any] | None) -> BlockingChannel:
    """Use queue ``name`` as it exists (whatever its type and arguments), or create it
    durable with ``arguments``. An open channel; pika errors pass through."""
    channel = connection.channel()
    try:
        channel.queue_declare(name, passive=True)
        return channel
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
    channel = connection.channel()
    channel.queue_declare(name, durable=True, arguments=arguments)
    return channel


def declare_work_queue(connection: pika.BlockingConnection, exchange: str, queue_name: str,
                       arguments: dict[str, Any] | None = None) -> BlockingChannel:
    """The exchange, a queue bound to it by its own name (the work queue, the cancel queue:
    as it exists, or created with ``arguments``); an open channel. ``ConfigError`` for a declaration
    the broker refuses (403, 406), naming the queue and the broker's reason."""
    try:
        declare_exchange(connection, exchange).close()
        channel = ensure_queue(connection, queue_name, arguments)
        channel.queue_bind(queue_name, exchange, routing_key=queue_name)
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise refusal(exc, f"exchange {exchange!r} and queue {queue_name!r}") from exc
    return channel


def refusal(exc: BaseException, what: str) -> BaseException:
    """A declaration error as the caller should see it: 403/406 are ``ConfigError``s
    (the broker's text names the argument that differs), anything else passes."""
    if isinstance(exc, pika.exceptions.ChannelClosedByBroker) and exc.reply_code in DECLARE_REFUSALS:
        fix = ("give the handler's broker user configure, write and read permissions on them, or declare them "
               "beforehand" if exc.reply_code == 403 else
               "the broker's text names the argument that differs: declare the queue with it, or let the handler "
               "use the queue as it exists")
        return ConfigError(f"the broker refused to declare {what}: {exc.reply_code} {exc.reply_text} ({fix})")
    return exc


def queue_type_differs(connection: pika.BlockingConnection, name: str, queue_type: str) -> str | None:
    """The broker's words when queue ``name`` exists as another type than ``queue_type``
    (asked with a declaration on a channel of its own); None when it is that type."""
    channel = connection.channel()
    try:
        channel.queue_declare(name, durable=True, arguments={"x-queue-type": queue_type})
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code not in DECLARE_REFUSALS:
            raise
        # Another argument differing (a TTL, a delivery limit) is the queue's own business.
        return exc.reply_text if "x-queue-type" in exc.reply_text else None
    channel.close()
    return None


def consumer_timeout_supported(version: Any) -> bool:
    """The broker honours a consumer's own ``x-consumer-timeout``: RabbitMQ 3.12 and
    later, and 3.11.15+ where it was backported. Older brokers apply only their global
    ``consumer_timeout`` (30 minutes by default)."""
    text = version.decode("ascii", "replace") if isinstance(version, bytes) else str(version or "")
    numbers = tuple(int(n) for n in re.findall(r"\d+", text)[:3])
    return numbers >= (3, 12) or (3, 11, 15) <= numbers < (3, 12)


def longest_delivery_seconds(settings: Settings) -> float:
    """How long one delivery may stay unacked: the longest Job a request may ask for, the
    slack past its deadline, the log upload, every attempt of its reply, and the rest."""
    return (settings.max_timeout_minutes * 60 + settings.deadline_slack_seconds + settings.log_upload_timeout_seconds
            + REPLY_ATTEMPTS * settings.publish_timeout_seconds + CONSUMER_TIMEOUT_MARGIN)


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
    #: The lane it came on: ``Lane.WORK`` (requests), ``Lane.CANCEL`` (cancel events) or
    #: ``Lane.PROFILE`` (the requests of the profile ``profile``).
    lane: Lane = Lane.WORK
    profile: str | None = None


def _publish(channel: BlockingChannel, pub: Publication) -> None:
    """Publish with confirms and ``mandatory`` on a confirming channel (the client's
    requests); our errors."""
    try:
        channel.basic_publish(pub.exchange, pub.routing_key, pub.body, properties(pub), mandatory=True)
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


class Broker:
    """The handler's broker: consume on one connection, publish on another."""

    def __init__(self, settings: Settings, profiles: Profiles | None = None) -> None:
        self.settings = settings
        #: One lane (a queue bound by its own name, a prefetch) per profile with a maxInFlight.
        self.profile_lanes = profile_lanes(settings, profiles)
        self.generation = 0
        self.server_version = ""
        self._link: Link | None = None
        self._channel: BlockingChannel | None = None
        self._consumer_arguments: dict[str, int] | None = None
        self._consumer_tags: list[str] = []
        self.publisher = Publisher(settings)

    # --- connection (on the consuming thread)
    def connect(self) -> None:
        """Connect, declare the topology and set the prefetch. ``ConfigError`` for a
        declaration the broker refuses, ``BrokerError`` for trouble reaching it."""
        connection = connect(self.settings.amqp_url, CONNECTION_NAME)
        try:
            channel = self._declare_topology(connection)
        except ConfigError:
            Link(connection).close()
            raise
        except PIKA_ERRORS as exc:
            Link(connection).close()
            raise BrokerError(f"declaring {self.settings.queue}: {describe(exc)}") from exc
        # The generation first: a settle racing this sees a new generation or the old link, never a mix.
        self.generation += 1
        self._channel, self._link = channel, Link(connection)
        server = connection._impl.server_properties or {}  # noqa: SLF001 - pika keeps them there
        version = server.get("version") or ""
        self.server_version = version.decode("ascii", "replace") if isinstance(version, bytes) else str(version)
        self._consumer_arguments = consumer_arguments(self.server_version, self.settings)
        log.info("connected to %s (RabbitMQ %s), consuming %s; delivery timeout: %s",
                 redact_url(self.settings.amqp_url), self.server_version or "?",
                 ", ".join([self.settings.queue, *(f"{lane.queue} (at most {lane.prefetch} at once)"
                                                   for lane in self.profile_lanes)]),
                 f"{self._consumer_arguments['x-consumer-timeout']} ms (x-consumer-timeout)"
                 if self._consumer_arguments else "the broker's consumer_timeout (x-consumer-timeout needs 3.12+)")

    def _declare_topology(self, connection: pika.BlockingConnection) -> BlockingChannel:
        """The exchange and work queue, and the dead-letter queue; queues that exist are
        used as they are (a type other than ``queue_type`` is only worth a line in the log)."""
        s = self.settings
        arguments = queue_arguments(s.queue_type, s.delivery_limit)
        channel = declare_work_queue(connection, s.exchange, s.queue, arguments)
        declare_work_queue(connection, s.exchange, s.cancel_queue_name, arguments).close()
        for lane in self.profile_lanes:
            declare_work_queue(connection, s.exchange, lane.queue, arguments).close()
        queues = [s.queue, s.cancel_queue_name, *(lane.queue for lane in self.profile_lanes)]
        if s.dead_letter_queue:
            try:
                ensure_queue(connection, s.dead_letter_queue, arguments).close()
            except pika.exceptions.ChannelClosedByBroker as exc:
                raise refusal(exc, f"the dead-letter queue {s.dead_letter_queue!r}") from exc
            queues.append(s.dead_letter_queue)
        if self.generation == 0:  # once per process: the type does not change under a running handler
            for name in queues:
                differs = queue_type_differs(connection, name, s.queue_type)
                if differs:
                    log.info("queue %s is not of CLOUD_WORKER_QUEUE_TYPE=%s; it is used as it is (%s)", name,
                             s.queue_type, differs)
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
        """Deliveries of every lane as they come; ``None`` after each ``inactivity_timeout``
        seconds of quiet. Ends when the broker cancels a consumer (its queue deleted, a
        node lost). A lost connection raises ``BrokerError`` and fails every pending ``call``."""
        link, channel = self._require()
        arrived: collections.deque[Delivery] = collections.deque()
        cancelled: list[Any] = []
        generation = self.generation

        def on_message(lane: Lane, profile: str | None = None) -> Callable[..., None]:
            def take(_channel: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
                arrived.append(Delivery(message(props, body), method.delivery_tag, method.redelivered, generation,
                                        lane, profile))
            return take

        s = self.settings
        lanes = [(on_message(Lane.WORK), s.queue, s.concurrency, self._consumer_arguments),
                 (on_message(Lane.CANCEL), s.cancel_queue_name, CANCEL_PREFETCH, None)]
        lanes += [(on_message(Lane.PROFILE, lane.profile), lane.queue, lane.prefetch, self._consumer_arguments)
                  for lane in self.profile_lanes]
        try:
            channel.add_on_cancel_callback(cancelled.append)
            self._consumer_tags = []
            for take, queue, prefetch, arguments in lanes:
                channel.basic_qos(prefetch_count=prefetch)  # per consumer: it applies to the next basic.consume
                self._consumer_tags.append(channel.basic_consume(queue, take, arguments=arguments))
            while not cancelled:
                if not arrived:
                    link.connection.process_data_events(time_limit=inactivity_timeout)
                    if channel.is_closed:  # by the broker (a consumer_timeout): pika's pump says nothing
                        reason = getattr(channel, "_closing_reason", None)
                        raise link.lost(BrokerError(f"the broker closed the consuming channel: "
                                                    f"{describe(reason) if reason else 'no reason given'}"))
                if not arrived:
                    yield None
                while arrived and not cancelled:
                    yield arrived.popleft()
        except PIKA_ERRORS as exc:
            raise link.lost(exc) from exc

    def stop_consuming(self) -> None:
        """Stop deliveries on every lane; what was delivered and not yet acked stays ours until close."""
        link, channel = self._require()
        try:
            for tag in self._consumer_tags:
                if channel.is_open:
                    channel.basic_cancel(tag)
        except PIKA_ERRORS as exc:
            raise link.lost(exc) from exc
        self._consumer_tags = []

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
        delivered it. An ack returns once the broker has processed it: a synchronous
        ``basic.qos`` follows it on the same channel, and the broker handles a channel's
        methods in order. ``BrokerError`` if the connection is gone (the broker has taken
        the delivery back and redelivers it) or went before that answer (the ack may or
        may not have been processed)."""
        link, channel = self._require()
        if delivery.generation != self.generation:
            raise BrokerError("the delivery belongs to a closed connection; the broker redelivers it")
        tag, prefetch = delivery.delivery_tag, self.settings.concurrency

        def on_connection_thread() -> None:
            if how is Settle.ACK:
                channel.basic_ack(tag)
                channel.basic_qos(prefetch_count=prefetch)  # the round trip that confirms the ack
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
        except ConfigError:
            Link(connection).close()
            raise
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

