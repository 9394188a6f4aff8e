"""The handler's publishing side: replies, dead-letter copies and retry copies, on a
connection of its own driven by a thread of its own.

Shaped by what a broker connection can do to a publisher:

- It can go silent (a load-balancer node lost, a NAT entry dropped) without closing. So the
  connection has heartbeats, pumped by its own I/O thread (pika's ``SelectConnection``)
  even while nobody publishes, and pika drops it ``HEARTBEAT + 5`` s after the last frame.
- A publish can wait for its confirm for ever. So each one has a deadline: a publication
  not confirmed in ``publish_timeout_seconds`` fails with ``BrokerError``, and the
  connection it went out on is abandoned (closed in the background; whatever else waits
  on it fails with it), so the caller's next attempt goes out on a fresh connection.
- Nothing is locked across a network wait: callers hand their publication to the I/O
  thread and wait on an event of their own, many publications are in flight at once, and
  the broker's confirms are matched to them by delivery tag.
- Direct reply-to (``amq.rabbitmq.reply-to.…``, Spring's RabbitTemplate default) is not a
  queue. With ``mandatory``, RabbitMQ up to 4.1 returns such a reply as unroutable *and*
  delivers it, and 4.2+ never returns it, so a return says nothing either way. As
  RabbitMQ's guide advises, whether the requester is still there is asked first, by
  declaring the name passively, and the reply is then published without ``mandatory``.
  The question is asked on a second connection, because a forged name can make the
  broker close the connection that asks (541 INTERNAL_ERROR) and the replies in flight
  must not go with it.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pika.spec
from pika.adapters.select_connection import IOLoop

from handler.adapters.amqp_wire import (
    CONNECTION_FORCED,
    CONNECTION_NAME,
    PIKA_ERRORS,
    describe,
    is_direct_reply_to,
    parameters,
    properties,
)
from handler.core.config import Settings, redact_url
from handler.core.errors import BrokerError, ReplyRefused, ReplyUndeliverable
from handler.core.messages import Publication

log = logging.getLogger(__name__)
#: Seconds a connection gets to open (TCP, then the AMQP handshake).
CONNECT_TIMEOUT = 10.0
#: How long a caller past its deadline waits for the I/O thread to settle its publication, in
#: seconds (it takes microseconds unless that thread is stuck).
EXPIRY_WAIT = 5.0


class _Pending:
    """One publication on its way: settled once, by the I/O thread, with None or an error."""

    def __init__(self, pub: Publication) -> None:
        self.pub = pub
        self.direct = is_direct_reply_to(pub)
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.returned: str | None = None  # the broker's basic.return, before its confirm
        self._lock = threading.Lock()

    def finish(self, error: BaseException | None = None) -> None:
        with self._lock:  # the I/O thread, or a caller whose I/O thread is stuck (``Publisher.publish``)
            if not self.done.is_set():
                self.error = error
                self.done.set()


class _Session:
    """One publishing connection and what is in flight on it (I/O thread only). A session
    that fails or is abandoned fails every publication it holds; the publisher then starts
    a new one for the next."""

    def __init__(self, ioloop: IOLoop, params: pika.URLParameters, on_end: Callable[[_Session], None]) -> None:
        self.on_end = on_end
        self.ended = False
        self.channel: Any = None
        self.waiting: list[_Pending] = []  # handed over before the channel was ready
        self.unconfirmed: dict[int, _Pending] = {}
        self.tags = itertools.count(1)
        self.connection = pika.SelectConnection(
            params, on_open_callback=self._opened, on_open_error_callback=self._open_failed,
            on_close_callback=self._closed, custom_ioloop=ioloop)

    def send(self, pending: _Pending) -> None:
        if self.ended:
            pending.finish(BrokerError("the publishing connection is closed"))
        elif self.channel is None:
            self.waiting.append(pending)
        else:
            self._publish(pending)

    def holds(self, pending: _Pending) -> bool:
        return pending in self.waiting or pending in self.unconfirmed.values()

    def abandon(self, reason: str, *, silent: bool = False) -> None:
        """Give the connection up: fail what it holds now, and close it, at once when the
        peer is ``silent`` (it would never answer the close), else in the background."""
        self._end(BrokerError(reason))
        _close(self.connection, reason, silent)

    # --- pika's callbacks
    def _opened(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._channel_opened)

    def _channel_opened(self, channel: Any) -> None:
        channel.add_on_close_callback(self._channel_closed)
        channel.add_on_return_callback(self._returned)
        channel.confirm_delivery(self._confirmed, callback=lambda _frame: self._ready(channel))

    def _ready(self, channel: Any) -> None:
        self.channel = channel
        waiting, self.waiting = self.waiting, []
        for pending in waiting:
            self._publish(pending)

    def _publish(self, pending: _Pending) -> None:
        pub = pending.pub
        try:
            self.channel.basic_publish(pub.exchange, pub.routing_key, pub.body, properties(pub),
                                       mandatory=not pending.direct)
        except PIKA_ERRORS as exc:
            pending.finish(BrokerError(f"publishing to {pub.routing_key!r}: {describe(exc)}"))
            return
        self.unconfirmed[next(self.tags)] = pending

    def _returned(self, _channel: Any, method: Any, _props: Any, body: bytes) -> None:
        # The return comes before the confirm of the same publication: mark the oldest
        # publication still unconfirmed that it can be (same exchange, key and body).
        for pending in self.unconfirmed.values():
            pub = pending.pub
            if pending.returned is None and (pub.exchange, pub.routing_key, pub.body) == (
                    method.exchange, method.routing_key, body):
                pending.returned = f"{method.reply_code} {method.reply_text}"
                return

    def _confirmed(self, frame: Any) -> None:
        method = frame.method
        tags = [t for t in self.unconfirmed if t <= method.delivery_tag] if method.multiple else [method.delivery_tag]
        for tag in tags:
            pending = self.unconfirmed.pop(tag, None)
            if pending is None:
                continue
            pub = pending.pub
            if isinstance(method, pika.spec.Basic.Nack):
                pending.finish(ReplyRefused(f"the broker refused the message to {pub.routing_key!r}"))
            elif pending.returned is not None:
                pending.finish(ReplyUndeliverable(f"no queue for routing key {pub.routing_key!r} "
                                                  f"({pending.returned})"))
            else:
                pending.finish()

    def _channel_closed(self, _channel: Any, reason: BaseException) -> None:
        if self.ended:
            return
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
            # e.g. 404 for an exchange that does not exist: a refusal of the publications it names.
            for pending in list(self.unconfirmed.values()):
                if pending.pub.exchange and f"'{pending.pub.exchange}'" in reason.reply_text:
                    pending.finish(ReplyRefused(f"the broker refused the message to exchange "
                                                f"{pending.pub.exchange!r}: {describe(reason)}"))
        self.abandon(f"the publishing channel was closed: {describe(reason)}")

    def _open_failed(self, _connection: Any, error: BaseException) -> None:
        self._end(BrokerError(f"cannot open a publishing connection: {describe(error)}"))

    def _closed(self, _connection: Any, reason: BaseException) -> None:
        if self.ended:
            return
        if (isinstance(reason, pika.exceptions.ConnectionClosedByBroker) and reason.reply_code != CONNECTION_FORCED
                and len(self.unconfirmed) == 1):
            # Closed in answer to the one publication in flight: a refusal of it.
            (pending,) = self.unconfirmed.values()
            pending.finish(ReplyRefused(f"the broker closed the connection rather than take the message to "
                                        f"{pending.pub.routing_key!r}: {describe(reason)}"))
        self._end(BrokerError(f"the publishing connection was lost: {describe(reason)}"))

    def _end(self, error: BrokerError) -> None:
        if self.ended:
            return
        self.ended = True
        held = self.waiting + list(self.unconfirmed.values())
        self.waiting, self.unconfirmed = [], {}
        for pending in held:
            pending.finish(error)
        self.on_end(self)


class _Probe:
    """Asks whether direct reply-to names still have their requester (I/O thread only):
    a passive declare on a channel of its own, on a connection of its own."""

    def __init__(self, ioloop: IOLoop, params: pika.URLParameters, on_end: Callable[[_Probe], None]) -> None:
        self.on_end = on_end
        self.ended = False
        self.open = False
        self.asking: list[tuple[_Pending, Callable[[], None]]] = []
        self.connection = pika.SelectConnection(
            params, on_open_callback=self._opened, on_open_error_callback=self._failed,
            on_close_callback=self._failed, custom_ioloop=ioloop)

    def ask(self, pending: _Pending, then: Callable[[], None]) -> None:
        """``then()`` if the requester is there; else finish ``pending`` with why not."""
        if self.ended:
            pending.finish(BrokerError("the reply-to probe connection is closed"))
            return
        self.asking.append((pending, then))
        if self.open:
            self._declare(pending, then)

    def holds(self, pending: _Pending) -> bool:
        return any(p is pending for p, _ in self.asking)

    def abandon(self, reason: str, *, silent: bool = False) -> None:
        self._failed(None, BrokerError(reason))
        _close(self.connection, reason, silent)

    def _opened(self, _connection: Any) -> None:
        self.open = True
        for pending, then in list(self.asking):
            self._declare(pending, then)

    def _declare(self, pending: _Pending, then: Callable[[], None]) -> None:
        name = pending.pub.routing_key

        def answered(_frame: Any) -> None:
            self._settle(pending)
            channel.close()
            then()

        def closed(_channel: Any, reason: BaseException) -> None:
            if not self._settle(pending):
                return  # closed by us after the answer
            if isinstance(reason, pika.exceptions.ChannelClosedByBroker) and reason.reply_code == 404:
                pending.finish(ReplyUndeliverable(f"no direct reply-to consumer for {name!r}: the requester is gone"))
            elif _refused(reason):
                pending.finish(_refusal(name, reason))
            else:
                pending.finish(BrokerError(f"asking for the requester of {name!r}: {describe(reason)}"))

        try:
            channel = self.connection.channel(
                on_open_callback=lambda ch: ch.queue_declare(name, passive=True, callback=answered))
            channel.add_on_close_callback(closed)
        except PIKA_ERRORS as exc:
            self._settle(pending)
            pending.finish(BrokerError(f"asking for the requester of {name!r}: {describe(exc)}"))

    def _settle(self, pending: _Pending) -> bool:
        """Stop asking for ``pending``; whether it was still being asked for."""
        before = len(self.asking)
        self.asking = [(p, t) for p, t in self.asking if p is not pending]
        return len(self.asking) < before

    def _failed(self, _connection: Any, reason: BaseException) -> None:
        if self.ended:
            return
        self.ended = True
        asking, self.asking = self.asking, []
        for pending, _ in asking:
            if _refused(reason):
                pending.finish(_refusal(pending.pub.routing_key, reason))
            else:
                pending.finish(BrokerError(f"the reply-to probe connection failed: {describe(reason)}"))
        self.on_end(self)


def _close(connection: Any, reason: str, silent: bool) -> None:
    """Close ``connection``: with the AMQP handshake, or, for a ``silent`` peer that would
    never answer it, by dropping the socket now (what pika's own heartbeat checker does
    when a peer falls silent; pika has no public call for it)."""
    try:
        if silent and not connection.is_closed:
            connection._terminate_stream(BrokerError(reason))  # noqa: SLF001
        elif connection.is_open:
            connection.close(reply_text=reason[:200])
    except PIKA_ERRORS as exc:
        log.debug("while closing a publishing connection: %s", describe(exc))


def _refused(reason: BaseException) -> bool:
    """The broker closed the connection in answer to what was asked (541 for a forged
    direct reply-to name), not for its own reasons (320: an operator, a shutdown)."""
    code = getattr(reason, "reply_code", None)
    return isinstance(reason, pika.exceptions.ConnectionClosed | pika.exceptions.ChannelClosedByBroker) and \
        code is not None and code >= 500 and code != CONNECTION_FORCED


def _refusal(name: str, reason: BaseException) -> ReplyRefused:
    return ReplyRefused(f"the broker refused the direct reply-to name {name!r}: {describe(reason)}")


class Publisher:
    """Publishes from any thread and waits, at most ``publish_timeout_seconds``, for the
    broker's confirm. ``publish`` raises ``ReplyUndeliverable`` (no queue, or a direct
    reply-to requester gone), ``ReplyRefused`` (nacked, or refused by closing the
    connection) or ``BrokerError`` (the connection failed, or the confirm did not come)."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.amqp_url
        self.timeout = settings.publish_timeout_seconds
        self._params = parameters(settings.amqp_url, f"{CONNECTION_NAME}-publisher", timeout=CONNECT_TIMEOUT)
        self._probe_params = parameters(settings.amqp_url, f"{CONNECTION_NAME}-reply-to-probe",
                                        timeout=CONNECT_TIMEOUT)
        self._lock = threading.Lock()  # guards starting and stopping the I/O thread, never a network wait
        self._ioloop: IOLoop | None = None
        self._thread: threading.Thread | None = None
        self._session: _Session | None = None
        self._probe: _Probe | None = None

    def publish(self, pub: Publication) -> None:
        pending = _Pending(pub)
        self._hand_over(lambda: self._submit(pending))
        if not pending.done.wait(self.timeout):
            # Past the deadline the I/O thread decides, so that a confirm arriving meanwhile
            # counts: the caller must never hear "failed" of a publication the broker took
            # (it would publish it again, a second reply).
            late = BrokerError(f"publishing to {pub.routing_key!r}: no confirm from the broker at "
                               f"{redact_url(self.url)} within {self.timeout:g} s; trying a new connection")
            self._hand_over(lambda: self._expired(pending, late))
            if not pending.done.wait(EXPIRY_WAIT):  # the I/O thread itself is stuck
                pending.finish(late)
        if pending.error is not None:
            raise pending.error

    def close(self) -> None:
        with self._lock:
            ioloop, thread, self._ioloop, self._thread = self._ioloop, self._thread, None, None
        if ioloop is None or thread is None:
            return
        ioloop.add_callback_threadsafe(self._shut_down(ioloop))
        thread.join(5)

    # --- from any thread
    def _hand_over(self, fn: Callable[[], None]) -> None:
        with self._lock:
            if self._ioloop is None:
                self._ioloop = IOLoop()
                self._thread = threading.Thread(target=_run, args=(self._ioloop,), name="amqp-publisher", daemon=True)
                self._thread.start()
            self._ioloop.add_callback_threadsafe(fn)

    # --- on the I/O thread
    def _submit(self, pending: _Pending) -> None:
        try:
            if pending.direct:
                self._probe_session().ask(pending, lambda: self._current().send(pending))
            else:
                self._current().send(pending)
        except PIKA_ERRORS as exc:  # the connection could not even be started
            pending.finish(BrokerError(f"cannot open a publishing connection: {describe(exc)}"))

    def _current(self) -> _Session:
        if self._session is None or self._session.ended:
            assert self._ioloop is not None
            self._session = _Session(self._ioloop, self._params, self._session_ended)
        return self._session

    def _probe_session(self) -> _Probe:
        if self._probe is None or self._probe.ended:
            assert self._ioloop is not None
            self._probe = _Probe(self._ioloop, self._probe_params, self._probe_ended)
        return self._probe

    def _session_ended(self, session: _Session) -> None:
        if self._session is session:
            self._session = None

    def _probe_ended(self, probe: _Probe) -> None:
        if self._probe is probe:
            self._probe = None

    def _expired(self, pending: _Pending, error: BrokerError) -> None:
        """A publication missed its deadline: unless its confirm came meanwhile, it fails with
        ``error``, and the connection it waits on is suspect (given up, failing the others it
        holds, whose callers try again on a new one)."""
        if pending.done.is_set():
            return  # settled meanwhile: its caller gets that result
        reason = f"a publication to {pending.pub.routing_key!r} was not confirmed within {self.timeout:g} s"
        pending.finish(error)
        if self._session is not None and self._session.holds(pending):
            log.warning("%s: abandoning the publishing connection", reason)
            self._session.abandon(reason, silent=True)
        elif self._probe is not None and self._probe.holds(pending):
            log.warning("%s: abandoning the reply-to probe connection", reason)
            self._probe.abandon(reason, silent=True)

    def _shut_down(self, ioloop: IOLoop) -> Callable[[], None]:
        def shut_down() -> None:
            parts = [part for part in (self._session, self._probe) if part is not None]
            for part in parts:
                part.abandon("the handler is stopping")
            self._session = self._probe = None

            def stop() -> None:  # a close the broker did not answer by now will not be answered
                for part in parts:
                    _close(part.connection, "the handler is stopping", silent=True)
                ioloop.call_later(0.05, ioloop.stop)

            ioloop.call_later(0.5, stop)
        return shut_down


def _run(ioloop: IOLoop) -> None:
    """The I/O thread: run the loop until ``Publisher.close`` stops it, then release it."""
    try:
        ioloop.start()
    finally:
        ioloop.close()
