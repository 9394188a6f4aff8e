"""The simulated Job controller: pods for Jobs, retries, failure policy, deadline, suspend.

It reacts to store events like the real controller reacts to its informers,
running one pod at a time (``parallelism`` is not modelled; ``completions`` are
run one after another, by index for an Indexed Job):

- A Job gets ``startTime`` and a pod, built from its template and admitted as in
  :mod:`tests.fakekube.podadmission`; a refused create records a
  ``FailedCreate`` Event and is retried with backoff, for ever.
- A pod that ends is counted once (by uid, as finalizer tracking does); with the
  default ``podReplacementPolicy: TerminatingOrFailed`` a pod being deleted
  counts as failed at once and is replaced, with ``Failed`` (forced by a
  ``podFailurePolicy``) only once it has ended. A failed pod is judged by the
  ``podFailurePolicy`` (see :mod:`tests.fakekube.failurepolicy`), then by
  ``backoffLimit`` (``backoffLimitPerIndex`` for an Indexed Job).
- Ending is two-step (see :mod:`tests.fakekube.jobstatus`): the interim
  condition, the remaining pods deleted, the terminal condition once they have
  all ended. ``activeDeadlineSeconds`` (counted from ``startTime``) ends the Job
  that way with ``DeadlineExceeded``.
- ``spec.suspend``: the Job gets ``Suspended`` and no pods (running ones are
  deleted); resuming resets ``startTime`` and the deadline.

All work runs on the scheduler thread. Counting pods and ending Jobs is
:mod:`tests.fakekube.accounting`; the TTL and the garbage collector are
separate controllers (:mod:`tests.fakekube.ttl`, :mod:`tests.fakekube.gc`).
"""

import logging

from . import deletion
from .accounting import JobAccounting, JobRun
from .events import EventRecorder
from .jobstatus import apply_counts, condition, counts, ended, set_condition
from .kubelet import Kubelet
from .objects import JOBS, PODS, being_deleted, controller_uid, timestamp
from .podadmission import PodAdmission, build_pod
from .scenarios import Outcome
from .scheduler import Scheduler, Timer
from .store import Event, Store
from .timings import Timings

logger = logging.getLogger(__name__)


class JobController(JobAccounting):
    """Drives every Job's status from its pods; see the module docstring."""

    def __init__(self, store: Store, scheduler: Scheduler, kubelet: Kubelet, timings: Timings,
                 admission: PodAdmission, recorder: EventRecorder):
        self._store, self._scheduler, self._kubelet, self._timings = store, scheduler, kubelet, timings
        self._admission, self._events = admission, recorder
        self._runs: dict[str, JobRun] = {}

    def on_event(self, event: Event) -> None:
        """Store listener (runs under the store lock): only hands the event over."""
        if event.resource is JOBS or event.resource is PODS:
            self._scheduler.call_soon(self._handle, event)

    def _handle(self, event: Event) -> None:
        meta = event.object["metadata"]
        if event.resource is PODS:
            self._pod_changed(event)
        elif event.type == "ADDED":
            run = self._runs[meta["uid"]] = JobRun(meta["namespace"], meta["name"], meta["uid"])
            self._later(run, self._timings.controller_delay, self._sync, run)
        elif event.type == "DELETED":
            run = self._runs.pop(meta["uid"], None)
            for timer in run.timers if run else []:
                timer.cancel()
        elif (run := self._runs.get(meta["uid"])) and run.suspended is not None and (
                bool(event.object["spec"].get("suspend")) != run.suspended):
            self._sync(run)

    def _later(self, run: JobRun, delay: float, callback, *args) -> Timer:
        timer = self._scheduler.call_later(delay, callback, *args)
        run.timers.append(timer)
        return timer

    def _backoff(self, failures: int) -> float:
        return min(self._timings.backoff_cap, self._timings.backoff_base * 2 ** max(0, failures - 1))

    def _job(self, run: JobRun) -> dict | None:
        job = self._store.get(JOBS, run.namespace, run.name)
        return job if job is not None and job["metadata"]["uid"] == run.uid else None

    def _pods(self, run: JobRun) -> list[dict]:
        return [pod for _, pod in self._store.dependents(run.uid, PODS) if controller_uid(pod) == run.uid]

    def _status(self, run: JobRun, mutate=None) -> None:
        counted = counts(self._pods(run))

        def apply(job: dict) -> None:
            status = job["status"]
            if mutate is not None:
                mutate(status)
            apply_counts(status, counted, run.succeeded, run.failed)

        self._store.update(JOBS, run.namespace, run.name, apply, uid=run.uid)

    # -- start, suspend, resume ---------------------------------------------------

    def _sync(self, run: JobRun) -> None:
        job = self._job(run)
        if job is None or run.finished or run.target:
            return
        now = timestamp()
        if job["spec"].get("suspend"):
            if run.suspended:
                return
            run.suspended = True
            for timer in (run.deadline, run.creating):
                if timer is not None:
                    timer.cancel()
            for pod in self._pods(run):
                self._delete_pod(run, job, pod)

            def suspend(status: dict) -> None:
                set_condition(status, condition("Suspended", "JobSuspended", "Job suspended", now))
                status.pop("startTime", None)

            self._status(run, suspend)
            self._events.record(JOBS, job, "Normal", "Suspended", "Job suspended")
            return
        if run.suspended is False:  # already running
            return
        resumed, run.suspended = run.suspended is True, False

        def start(status: dict) -> None:
            if resumed:
                set_condition(status, condition("Suspended", "JobResumed", "Job resumed", now, "False"))
            if resumed or "startTime" not in status:
                status["startTime"] = now
            status.setdefault("uncountedTerminatedPods", {})

        self._status(run, start)
        if resumed:
            self._events.record(JOBS, job, "Normal", "Resumed", "Job resumed")
        deadline = job["spec"].get("activeDeadlineSeconds")
        if deadline is not None:
            run.deadline = self._later(run, deadline, self._deadline, run)
        self._create(run)

    # -- creating pods ---------------------------------------------------------------

    def _blocking(self, run: JobRun, job: dict) -> bool:
        """A pod still occupies the one slot (a terminating one too, under policy Failed)."""
        only_failed = job["spec"].get("podReplacementPolicy") == "Failed"
        return any(not ended(pod) and (only_failed or not being_deleted(pod)) for pod in self._pods(run))

    def _next_index(self, run: JobRun, job: dict) -> int | None:
        completions = job["spec"].get("completions") or 1
        done = run.completed_indexes | run.failed_indexes
        return next((i for i in range(completions) if i not in done), None)

    def _create(self, run: JobRun) -> None:
        job = self._job(run)
        if (job is None or run.finished or run.target or run.suspended or being_deleted(job)
                or (run.creating is not None and not run.creating.cancelled) or self._blocking(run, job)):
            return
        indexed = job["spec"].get("completionMode") == "Indexed"
        index = self._next_index(run, job) if indexed else None
        if indexed and index is None:
            return
        pod = build_pod(job, index)
        refusal = self._admission.refusal(
            pod, lambda: len(self._store.list(PODS, run.namespace, lambda p: not ended(p))[0]))
        if refusal is not None:
            run.create_failures += 1
            self._events.record(JOBS, job, "Warning", "FailedCreate", f"Error creating: {refusal}")
            self._retry(run, self._backoff(run.create_failures))
            return
        run.create_failures = 0
        self._admission.mutate(pod)
        created = self._store.create(PODS, pod)
        self._events.record(JOBS, job, "Normal", "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        self._status(run)

    def _retry(self, run: JobRun, delay: float) -> None:
        def due() -> None:
            run.creating = None
            self._create(run)

        if run.creating is None or run.creating.cancelled:
            run.creating = self._later(run, delay, due)

    def _delete_pod(self, run: JobRun, job: dict, pod: dict) -> None:
        meta = pod["metadata"]
        if ended(pod) or being_deleted(pod):
            return
        self._kubelet.linger(meta["uid"], self._timings.deadline_grace)
        if deletion.delete(self._store, PODS, run.namespace, meta["name"], "Background", uid=meta["uid"]):
            self._events.record(JOBS, job, "Normal", "SuccessfulDelete", f"Deleted pod: {meta['name']}")

    # -- driven from tests -------------------------------------------------------------------

    def finish(self, namespace: str, name: str, outcome: Outcome) -> None:
        """End the Job's running pod now (for ``scenario/hold``); scheduler thread only."""
        run = next((r for r in self._runs.values() if (r.namespace, r.name) == (namespace, name)), None)
        if run is None or self._job(run) is None:
            raise LookupError(f"no job {namespace}/{name}")
        if run.finished or run.target:
            raise ValueError(f"job {namespace}/{name} has already finished")
        if run.suspended is None:
            self._sync(run)
        pods = [p for p in self._pods(run) if not ended(p) and not being_deleted(p)]
        if not pods:  # between a failure and its retry: start the retry now
            if run.creating is not None:
                run.creating.cancel()
                run.creating = None
            self._create(run)
            pods = [p for p in self._pods(run) if not ended(p) and not being_deleted(p)]
        if not pods:
            raise ValueError(f"job {namespace}/{name} has no pod to finish (suspended, or pods refused)")
        for pod in pods:
            self._kubelet.finish(namespace, pod["metadata"]["name"], pod["metadata"]["uid"], outcome)
