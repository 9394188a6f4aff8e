"""The simulated Job controller: pods for Jobs, retries, deadlines, TTL, status.

It reacts to store events like the real controller reacts to its informers:
a new Job gets a pod; a pod reaching a terminal phase is counted once (by pod
uid, as finalizer tracking does) and either completes the Job, retries, or
fails it at the backoff limit. Terminal status is written in two steps, as
Kubernetes 1.31+ does: first ``SuccessCriteriaMet``/``FailureTarget``, then
``Complete``/``Failed``. All work runs on the scheduler thread.
"""

import copy
import logging
from dataclasses import dataclass, field

from .kubelet import NODE_NAME, Kubelet, is_terminal
from .objects import JOBS, PODS, controller_uid, random_suffix, timestamp
from .scenarios import Outcome
from .scheduler import Scheduler, Timer
from .store import Event, Store
from .timings import Timings

logger = logging.getLogger(__name__)

BACKOFF_MESSAGE = "Job has reached the specified backoff limit"
DEADLINE_MESSAGE = "Job was active longer than specified deadline"
SUCCESS_MESSAGE = "Reached expected number of succeeded pods"


@dataclass
class JobRun:
    """The controller's memory of one Job (by uid)."""

    namespace: str
    name: str
    uid: str
    started: bool = False
    finished: bool = False
    succeeded: int = 0
    failed: int = 0
    counted: set[str] = field(default_factory=set)
    timers: list[Timer] = field(default_factory=list)


def _condition(kind: str, reason: str, message: str, now: str) -> dict:
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}


class JobController:
    """Drives every Job's status from its pods; see the module docstring."""

    def __init__(self, store: Store, scheduler: Scheduler, kubelet: Kubelet, timings: Timings):
        self._store, self._scheduler, self._kubelet, self._timings = store, scheduler, kubelet, timings
        self._runs: dict[str, JobRun] = {}

    def on_event(self, event: Event) -> None:
        """Store listener (runs under the store lock): only hands the event over."""
        self._scheduler.call_soon(self._handle, event)

    def _handle(self, event: Event) -> None:
        meta = event.object["metadata"]
        if event.resource is JOBS and event.type == "ADDED":
            run = self._runs[meta["uid"]] = JobRun(meta["namespace"], meta["name"], meta["uid"])
            self._later(run, self._timings.controller_delay, self._start, run)
        elif event.resource is JOBS and event.type == "DELETED":
            run = self._runs.pop(meta["uid"], None)
            for timer in run.timers if run else []:
                timer.cancel()
        elif event.resource is PODS:
            self._pod_changed(event)

    def _pod_changed(self, event: Event) -> None:
        pod = event.object
        run = self._runs.get(controller_uid(pod) or "")
        if run is None or pod["metadata"]["uid"] in run.counted:
            return
        phase = pod["status"].get("phase")
        if is_terminal(pod) or event.type == "DELETED":  # a deleted running pod counts as failed
            run.counted.add(pod["metadata"]["uid"])
            self._pod_ended(run, phase == "Succeeded")
        elif not run.finished and phase == "Running":
            self._update_job(run, lambda job: job["status"].update(ready=1))

    def _later(self, run: JobRun, delay: float, callback, *args) -> None:
        run.timers.append(self._scheduler.call_later(delay, callback, *args))

    def _update_job(self, run: JobRun, mutate) -> dict | None:
        return self._store.update(JOBS, run.namespace, run.name, mutate, uid=run.uid)

    def _job(self, run: JobRun) -> dict | None:
        job = self._store.get(JOBS, run.namespace, run.name)
        return job if job is not None and job["metadata"]["uid"] == run.uid else None

    def _start(self, run: JobRun) -> None:
        job = self._job(run)
        if run.started or job is None:
            return
        run.started = True
        now = timestamp()
        self._create_pod(run, job)
        self._update_job(run, lambda job: job["status"].update(
            startTime=now, active=1, ready=0, terminating=0, uncountedTerminatedPods={}))
        deadline = job["spec"].get("activeDeadlineSeconds")
        if deadline is not None:
            self._later(run, deadline, self._deadline, run)

    def _create_pod(self, run: JobRun, job: dict) -> dict:
        template = job["spec"]["template"]
        meta = copy.deepcopy(template.get("metadata") or {})
        meta.update(name=f"{run.name}-{random_suffix()}", generateName=f"{run.name}-",
                    namespace=run.namespace, ownerReferences=[{
                        "apiVersion": JOBS.api_version, "kind": JOBS.kind, "name": run.name,
                        "uid": run.uid, "controller": True, "blockOwnerDeletion": True}])
        spec = copy.deepcopy(template["spec"])
        spec["nodeName"] = NODE_NAME
        now = timestamp()
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": {
            "phase": "Pending", "qosClass": "BestEffort",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                            "lastTransitionTime": now}]}}
        return self._store.create(PODS, pod)

    def _retry(self, run: JobRun) -> None:
        job = self._job(run)
        if job is None or run.finished or self._active_pods(run):
            return
        self._create_pod(run, job)
        self._update_job(run, lambda job: job["status"].update(active=1, ready=0))

    def _pod_ended(self, run: JobRun, succeeded: bool) -> None:
        if run.finished:
            return
        job = self._job(run)
        if job is None:
            return
        now = timestamp()
        if succeeded:
            run.succeeded += 1
            self._finish(run, job, "succeeded", run.succeeded, "SuccessCriteriaMet", "Complete",
                         "CompletionsReached", SUCCESS_MESSAGE, now)
            return
        run.failed += 1
        if run.failed > job["spec"].get("backoffLimit", 6):
            self._finish(run, job, "failed", run.failed, "FailureTarget", "Failed",
                         "BackoffLimitExceeded", BACKOFF_MESSAGE, now)
            return

        def counted(job: dict) -> None:
            job["status"].update(failed=run.failed, ready=0)
            job["status"].pop("active", None)

        self._update_job(run, counted)
        delay = min(self._timings.backoff_cap, self._timings.backoff_base * 2 ** (run.failed - 1))
        self._later(run, delay, self._retry, run)

    def _finish(self, run: JobRun, job: dict, counter: str, count: int, interim: str, final: str,
                reason: str, message: str, now: str) -> None:
        """Write the two-step terminal status, then arm the TTL."""
        run.finished = True

        def interim_status(job: dict) -> None:
            status = job["status"]
            status.update({counter: count, "ready": 0, "terminating": 0})
            status.pop("active", None)
            status["conditions"] = status.get("conditions", []) + [_condition(interim, reason, message, now)]

        def final_status(job: dict) -> None:
            status = job["status"]
            status["conditions"] = status["conditions"] + [_condition(final, reason, message, now)]
            if final == "Complete":
                status["completionTime"] = now

        self._update_job(run, interim_status)
        self._update_job(run, final_status)
        logger.info("job %s/%s %s (%s)", run.namespace, run.name, final.lower(), reason)
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        if ttl is not None:
            self._later(run, ttl, self._store.delete, JOBS, run.namespace, run.name, "Background", run.uid)

    def _deadline(self, run: JobRun) -> None:
        job = self._job(run)
        if job is None or run.finished:
            return
        killed = self._kill_pods(run)
        run.failed += len(killed)
        self._finish(run, job, "failed", run.failed, "FailureTarget", "Failed", "DeadlineExceeded",
                     DEADLINE_MESSAGE, timestamp())
        for pod in killed:
            self._later(run, self._timings.deadline_grace, self._store.delete, PODS,
                        run.namespace, pod["metadata"]["name"], "Background", pod["metadata"]["uid"])

    def _active_pods(self, run: JobRun) -> list[dict]:
        pods, _ = self._store.list(PODS, run.namespace, lambda pod: controller_uid(pod) == run.uid)
        return [pod for pod in pods if not is_terminal(pod)]

    def _kill_pods(self, run: JobRun) -> list[dict]:
        killed = []
        for pod in self._active_pods(run):
            meta = pod["metadata"]
            run.counted.add(meta["uid"])
            if self._kubelet.terminate(run.namespace, meta["name"], meta["uid"], Outcome(143, "Error"),
                                       deleting=True):
                killed.append(pod)
        return killed

    def finish(self, namespace: str, name: str, outcome: Outcome) -> None:
        """End the Job's running pod now (for ``scenario/hold``); scheduler thread only."""
        run = next((r for r in self._runs.values() if (r.namespace, r.name) == (namespace, name)), None)
        if run is None or self._job(run) is None:
            raise LookupError(f"no job {namespace}/{name}")
        if run.finished:
            raise ValueError(f"job {namespace}/{name} has already finished")
        self._start(run)
        pods = self._active_pods(run)
        if not pods:  # between a failure and its retry: start the retry now
            self._retry(run)
            pods = self._active_pods(run)
        for pod in pods:
            self._kubelet.terminate(namespace, pod["metadata"]["name"], pod["metadata"]["uid"], outcome)
