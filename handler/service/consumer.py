"""The consume loop: deliveries in, Jobs run on worker threads, replies and acks out.

The connection's thread consumes and is the only one to touch the channel; each
delivery runs on a worker thread (``concurrency`` of them, the prefetch count too),
which hands its replies and ack back to the connection's thread and waits for the
broker's confirm. Shutdown follows arq's wait-for-completion: on SIGTERM stop taking
messages, give in-flight work a grace, leave the rest unacked for redelivery (the next
handler adopts the still-running Job), close channel then connection. A second signal
exits at once. A lost connection abandons in-flight work the same way and reconnects.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from handler.adapters.broker import Broker, Delivery
from handler.core.config import Settings
from handler.core.exitcodes import ExitCode
from handler.core.errors import BrokerError, Interrupted, ReplyUndeliverable, Transient
from handler.service.health import Heartbeat
from handler.service.metrics import Metrics
from handler.core.retry import Backoff
from handler.core.messages import Publication
from handler.service.handling import RequestHandler

log = logging.getLogger(__name__)

#: How often the loop looks at its stop flag and stamps its heartbeat, in seconds. Short,
#: because it is how long SIGTERM takes to stop an idle loop; an idle tick costs ~50 µs.
TICK = 0.1
#: How long a worker thread waits for the connection's thread to confirm its reply.
SETTLE_TIMEOUT = 60.0
#: Connection attempts at start-up before giving up with ExitCode.BROKER_UNREACHABLE.
STARTUP_ATTEMPTS = 6


@dataclass
class _InFlight:
    delivery: Delivery
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass
class Stats:
    received: int = 0
    succeeded: int = 0
    failed: int = 0
    rejected: int = 0
    requeued: int = 0
    abandoned: int = 0
    reconnects: int = 0
    cancels: int = 0

    def count(self, status: str) -> None:
        attr = {"succeeded": "succeeded", "rejected": "rejected"}.get(status, "failed")
        if status.startswith("cancel-"):  # a cancel event handled (RequestHandler._cancel)
            attr = "cancels"
        setattr(self, attr, getattr(self, attr) + 1)


class Consumer:
    def __init__(self, settings: Settings, worker: RequestHandler, broker: Broker, heartbeat: Heartbeat | None = None,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.worker = worker
        self.broker = broker
        self.heartbeat = heartbeat or Heartbeat()
        self.metrics = metrics or worker.metrics
        self.stats = Stats()
        self._stopping = threading.Event()
        self._signals = 0
        self._lock = threading.Lock()
        self._inflight: dict[int, _InFlight] = {}
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="job")
        self._taken = 0
        self._last_work = time.monotonic()

    # --- control
    def stop(self) -> None:
        """Stop taking messages; in-flight work gets the shutdown grace."""
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: object) -> None:
            self._signals += 1
            if self._signals > 1:
                log.warning("second signal: exiting now, in-flight requests stay unacked")
                os._exit(ExitCode.INTERRUPTED)
            log.info("signal %s: finishing in-flight work (grace %.0f s)", signum, self.settings.shutdown_grace_seconds)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    @property
    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    def run(self) -> int:
        s = self.settings
        log.info("consumer starting: queue=%s concurrency=%d once=%s", s.queue, s.concurrency, s.once)
        backoff = Backoff(base=0.5, cap=s.reconnect_max_seconds, attempts=1)
        attempt, connected_once = 0, False
        try:
            while not self._finished():
                try:
                    self.broker.connect()
                    connected_once, attempt = True, 0
                    self._consume()
                except BrokerError as exc:
                    self._abandon_all()
                    self.broker.close()
                    if self._finished():
                        break
                    attempt += 1
                    if not connected_once and attempt >= STARTUP_ATTEMPTS:
                        log.error("broker unreachable after %d attempts: %s", attempt, exc)
                        return ExitCode.BROKER_UNREACHABLE
                    self.stats.reconnects += connected_once
                    if connected_once:
                        self.metrics.broker_reconnects.inc()
                    delay = backoff.delay(min(attempt, 8))
                    log.warning("broker connection lost (%s); reconnecting in %.1f s", exc, delay)
                    self._stopping.wait(delay)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self.broker.close()
            log.info("consumer stopped: %s", self.stats)
        return ExitCode.OK

    def _finished(self) -> bool:
        return self._stopping.is_set() or (self.settings.once and self._taken > 0 and self.inflight == 0)

    # --- the loop, on the connection's thread
    def _consume(self) -> None:
        for delivery in self.broker.deliveries(inactivity_timeout=TICK):
            self.heartbeat.beat()
            if delivery is not None:
                self._start(delivery)
                if self.settings.once:
                    break
            if self._stopping.is_set() or self._idle_expired():
                self._stopping.set()
                break
        self.broker.stop_consuming()
        self._drain()
        self.broker.close()

    def _idle_expired(self) -> bool:
        limit = self.settings.idle_exit_seconds
        if limit <= 0 or self.inflight:
            return False
        if time.monotonic() - self._last_work >= limit:
            log.info("idle for %.0f s: exiting", limit)
            return True
        return False

    def _drain(self) -> None:
        """Keep the connection's I/O going until in-flight work settles or the grace ends."""
        grace_ends = None
        while self.inflight:
            if self._stopping.is_set() and grace_ends is None:
                grace_ends = time.monotonic() + self.settings.shutdown_grace_seconds
            if grace_ends is not None and time.monotonic() >= grace_ends:
                log.warning("grace over: leaving %d request(s) unacked for redelivery", self.inflight)
                self._abandon_all()
                deadline = time.monotonic() + 5
                while self.inflight and time.monotonic() < deadline:
                    self.broker.pump(0.1)
                return
            self.broker.pump(TICK)
            self.heartbeat.beat()

    def _start(self, delivery: Delivery) -> None:
        item = _InFlight(delivery)
        with self._lock:
            self._inflight[id(item)] = item
        if not self._taken:  # the benchmarks time cold start (process start → here) by this line
            log.info("first delivery received")
        self._taken += 1
        self.stats.received += 1
        self._pool.submit(self._handle, item)

    def _abandon_all(self) -> None:
        with self._lock:
            items = list(self._inflight.values())
        for item in items:
            item.stop.set()
        if items:
            self.stats.abandoned += len(items)
            self.worker.backend.wake()

    # --- on worker threads
    def _handle(self, item: _InFlight) -> None:
        delivery = item.delivery
        try:
            result = self.worker.process(delivery.message, item.stop, emit=lambda pub: self._send(delivery, [pub], False))
            self._send(delivery, result.publications, True)
            self.worker.replied(result)
            self.metrics.replied(result.outcome)
            self.stats.count(result.status)
        except Interrupted:
            log.info("delivery %s left unacked: the broker redelivers it and the Job is adopted", delivery.delivery_tag)
        except BrokerError as exc:
            log.warning("could not settle delivery %s (%s): it will be redelivered", delivery.delivery_tag, exc)
        except Transient as exc:
            log.warning("transient failure (%s): requeueing delivery %s", exc, delivery.delivery_tag)
            self.stats.requeued += 1
            self._settle(delivery, requeue=True)
        except Exception:
            log.exception("unexpected error handling delivery %s: requeueing it", delivery.delivery_tag)
            self.stats.requeued += 1
            self._settle(delivery, requeue=True)
        finally:
            with self._lock:
                self._inflight.pop(id(item), None)
            self._last_work = time.monotonic()
            if self.settings.once or self._stopping.is_set():
                self._wake_drain()

    def _wake_drain(self) -> None:
        """A draining loop (once mode, shutdown) looks at ``inflight`` between pumps: end
        its pump now rather than a TICK later (half a second off every ``--once`` exit)."""
        try:
            self.broker.call_soon(lambda: None)
        except BrokerError:
            pass  # the connection is gone: the loop is not pumping either

    def _send(self, delivery: Delivery, pubs: list[Publication], ack: bool) -> None:
        """Publish (with confirms) and then ack, on the connection's thread; wait for it."""
        done: Future = Future()

        def on_io_thread() -> None:
            try:
                for pub in pubs:
                    try:
                        self.broker.publish(pub)
                    except ReplyUndeliverable as exc:
                        if not pub.may_be_unroutable:
                            raise
                        log.warning("reply to %s dropped: %s", pub.routing_key, exc)
                if ack:
                    self.broker.ack(delivery)
                done.set_result(None)
            except Exception as exc:  # noqa: BLE001 - handed back to the worker thread
                done.set_exception(exc)

        self.broker.call_soon(on_io_thread)
        try:
            done.result(timeout=SETTLE_TIMEOUT)
        except TimeoutError as exc:
            raise BrokerError("no confirm from the connection thread") from exc

    def _settle(self, delivery: Delivery, requeue: bool) -> None:
        done: Future = Future()

        def on_io_thread() -> None:
            try:
                if requeue:
                    self.broker.requeue(delivery)
                else:
                    self.broker.ack(delivery)
                done.set_result(None)
            except Exception as exc:  # noqa: BLE001
                done.set_exception(exc)

        try:
            self.broker.call_soon(on_io_thread)
            done.result(timeout=SETTLE_TIMEOUT)
        except (BrokerError, TimeoutError) as exc:
            log.warning("could not requeue delivery %s (%s): the broker redelivers it", delivery.delivery_tag, exc)
