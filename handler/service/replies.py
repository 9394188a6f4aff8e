"""What the handler does when a publish fails: the reply policy of the README's "When
things fail" table, in one place for every sender (the consume loop, the sweep that
answers Jobs nobody answered).

- A reply whose queue does not exist (the requester is gone, or a direct reply-to
  requester disconnected) is dropped at once: ``cloud_worker_replies_dropped_total{reason="unroutable"}``.
- A reply the broker refuses (a nack, or the connection closed in answer to it) is tried
  ``REPLY_ATTEMPTS`` times with a delay, then dropped (``reason="refused"``): retrying
  longer would not change the broker's mind, and it must not hold the request.
- A dead-letter copy with no queue to go to or refused at every attempt (a full queue
  with ``x-overflow: reject-publish``), and any publication whose connection is in trouble
  (lost, blocked, silent past its deadline) for every attempt, raises ``PublishingFailed``:
  the caller leaves the request to come back, never unanswered and never without its copy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from handler.adapters.amqp import REPLY_ATTEMPTS
from handler.core.errors import BrokerError, ReplyRefused, ReplyUndeliverable
from handler.core.messages import Publication
from handler.service.metrics import Metrics

log = logging.getLogger(__name__)
#: Delay before the second try of a publish, in seconds; doubled after each further one.
REPLY_RETRY_DELAY = 0.5


class PublishingFailed(Exception):
    """The publication could not be published, and must not be dropped."""


class Replies:
    def __init__(self, publish: Callable[[Publication], None], metrics: Metrics,
                 on_dropped: Callable[[], None] = lambda: None) -> None:
        self._publish = publish
        self.metrics = metrics
        self._on_dropped = on_dropped

    def send(self, pub: Publication, stop: threading.Event | None = None) -> None:
        """Publish with confirms, under the policy above. Once ``stop`` is set (the process
        is stopping past its grace) no further attempt is made: ``PublishingFailed``."""
        delay = REPLY_RETRY_DELAY
        for attempt in range(1, REPLY_ATTEMPTS + 1):
            if attempt > 1 and stop is not None and stop.is_set():
                raise PublishingFailed(f"publishing to {pub.routing_key}: stopping before attempt {attempt}")
            try:
                self._publish(pub)
                return
            except ReplyUndeliverable as exc:
                if not pub.may_be_unroutable:  # a dead-letter copy: its queue must exist, or nothing is kept
                    raise PublishingFailed(f"no queue {pub.routing_key!r} to keep the copy in: {exc}") from exc
                log.warning("reply to %s dropped: %s (the requester is gone)", pub.routing_key, exc)
                self._dropped("unroutable")
                return
            except BrokerError as exc:  # ReplyRefused too
                if attempt == REPLY_ATTEMPTS:
                    if not isinstance(exc, ReplyRefused) or not pub.may_be_unroutable:  # never drop a copy
                        raise PublishingFailed(f"publishing to {pub.routing_key}: {exc}") from exc
                    log.error("reply to %s dropped after %d attempts (%s); the request is settled anyway",
                              pub.routing_key, attempt, exc)
                    self._dropped("refused")
                    return
                log.warning("reply to %s not confirmed (%s); trying again in %.1f s", pub.routing_key, exc, delay)
                (stop or threading.Event()).wait(delay)
                delay *= 2

    def emit(self, pub: Publication) -> None:
        """A lifecycle event: one try; losing one is not worth holding the request."""
        try:
            self._publish(pub)
        except (BrokerError, ReplyUndeliverable) as exc:
            log.info("lifecycle event to %s not delivered: %s", pub.routing_key, exc)

    def _dropped(self, reason: str) -> None:
        self.metrics.replies_dropped.labels(reason).inc()
        self._on_dropped()
