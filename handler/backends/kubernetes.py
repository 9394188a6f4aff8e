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

from handler.backends import Progress
from handler.config import Settings
from handler.errors import Interrupted, JobExists, JobFailedToStart, Transient
from handler.kube import Kube
from handler.manifest import ANNOTATION_REQUEST_ID, CONTAINER, SELECTOR, build_job
from handler.outcome import Outcome, Status, finished_outcome, parse_time, pod_is_running, stuck_outcome
from handler.request import WorkRequest
from handler.tracker import JobTracker

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

    def run(self, request: WorkRequest, stop: threading.Event, progress: Progress | None = None) -> Outcome:
        manifest = build_job(request, self.settings)
        name = request.job_name
        try:
            self.kube.create_job(manifest)
            log.info("created job %s for request %s", name, request.request_id)
        except JobExists:
            log.info("job %s exists: adopting it for redelivered request %s", name, request.request_id)
            self._check_owner(request)
        except JobFailedToStart as exc:
            log.warning("job %s refused by the API server: %s", name, exc)
            return Outcome(Status.FAILED, exc.reason, exc.message, completion_time=_now())
        if progress:
            progress("accepted", {})
        outcome = self._follow(request, stop, progress)
        return outcome.with_log(self._log_tail(outcome))

    def _check_owner(self, request: WorkRequest) -> None:
        snap = self.tracker.snapshot(request.job_name)
        owner = ((snap.job or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_REQUEST_ID)
        if owner is not None and owner != request.request_id:
            log.warning("job %s belongs to request %s, not %s (hash collision?)", request.job_name, owner,
                        request.request_id)

    def _follow(self, request: WorkRequest, stop: threading.Event, progress: Progress | None) -> Outcome:
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
            if snap.job is None and snap.seen:
                return Outcome(Status.FAILED, "JobDeleted", f"job {name} was deleted before it finished",
                               completion_time=now)
            if snap.job is not None:
                done = finished_outcome(snap.job, snap.pods)
                if done is not None:
                    finished_at = finished_at or time.monotonic()
                    if done.exit_code is None and done.status is not Status.TIMEDOUT and snap.pods \
                            and time.monotonic() - finished_at < POD_DETAIL_WAIT:
                        self.tracker.wait(POD_DETAIL_WAIT / 5)
                        continue
                    if done.status is Status.TIMEDOUT:
                        self._delete(name)
                    return done
                stuck, recheck_at = stuck_outcome(snap.job, snap.pods, now, grace)
                if stuck is not None:
                    self._delete(name)
                    return stuck
                if progress and not started_sent and pod_is_running(snap.pods):
                    started_sent = True
                    progress("started", {})
            if time.monotonic() >= give_up_at:
                self._delete(name)
                start = parse_time(((snap.job or {}).get("status") or {}).get("startTime"))
                return Outcome(Status.TIMEDOUT, "DeadlineExceeded",
                               f"job {name} did not finish within {request.deadline_seconds} s",
                               start_time=start, completion_time=now)
            timeout = min(MAX_WAIT, give_up_at - time.monotonic())
            if recheck_at is not None:
                timeout = min(timeout, (recheck_at - now).total_seconds())
            self.tracker.wait(timeout)

    def _delete(self, name: str) -> None:
        try:
            self.kube.delete_job(name)
            log.info("deleted job %s", name)
        except (Transient, JobFailedToStart) as exc:
            log.warning("could not delete job %s: %s", name, exc)

    def _log_tail(self, outcome: Outcome) -> str:
        if not outcome.pod_name or self.settings.log_tail_lines <= 0:
            return ""
        try:
            return self.kube.pod_log_tail(
                outcome.pod_name, CONTAINER, self.settings.log_tail_lines, self.settings.log_tail_bytes
            )
        except (Transient, JobFailedToStart) as exc:
            log.info("no log for pod %s: %s", outcome.pod_name, exc)
            return ""
