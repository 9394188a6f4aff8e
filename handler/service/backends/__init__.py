"""Job backends: where a request's Job runs. One small interface, several implementations.

``kubernetes`` runs a batch/v1 Job (production); ``local`` runs the job as a local
process with the same environment (the one-machine demo). Both report an ``Outcome``
of the same shape, so replies look the same whichever ran the job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from handler.core.messages import CancelOutcome, CancelRequest
from handler.core.outcome import Outcome
from handler.core.request import WorkRequest

#: Called with a lifecycle kind ("accepted", "started") and extra reply fields.
Progress = Callable[[str, dict[str, Any]], None]


class JobBackend(Protocol):
    namespace: str

    def start(self) -> None:
        """Open connections and caches before the first request."""

    def run(self, request: WorkRequest, stop: threading.Event, progress: Progress | None = None) -> Outcome:
        """Create (or adopt) the request's Job and block until it ends.

        Raises ``Interrupted`` when ``stop`` is set first: the Job keeps running and the
        request's next delivery adopts it.
        """

    def cancel(self, target: CancelRequest) -> CancelOutcome:
        """Stop the Job ``target`` names, so that its follower replies ``cancelled``.
        Raises ``Transient`` when the cancel should be retried."""

    def mark_replied(self, request: WorkRequest, status: str) -> None:
        """Record, where the backend keeps durable state, that the terminal reply went out."""

    def wake(self) -> None:
        """Make waiting ``run`` calls look at ``stop`` now."""

    def ready(self) -> bool:
        """The backend can take work (for /readyz)."""

    def close(self) -> None: ...
