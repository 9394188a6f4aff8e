"""The broker misbehaving mid-job: connections closed from the broker's side, and the
broker taking back a delivery whose ack is overdue (``consumer_timeout``). Neither may
lose a request or start a second Job. The shared broker is never stopped."""

from __future__ import annotations

import time

import pytest

from tests.reliability.conftest import rabbit_env, set_rabbit_env
from tests.support.rabbit import close_handler_connections
from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.integration


def test_connections_closed_by_the_broker_mid_job_lose_and_duplicate_nothing(handlers, requester, fakekube, namespace,
                                                                            figures):
    proc = handlers.spawn("--concurrency", "4")
    cids = [requester.submit(job_request("scenario/succeed:1.5"), correlation_id=f"close-{i}") for i in range(8)]
    closes = 0
    for wanted in (2, 6):
        wait_until(lambda wanted=wanted: len(fakekube.created_jobs(namespace)) >= wanted, f"{wanted} jobs exist", timeout=30)
        close_handler_connections()
        closes += 1
    for cid in cids:
        assert requester.wait_reply(cid, timeout=40)["data"]["status"] == "succeeded", handlers.log_of()
    requester.collect(1.0)
    created = fakekube.created_jobs(namespace)
    duplicates = sum(len(requester.terminal_replies_for(c)) - 1 for c in cids)
    figures.update(requests=len(cids), broker_closes=closes, jobs=len(created), duplicate_replies=duplicates,
                   lost=0)
    assert sorted(created) == sorted(set(created)) and len(created) == len(cids)
    assert proc.poll() is None and "reconnecting" in handlers.log_of()


def test_a_job_outliving_the_consumer_timeout_still_ends_in_one_job_and_a_reply(handlers, requester, fakekube,
                                                                               namespace, figures):
    """The broker (3.10 here) closes the channel of a delivery unacked for longer than its
    ``consumer_timeout`` and requeues it; the handler must reconnect and adopt the Job.

    The timeout is lowered only while this handler opens its channel (a channel reads it
    once, when opened), so the other tests sharing this broker keep the normal one; the
    broker checks it on each channel tick, every ``channel_tick_interval`` (60 s by
    default), lowered to 1 s for the test."""
    timeout_before, tick_before = rabbit_env("consumer_timeout"), rabbit_env("channel_tick_interval")
    try:
        set_rabbit_env("channel_tick_interval", "1000")
        set_rabbit_env("consumer_timeout", "3000")
        try:
            handler = handlers.start()
            wait_until(lambda: handler.consumer.broker.is_open, "the handler's channel is open")
        finally:
            set_rabbit_env("consumer_timeout", timeout_before)
        started = time.monotonic()
        cid = requester.submit(job_request("scenario/succeed:8"))
        wait_until(lambda: handler.consumer.stats.reconnects >= 1, "the broker takes the delivery back", timeout=30)
        taken_back_after = time.monotonic() - started
        reply = requester.wait_reply(cid, timeout=40)
    finally:
        set_rabbit_env("channel_tick_interval", tick_before)
    requester.collect(1.0)
    figures.update(consumer_timeout_ms=3000, channel_tick_ms=1000, job_seconds=8,
                   taken_back_after_s=round(taken_back_after, 1), reconnects=handler.consumer.stats.reconnects,
                   jobs=len(fakekube.created_jobs(namespace)), replies=len(requester.terminal_replies_for(cid)))
    assert reply["data"]["status"] == "succeeded"
    assert len(fakekube.created_jobs(namespace)) == 1
    assert len(requester.terminal_replies_for(cid)) == 1
    assert rabbit_env("consumer_timeout") == timeout_before
