"""What both sides of the RabbitMQ adapter share: connection parameters, pika's errors in
our words, and messages to and from AMQP properties.

``amqp`` (consuming, the client) and ``publisher`` (replies) build on this; nothing here
keeps state.
"""

from __future__ import annotations

import math
from typing import Any

import pika
import pika.exceptions

from handler.core.config import redact_url
from handler.core.errors import BrokerError, ConfigError
from handler.core.messages import Message, Publication

#: Everything pika raises on a connection or channel that is failing or gone. Besides
#: its own ``AMQPError`` tree and socket errors, pika raises ``ValueError`` ("Timeout
#: closed before call"), ``AssertionError`` and ``RuntimeError`` from its internals when
#: the connection closed under a call; none of them may escape the consume loop.
PIKA_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPError, OSError, ValueError, AssertionError, RuntimeError, AttributeError,
)
#: AMQP heartbeat, in seconds: short enough to notice a dead broker (or a peer gone
#: silent behind a load balancer) within a minute, even while every worker is busy. pika
#: takes a connection as dead after ``HEARTBEAT + 5`` s without a frame.
HEARTBEAT = 30
#: ``connection.close`` code of an operator's ``rabbitmqctl close_connection`` or a broker
#: shutting down: the connection's trouble, not a refusal of the message being published.
CONNECTION_FORCED = 320
#: The handlers' connections carry this name (tools and tests look for them).
CONNECTION_NAME = "mstc-cloud-worker"
#: The pseudo-queue of RabbitMQ's direct reply-to; the broker hands the responder
#: ``amq.rabbitmq.reply-to.<suffix>`` as the request's ``reply_to``.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def parameters(url: str, name: str, *, heartbeat: int = HEARTBEAT, timeout: float | None = None) -> pika.URLParameters:
    """Connection parameters for ``url``, or ``ConfigError`` for a URL pika cannot read.
    With ``timeout``, one connection attempt whose socket and AMQP handshake each get that long."""
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
    return params


def connect(url: str, name: str, *, heartbeat: int = HEARTBEAT, timeout: float | None = None) -> pika.BlockingConnection:
    """A new blocking connection, or ``ConfigError`` (bad URL) / ``BrokerError`` (unreachable)."""
    params = parameters(url, name, heartbeat=heartbeat, timeout=timeout)
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


def is_direct_reply_to(pub: Publication) -> bool:
    """The publication answers a direct reply-to requester (no queue behind the name)."""
    return pub.exchange == "" and pub.routing_key.startswith(DIRECT_REPLY_TO)


def _expiration_seconds(value: Any) -> float | None:
    """The AMQP ``expiration`` property (milliseconds, as text) in seconds; None if absent
    or not a number the broker would have taken."""
    try:
        milliseconds = int(value)
    except (TypeError, ValueError):
        return None
    return milliseconds / 1000 if milliseconds >= 0 else None


def message(props: pika.BasicProperties, body: bytes) -> Message:
    return Message(
        body=body,
        content_type=props.content_type,
        headers=dict(props.headers or {}),
        message_id=props.message_id,
        correlation_id=props.correlation_id,
        reply_to=props.reply_to,
        expiration_seconds=_expiration_seconds(props.expiration),
    )


def properties(pub: Publication) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=pub.content_type or None,
        correlation_id=pub.correlation_id,
        message_id=pub.message_id,
        reply_to=pub.reply_to,
        headers=dict(pub.headers) or None,
        delivery_mode=pika.DeliveryMode.Persistent,
        expiration=str(math.ceil(pub.expiration_seconds * 1000)) if pub.expiration_seconds else None,
    )
