"""Job backends: where a request's Job runs. One small interface, several implementations.

``kubernetes`` runs a batch/v1 Job (production); ``local`` runs the job as a local
process with the same environment (the one-machine demo). Both report an ``Outcome``
of the same shape, so replies look the same whichever ran the job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from handler.core.messages import CancelOutcome, CancelRequest
from handler.core.outcome import Outcome
from handler.core.request import WorkRequest

#: Called with a lifecycle kind ("accepted", "started") and extra reply fields.
Progress = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class JobView:
    """What a backend knows of a request's Job right now (``GET /jobs/<id>``, ``status``)."""

    request: WorkRequest
    #: ``pending``, ``running``, or the outcome's status once it has one.
    status: str
    #: The outcome (with its log tail) once the Job has ended, else None.
    outcome: Outcome | None = None


class JobBackend(Protocol):
    namespace: str

    def start(self) -> None:
        """Open connections and caches before the first request."""

    def inspect(self) -> None:
        """Open to look, not to run, from another process (``status``, ``logs``,
        ``submit --follow``): read what ``lookup`` and ``log_stream`` need, claim nothing
        and start nothing a job depends on."""

    def reachable(self) -> bool:
        """The backend's API answers (checked before a process forks the workers that need it)."""

    def run(self, request: WorkRequest, stop: threading.Event, progress: Progress | None = None) -> Outcome:
        """Create (or adopt) the request's Job and block until it ends.

        Raises ``Interrupted`` when ``stop`` is set first: the Job keeps running and the
        request's next delivery adopts it.
        """

    def cancel(self, target: CancelRequest) -> CancelOutcome:
        """Stop the Job ``target`` names, so that its follower replies ``cancelled``.
        Raises ``Transient`` when the cancel should be retried."""

    def stop(self, request: WorkRequest, reason: str) -> CancelOutcome:
        """Stop this request's own Job, if it has one (never a namesake made for another
        request), as a cancel would. Raises ``Transient`` when it should be retried."""

    def mark_replied(self, request: WorkRequest, status: str, release: bool = True) -> None:
        """Record, where the backend keeps durable state, that the terminal reply went out;
        with ``release``, let the Job go. Never raises."""

    def unanswered(self, after_seconds: float) -> Iterator[tuple[WorkRequest, Outcome]]:
        """Jobs that ended ``after_seconds`` ago or more and that nobody answered, each claimed
        for this process to answer as it is yielded: answer it before taking the next, or the
        claims of the last would lapse while the first are answered (a backend whose Jobs die
        with their handler has none)."""

    def wake(self) -> None:
        """Make waiting ``run`` calls look at ``stop`` now."""

    def lookup(self, request_id: str) -> JobView | None:
        """The Job of a request, as it is now; None when the backend has none (never
        created, or gone). Any replica can answer where the Jobs are durable."""

    def log_tail(self, outcome: Outcome) -> str:
        """The tail of the log of the outcome's pod ("" when there is none)."""

    def job_log(self, request: WorkRequest, outcome: Outcome, limit_bytes: int) -> bytes | None:
        """The Job's log from its start, at most ``limit_bytes``; None when there is none."""

    def log_stream(self, job_name: str, follow: bool) -> Iterator[bytes]:
        """The log of the Job named ``job_name`` as it is now, and with ``follow`` what it
        writes until it ends (``cloud-worker logs``). Raises ``NotFound`` when there is no
        such Job, ``Transient`` when its API cannot be reached."""

    def instrument(self, metrics: Any) -> None:
        """Register the backend's own counters (a watch's restarts, ...) with ``metrics``."""

    def ready(self) -> bool:
        """The backend can take work (for /readyz)."""

    def close(self) -> None: ...
