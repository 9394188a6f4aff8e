"""The Kubernetes backend: create (or adopt) the Job, follow it through the shared
watch cache, decide its outcome, collect the log tail, tidy up.

A redelivered request finds its Job by name (the 409 of the create) and adopts it, so
no request ever starts a second Job. Jobs that can never start, and Jobs the cluster
did not end by their deadline, are deleted here with background propagation.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime


from handler.service import logs
from handler.service.backends import Progress
from handler.core.config import Settings
from handler.core.events import ACCEPTED, STARTED
from handler.core.errors import Interrupted, JobExists, JobFailedToStart, NotFound, Transient
from handler.adapters.kube import Kube
from handler.core.messages import CancelOutcome, CancelRequest, CancelStatus
from handler.core.manifest import cancel_annotations, cancelled_outcome, ANNOTATION_REPLIED, ANNOTATION_REQUEST_ID, CONTAINER, LABEL_REQUEST, SELECTOR, build_job
from handler.core.naming import identity_hash
from handler.core.outcome import Outcome, Status, ended_pod, finished_outcome, parse_time, pod_is_running, stuck_outcome
from handler.core.request import WorkRequest
from handler.service.tracker import JobTracker, Snapshot

log = logging.getLogger(__name__)
#: How long a finished Job's verdict waits for its pod's final status (the two arrive
#: on separate watch streams), in seconds, so the reply carries the exit code.
POD_DETAIL_WAIT = 0.5
#: Longest wait on the cache between looks at the stop flag, in seconds (a safety net:
#: ``wake`` normally ends a wait at once).
MAX_WAIT = 1.0


def _now() -> datetime:
    return datetime.now(UTC)


class KubernetesBackend:
    def __init__(self, settings: Settings, kube: Kube | None = None) -> None:
        self.settings = settings
        self.kube = kube or Kube(settings)
        self.namespace = settings.namespace
        self.tracker = JobTracker(self.kube, SELECTOR)

    def start(self) -> None:
        self.tracker.start()

    def ready(self) -> bool:
        return self.tracker.healthy(stale_after=self.settings.watch_timeout_seconds + 60)

    def wake(self) -> None:
        self.tracker.wake()

    def close(self) -> None:
        self.tracker.stop()
        self.kube.close()

    def lookup(self, request_id: str) -> Snapshot | None:
        """A request's Job (found by its request-id annotation) and pods, from the watch
        cache: what GET /jobs/<request id> shows, on any replica. The newest if several."""
        jobs = self.tracker.find(ANNOTATION_REQUEST_ID, request_id)
        if not jobs:
            return None
        newest = max(jobs, key=lambda j: (j["metadata"].get("creationTimestamp") or "", j["metadata"]["name"]))
        return self.tracker.snapshot(newest["metadata"]["name"])

    def run(self, request: WorkRequest, stop: threading.Event, progress: Progress | None = None) -> Outcome:
        manifest = build_job(request, self.settings)
        name = request.job_name
        context = logs.context(request)
        before = self.tracker.snapshot(name)
        cancelled = cancelled_outcome(before.last, _now()) if before.job is None else None
        if cancelled is not None:  # cancelled and deleted while this delivery waited: never run it again
            log.info("request %s was cancelled (job %s deleted): not creating it again", request.request_id, name,
                     extra=context)
            return cancelled
        try:
            self.kube.create_job(manifest)
            log.info("created job %s for request %s", name, request.request_id, extra=context)
        except JobExists:
            log.info("job %s exists: adopting it for redelivered request %s", name, request.request_id, extra=context)
            self._check_owner(request)
        except JobFailedToStart as exc:
            log.warning("job %s refused by the API server: %s", name, exc, extra=context)
            return Outcome(Status.FAILED, exc.reason, exc.message, completion_time=_now())
        except NotFound as exc:  # the namespace does not exist
            log.warning("job %s refused by the API server: %s", name, exc, extra=context)
            return Outcome(Status.FAILED, "NotFound", str(exc), completion_time=_now())
        if progress:
            progress(ACCEPTED, {})
        early_logs: dict[str, str] = {}
        outcome = self._follow(request, stop, progress, early_logs)
        if outcome.pod_name in early_logs:
            return outcome.with_log(early_logs[outcome.pod_name])
        return outcome.with_log(self.log_tail(outcome))

    def _check_owner(self, request: WorkRequest) -> None:
        snap = self.tracker.snapshot(request.job_name)
        annotations = (snap.job or {}).get("metadata", {}).get("annotations") or {}
        owner = annotations.get(ANNOTATION_REQUEST_ID)
        if owner is not None and owner != request.request_id:
            log.warning("job %s belongs to request %s, not %s (hash collision?)", request.job_name, owner,
                        request.request_id)
        if ANNOTATION_REPLIED in annotations:
            log.info("job %s already replied %s to request %s; replying again (at-least-once, same event id)",
                     request.job_name, annotations[ANNOTATION_REPLIED], request.request_id)

    def mark_replied(self, request: WorkRequest, status: str) -> None:
        """Record on the Job that its terminal reply was confirmed (best effort: the Job
        may be gone already, deleted as stuck, timed out or cancelled)."""
        if self.tracker.snapshot(request.job_name).job is None:
            return
        try:
            self.kube.patch_job_annotations(request.job_name, {ANNOTATION_REPLIED: status})
        except (Transient, JobFailedToStart, NotFound) as exc:
            log.info("could not mark job %s replied: %s", request.job_name, exc)

    def cancel(self, target: CancelRequest) -> CancelOutcome:
        """Mark the named Job cancelled, then delete it (background propagation); a Job
        that already finished is left alone. Raises ``Transient`` (retry the cancel)."""
        if target.job_name:
            job = self.kube.read_job(target.job_name)
        else:
            snap = self.lookup(target.request_id or "")
            job = snap.job if snap else None
        if job is None:
            return CancelOutcome(CancelStatus.NOT_FOUND, None, f"no Job for {target.target}")
        name = job["metadata"]["name"]
        annotations = job["metadata"].get("annotations") or {}
        if finished_outcome(job, []) is not None or ANNOTATION_REPLIED in annotations:
            return CancelOutcome(CancelStatus.FINISHED, job, f"job {name} had already finished")
        try:
            marked = self.kube.patch_job_annotations(name, cancel_annotations(target.reason))
            self.kube.delete_job(name)
        except NotFound:
            return CancelOutcome(CancelStatus.NOT_FOUND, None, f"job {name} is gone")
        log.info("cancelled job %s (%s)", name, target.reason)
        return CancelOutcome(CancelStatus.CANCELLED, marked, f"job {name} cancelled")

    def _follow(self, request: WorkRequest, stop: threading.Event, progress: Progress | None,
                early_logs: dict[str, str]) -> Outcome:
        name = request.job_name
        grace = self.settings.image_pull_grace_seconds
        give_up_at = time.monotonic() + request.deadline_seconds + self.settings.deadline_slack_seconds
        started_sent = False
        finished_at: float | None = None
        while True:
            if stop.is_set():
                raise Interrupted(f"stopped while following job {name}")
            snap = self.tracker.snapshot(name)
            now = _now()
            recheck_at = None
            cancelled = cancelled_outcome(snap.last, now)
            if cancelled is not None:
                if snap.job is not None:  # marked but not deleted: the canceller died in between
                    self._delete(name)
                return cancelled
            if snap.job is None and snap.seen:
                return Outcome(Status.FAILED, "JobDeleted", f"job {name} was deleted before it finished",
                               completion_time=now)
            if snap.job is not None:
                done = finished_outcome(snap.job, snap.pods)
                if done is not None:
                    finished_at = finished_at or time.monotonic()
                    if done.exit_code is None and snap.pods and time.monotonic() - finished_at < POD_DETAIL_WAIT:
                        self.tracker.wait(POD_DETAIL_WAIT / 5, name, snap.version)
                        continue
                    if done.status is Status.TIMEDOUT:
                        # Read the log before the delete takes the pod with it.
                        if done.pod_name and done.pod_name not in early_logs:
                            early_logs[done.pod_name] = self._pod_log_tail(done.pod_name)
                        self._delete(name)
                    elif done.exit_code is None:
                        done = self._with_pod_detail(request, snap.job, done)
                    return done
                stuck, recheck_at = stuck_outcome(snap.job, snap.pods, now, grace)
                if stuck is not None:
                    self._delete(name)
                    return stuck
                if progress and not started_sent and pod_is_running(snap.pods):
                    started_sent = True
                    progress(STARTED, {})
                self._read_log_early(snap.pods, early_logs)
            if time.monotonic() >= give_up_at:
                self._delete(name)
                start = parse_time(((snap.job or {}).get("status") or {}).get("startTime"))
                return Outcome(Status.TIMEDOUT, "DeadlineExceeded",
                               f"job {name} did not finish within {request.deadline_seconds} s",
                               start_time=start, completion_time=now)
            timeout = min(MAX_WAIT, give_up_at - time.monotonic())
            if recheck_at is not None:
                timeout = min(timeout, (recheck_at - now).total_seconds())
            # Woken only by this Job's changes (or ``wake``), and at once by one that came
            # after the snapshot above; not by every event of every Job in flight.
            self.tracker.wait(timeout, name, snap.version)

    def _with_pod_detail(self, request: WorkRequest, job: dict, done: Outcome) -> Outcome:
        """The pods' final status has not reached the cache (its watch lags, e.g. while an
        unwell API server keeps cutting it): read the pods once, for the exit code."""
        try:
            pods, _ = self.kube.list("pods", f"{SELECTOR},{LABEL_REQUEST}={identity_hash(request.identity)}")
        except (Transient, JobFailedToStart, NotFound) as exc:
            log.info("no pod detail for job %s: %s", request.job_name, exc)
            return done
        return finished_outcome(job, pods) or done

    def _delete(self, name: str) -> None:
        try:
            self.kube.delete_job(name)
            log.info("deleted job %s", name)
        except (Transient, JobFailedToStart, NotFound) as exc:
            log.warning("could not delete job %s: %s", name, exc)

    def log_tail(self, outcome: Outcome) -> str:
        """The tail of the outcome's pod log ("" when there is none or it cannot be read)."""
        return self._pod_log_tail(outcome.pod_name)

    def _pod_log_tail(self, pod_name: str | None) -> str:
        if not pod_name or self.settings.log_tail_lines <= 0:
            return ""
        try:
            return self.kube.pod_log_tail(pod_name, CONTAINER, self.settings.log_tail_lines,
                                          self.settings.log_tail_bytes)
        except (Transient, JobFailedToStart, NotFound) as exc:
            log.info("no log for pod %s: %s", pod_name, exc)
            return ""

    def _read_log_early(self, pods: list, early_logs: dict[str, str]) -> None:
        """The Job's pod has ended but its verdict has not arrived (the Job controller
        writes it some time after): read the log tail now, final as it is, so the reply
        does not wait for it once the verdict comes. Only for a pod the Job will not
        retry; the reply of a retried Job reads its last pod's log at the end, as before."""
        ended = ended_pod(pods)
        if ended is None or ended[0] in early_logs:
            return
        name, succeeded = ended
        if succeeded or self.settings.job_backoff_limit == 0:
            early_logs[name] = self._pod_log_tail(name)
