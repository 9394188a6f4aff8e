"""A stand-in ``JobBackend`` for worker-level tests: the Job "runs" at once."""

from __future__ import annotations

import time

from handler.core.errors import NotFound
from handler.core.messages import CancelOutcome, CancelStatus


class StubBackend:
    """Creates the Job (reporting ``accepted``) after ``create_delay`` seconds and ends it
    with the given outcome."""

    namespace = "stub"

    def __init__(self, outcome, create_delay: float = 0.0) -> None:
        self.outcome, self.create_delay = outcome, create_delay

    def run(self, request, stop, progress=None):
        time.sleep(self.create_delay)
        if progress is not None:
            progress("accepted", {})
        return self.outcome

    def start(self) -> None: ...

    def inspect(self) -> None: ...

    def reachable(self) -> bool:
        return True

    def log_stream(self, job_name, follow):
        raise NotFound(f"no job {job_name}")

    def cancel(self, target):
        """Nothing runs for long here: a cancel finds nothing to stop (and is recorded)."""
        self.cancelled = target
        return CancelOutcome(CancelStatus.NOT_FOUND, None, f"no Job for {target.target}")

    def stop(self, request, reason):
        """The request's own Job, stopped (recorded): nothing runs for long here either."""
        self.stopped = (request, reason)
        return CancelOutcome(CancelStatus.NOT_FOUND, None, f"no Job for request {request.request_id}")

    def mark_replied(self, request, status, release=True) -> None:
        self.replied = (request.request_id, status)
        self.released = release

    def unanswered(self, after_seconds):
        return []

    def wake(self) -> None: ...

    def ready(self) -> bool:
        return True

    def close(self) -> None: ...

    def lookup(self, request_id):
        return None

    def log_tail(self, outcome) -> str:
        return outcome.log_tail

    def instrument(self, metrics) -> None: ...

    def job_log(self, request, outcome, limit_bytes):
        return outcome.log_tail.encode()[:limit_bytes] or None
