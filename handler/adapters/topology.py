"""The AMQP topology the seed's clients, the Java service and this handler agree on.

The work queue is declared exactly as the seed's Python client declares it (durable, no
arguments) and bound to the direct exchange by its own name, or the broker would refuse
one of the two declarations. The exchange is used as whoever declared it first did, and
created durable and direct (as Spring AMQP's ``DirectExchange`` does) when nobody has.
Shared by the handler's ``broker`` and the ``client``.
"""

from __future__ import annotations

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel


def declare_work_queue(connection: pika.BlockingConnection, exchange: str, queue: str) -> BlockingChannel:
    """Declare the exchange (if missing) and the work queue, bind them; an open channel."""
    channel = connection.channel()
    try:
        channel.exchange_declare(exchange, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        channel = connection.channel()  # a 404 closes the channel: declare on a new one
        channel.exchange_declare(exchange, exchange_type="direct", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, routing_key=queue)
    return channel
