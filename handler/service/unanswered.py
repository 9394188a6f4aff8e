"""The sweep that answers Jobs whose requests left the queue unanswered.

Once a Job may exist for a message, the handler must not depend on the broker handing
that message back: a message with an AMQP ``expiration`` that goes back to the queue (a
handler stopped past its grace, a lost connection, the consumer timeout) keeps its
original expiry and may be dropped there. Its Job, held by the reply finalizer, still
knows whom to answer. Every ``interval`` this thread asks the request handler for such
Jobs (``RequestHandler.unanswered``: ended ``CLOUD_WORKER_UNANSWERED_AFTER_SECONDS`` ago,
not followed here, claimed so that one replica answers), publishes their replies under
the same policy as any reply, and records them on the Job without letting it go, so a
redelivery that may still come adopts the Job rather than running the work again.
"""

from __future__ import annotations

import logging
import threading

from handler.core.config import Settings
from handler.service.handling import RequestHandler
from handler.service.replies import PublishingFailed, Replies

log = logging.getLogger(__name__)
#: Longest pause between two sweeps, in seconds: a sweep reads the watch cache, no API call.
MAX_INTERVAL = 30.0


class Sweep:
    def __init__(self, settings: Settings, handler: RequestHandler, replies: Replies) -> None:
        self.after = settings.unanswered_after_seconds
        self.handler = handler
        self.replies = replies
        self.interval = max(0.2, min(self.after / 4, MAX_INTERVAL))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.after <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="unanswered-sweep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.once()
            except Exception:  # noqa: BLE001 - the sweep must outlive one bad round
                log.exception("answering unanswered Jobs failed; trying again in %.0f s", self.interval)

    def once(self) -> int:
        """Answer what is unanswered now; how many Jobs were answered."""
        answered = 0
        for result in self.handler.unanswered():
            try:
                for pub in result.publications:
                    self.replies.send(pub)
            except PublishingFailed as exc:  # the claim lapses and a later sweep tries again
                log.warning("could not answer job %s now: %s", result.request.job_name if result.request else "?", exc)
                continue
            self.handler.replied(result, release=False)
            answered += 1
        return answered
