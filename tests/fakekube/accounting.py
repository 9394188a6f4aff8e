"""The Job controller's accounting: counting a Job's ended pods, and ending the Job.

A pod that ends is counted once (by uid, as the real controller's
``batch.kubernetes.io/job-tracking`` finalizer guarantees). Under the default
``podReplacementPolicy: TerminatingOrFailed`` a pod being deleted counts as
failed at once (``isPodFailed``); under ``Failed`` — forced by a
podFailurePolicy — only once it has ended, and only then is it judged by the
policy (:mod:`tests.fakekube.failurepolicy`): Ignore, FailJob, FailIndex or
Count, after which ``backoffLimit`` (or ``backoffLimitPerIndex``) decides.

Ending follows the docs' "Job termination and cleanup" (1.31+): the interim
condition is written and the Job's remaining pods are deleted; the terminal
condition follows once none of them is running or terminating
(:mod:`tests.fakekube.jobstatus`). A mixin of :class:`JobController`, split off
only to keep each module readable.
"""

import logging
from dataclasses import dataclass, field

from . import failurepolicy
from .jobstatus import (
    BACKOFF_MESSAGE,
    DEADLINE_MESSAGE,
    FAILED_INDEXES_MESSAGE,
    INTERIM,
    SUCCESS_MESSAGE,
    condition,
    ended,
    indexes,
    set_condition,
)
from .objects import JOBS, being_deleted, controller_uid, timestamp
from .podadmission import INDEX_ANNOTATION
from .scheduler import Timer
from .store import Event

logger = logging.getLogger(__name__)


@dataclass
class JobRun:
    """The controller's memory of one Job (by uid)."""

    namespace: str
    name: str
    uid: str
    suspended: bool | None = None  # None until the first sync
    target: tuple[str, str, str] | None = None  # (terminal condition, reason, message) once decided
    finished: bool = False
    succeeded: int = 0
    failed: int = 0
    counted: set[str] = field(default_factory=set)
    completed_indexes: set[int] = field(default_factory=set)
    failed_indexes: set[int] = field(default_factory=set)
    index_failures: dict[int, int] = field(default_factory=dict)
    create_failures: int = 0
    creating: Timer | None = None
    deadline: Timer | None = None
    timers: list[Timer] = field(default_factory=list)


def _index(pod: dict) -> int | None:
    value = ((pod["metadata"].get("annotations") or {}).get(INDEX_ANNOTATION))
    return int(value) if value is not None and value.isdigit() else None


class JobAccounting:
    """Pod accounting and the two-step ending; relies on JobController's helpers."""

    def _pod_changed(self, event: Event) -> None:
        pod = event.object
        run = self._runs.get(controller_uid(pod) or "")
        job = self._job(run) if run is not None and not run.finished else None
        if job is None:
            return
        uid, phase = pod["metadata"]["uid"], pod["status"].get("phase")
        if uid not in run.counted:
            only_failed = job["spec"].get("podReplacementPolicy") == "Failed"
            if phase == "Succeeded":
                run.counted.add(uid)
                self._pod_succeeded(run, job, pod)
            elif phase == "Failed" or event.type == "DELETED" or (being_deleted(pod) and not only_failed):
                run.counted.add(uid)
                self._pod_failed(run, job, pod, judged=phase == "Failed")
        if not run.finished:
            self._status(run)
            self._finish_if_settled(run)

    def _pod_succeeded(self, run: JobRun, job: dict, pod: dict) -> None:
        run.succeeded += 1
        if run.target:
            return
        if job["spec"].get("completionMode") == "Indexed":
            run.completed_indexes.add(_index(pod) or 0)
            if self._next_index(run, job) is None:
                self._conclude_indexed(run)
                return
        elif run.succeeded >= (job["spec"].get("completions") or 1):
            self._decide(run, "Complete", "CompletionsReached", SUCCESS_MESSAGE)
            return
        self._retry(run, 0.0)  # the next completion

    def _pod_failed(self, run: JobRun, job: dict, pod: dict, judged: bool) -> None:
        if run.target:
            run.failed += 1
            return
        action, message = failurepolicy.match(job["spec"].get("podFailurePolicy"), pod) if judged else (None, None)
        if action == "Ignore":
            logger.info("pod %s failed, ignored by the pod failure policy", pod["metadata"]["name"])
            self._retry(run, self._timings.backoff_base)
            return
        run.failed += 1
        if action == "FailJob":
            self._decide(run, "Failed", "PodFailurePolicy", message)
            return
        per_index = job["spec"].get("backoffLimitPerIndex")
        if per_index is not None:
            index = _index(pod) or 0
            run.index_failures[index] = run.index_failures.get(index, 0) + 1
            if action == "FailIndex" or run.index_failures[index] > per_index:
                run.failed_indexes.add(index)
                if self._next_index(run, job) is None:
                    self._conclude_indexed(run)
                    return
        if run.failed > job["spec"].get("backoffLimit", 6):
            self._decide(run, "Failed", "BackoffLimitExceeded", BACKOFF_MESSAGE)
            return
        self._retry(run, self._backoff(run.failed))

    def _conclude_indexed(self, run: JobRun) -> None:
        if run.failed_indexes:
            self._decide(run, "Failed", "FailedIndexes", FAILED_INDEXES_MESSAGE)
        else:
            self._decide(run, "Complete", "CompletionsReached", SUCCESS_MESSAGE)

    def _deadline(self, run: JobRun) -> None:
        if not run.finished and not run.target and not run.suspended and self._job(run) is not None:
            self._decide(run, "Failed", "DeadlineExceeded", DEADLINE_MESSAGE)

    # -- ending ------------------------------------------------------------------------------

    def _decide(self, run: JobRun, final: str, reason: str, message: str) -> None:
        """Write the interim condition, delete what still runs, then end once it has ended."""
        job = self._job(run)
        if job is None:
            return
        run.target = (final, reason, message)
        for timer in (run.creating, run.deadline):
            if timer is not None:
                timer.cancel()
        for pod in self._pods(run):
            self._delete_pod(run, job, pod)
        now = timestamp()

        def interim(status: dict) -> None:
            set_condition(status, condition(INTERIM[final], reason, message, now))
            if run.completed_indexes:
                status["completedIndexes"] = indexes(run.completed_indexes)
            if job["spec"].get("backoffLimitPerIndex") is not None:
                status["failedIndexes"] = indexes(run.failed_indexes)

        self._status(run, interim)
        self._finish_if_settled(run)

    def _finish_if_settled(self, run: JobRun) -> None:
        if run.target is None or run.finished or any(not ended(pod) for pod in self._pods(run)):
            return
        final, reason, message = run.target
        run.finished = True
        now = timestamp()

        def terminal(status: dict) -> None:
            set_condition(status, condition(final, reason, message, now))
            if final == "Complete":
                status["completionTime"] = now

        self._status(run, terminal)
        for timer in run.timers:
            timer.cancel()
        job = self._job(run)
        if job is not None:
            if final == "Complete":
                self._events.record(JOBS, job, "Normal", "Completed", "Job completed")
            else:
                self._events.record(JOBS, job, "Warning", reason, message)
        logger.info("job %s/%s %s (%s)", run.namespace, run.name, final.lower(), reason)

