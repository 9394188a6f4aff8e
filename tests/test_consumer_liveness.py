"""Liveness sees stuck workers: the consume loop stamps its heartbeat only while every
worker is within the time its step may take, so ``/healthz`` fails for a process whose
worker is wedged (and Kubernetes restarts it) even though the loop itself still ticks."""

import time

from handler.adapters.amqp import Delivery, longest_delivery_seconds
from handler.core.config import Settings
from handler.core.messages import Message
from handler.service.consumer import STUCK_GRACE, Consumer, _InFlight, reply_seconds
from handler.service.handling import RequestHandler
from handler.service.health import Heartbeat
from tests.support.backends import StubBackend


class NoBroker:
    profile_lanes = ()

    def publish(self, pub):
        raise AssertionError("nothing is published here")


def consumer_with(*busy_until: float) -> Consumer:
    settings = Settings.from_env({})
    consumer = Consumer(settings, RequestHandler(settings, StubBackend(None)), NoBroker(), Heartbeat())
    for n, until in enumerate(busy_until):
        item = _InFlight(Delivery(Message(b"{}"), n + 1, False, 1), busy_until=until)
        consumer._inflight[id(item)] = item  # keyed as the consumer keys it
    return consumer


def stamped(consumer: Consumer) -> bool:
    consumer.heartbeat._last = time.monotonic() - 100
    consumer._beat()
    return consumer.heartbeat.age() < 1


def test_the_heartbeat_is_stamped_while_every_worker_is_within_its_bound():
    now = time.monotonic()
    assert stamped(consumer_with())
    assert stamped(consumer_with(now + 5, now - STUCK_GRACE + 5))  # one is late, but within the grace


def test_a_worker_stuck_past_its_bound_stops_the_heartbeat_so_healthz_fails():
    now = time.monotonic()
    assert not stamped(consumer_with(now + 600, now - STUCK_GRACE - 1))


def test_the_heartbeat_comes_back_once_the_stuck_worker_is_done_before_the_next_look():
    now = time.monotonic()
    consumer = consumer_with(now - STUCK_GRACE - 1)
    assert not stamped(consumer)
    consumer._inflight.clear()  # the worker ends; the list of stuck ones is not made again until STUCK_CHECK
    assert stamped(consumer)


def test_a_deliverys_bound_covers_the_longest_job_its_log_upload_and_every_reply_attempt():
    settings = Settings.from_env({"CLOUD_WORKER_MAX_TIMEOUT_MINUTES": "25", "CLOUD_WORKER_DEADLINE_SLACK_SECONDS": "30",
                                  "CLOUD_WORKER_LOG_UPLOAD_TIMEOUT_SECONDS": "30",
                                  "CLOUD_WORKER_PUBLISH_TIMEOUT_SECONDS": "10"})
    assert longest_delivery_seconds(settings) >= 25 * 60 + 30 + 30 + 3 * 10
    # ...and still fits RabbitMQ's default consumer_timeout of 30 minutes with the defaults.
    assert longest_delivery_seconds(Settings.from_env({})) < 30 * 60
    assert reply_seconds(settings) > 2 * 3 * 10  # a reply and a dead-letter copy, three attempts each
