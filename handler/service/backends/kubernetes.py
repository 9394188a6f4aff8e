"""The Kubernetes backend: create (or adopt) the Job, follow it through the shared
watch cache, decide its outcome, collect the log tail, tidy up.

A redelivered request finds its Job by name (the 409 of the create) and adopts it, so
no request ever starts a second Job; the Job's reply finalizer keeps it there, however
late the redelivery, until its reply is confirmed (``mark_replied`` removes it). A Job of
that name made for a different request is never adopted: the request gets a Job of its
own under ``distinct_job_name``. Jobs that can never start (a pod stuck pulling its
image, a pod the API server refuses, a Job left suspended), and Jobs the cluster did not
end by their deadline, are deleted here (foreground: their pods stop now). A janitor
releases the finalizer of Jobs whose reply never came within the horizon.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from handler.adapters.kube import Kube
from handler.core.config import Settings
from handler.core.errors import Interrupted, JobExists, JobFailedToStart, NotFound, Transient, WorkerError
from handler.core.events import ACCEPTED, STARTED
from handler.core.manifest import (
    ANNOTATION_REPLIED,
    ANNOTATION_REQUEST_ID,
    LABEL_REQUEST,
    build_job,
    cancel_annotations,
    cancelled_outcome,
    finalizer_expired,
    mismatch,
    owned,
    release_patch,
    replied_patch,
    request_from_job,
    request_id_selector,
    selector,
    spec_fingerprint,
    waiting_selector,
)
from handler.core.messages import CancelOutcome, CancelRequest, CancelStatus
from handler.core.naming import distinct_job_name, identity_hash
from handler.core.outcome import (
    CONTAINER,
    FAILED_CREATE,
    Outcome,
    Status,
    current_state,
    ended_pod,
    finished_outcome,
    parse_time,
    pod_is_running,
    start_outcome,
    utcnow,
    verdict,
    verdict_is_final,
)
from handler.core.request import WorkRequest
from handler.core.unanswered import claim_patch, held_reply_patch, unanswered_outcome
from handler.service import logs
from handler.service.backends import JobView, Progress
from handler.service.backends.podlog import pod_log_stream
from handler.service.tracker import JobTracker, Snapshot, pod_job_name

log = logging.getLogger(__name__)
#: How long a finished Job's verdict waits for its pod's final status (the two arrive
#: on separate watch streams), in seconds, so the reply carries the exit code.
POD_DETAIL_WAIT = 0.5
#: How long a verdict reached before the pods terminated (``FailureTarget``: a deadline,
#: a fail-fast exit code of another pod) waits for the pod's exit code, in seconds. The
#: log is read at once, before the pods go; the wait only completes the exit code.
TERMINATION_WAIT = 10.0
#: Longest wait on the cache between two looks at a followed Job, in seconds: a safety net
#: only. A change to the Job or its pods ends a wait at once, and so does ``wake`` (which
#: whoever sets a request's stop flag calls); a pending grace or deadline shortens it. Each
#: look costs ~0.1 ms, which at one a second was most of what a thousand Jobs in flight
#: cost the handler on a real control plane, where Jobs last minutes, not milliseconds.
MAX_WAIT = 15.0
#: The Job events the tracker follows: only the refusals of a Job's pod.
EVENTS_SELECTOR = f"involvedObject.kind=Job,reason={FAILED_CREATE}"
#: Attempts of a conditional PATCH of the finalizer whose list changed in between.
PATCH_ATTEMPTS = 3



class KubernetesBackend:
    def __init__(self, settings: Settings, kube: Kube | None = None) -> None:
        self.settings = settings
        self.kube = kube or Kube(settings)
        self.namespace = settings.namespace
        self.selector = selector(settings)
        # The Jobs watch selects only Jobs not yet replied to: a namespace's finished Jobs
        # are neither listed nor cached (a redelivery adopting one hands it to ``remember``).
        self.tracker = JobTracker(self.kube, self.selector, events_selector=EVENTS_SELECTOR,
                                  stall_seconds=settings.watch_stall_seconds,
                                  jobs_selector=waiting_selector(settings))
        self._closing = threading.Event()
        self._janitor: threading.Thread | None = None
        # Jobs this replica follows now (a Counter: two deliveries of one request may follow one Job).
        self._following: collections.Counter[str] = collections.Counter()
        self._following_lock = threading.Lock()

    def start(self) -> None:
        self.tracker.start()
        self._janitor = threading.Thread(target=self._janitor_loop, name="finalizer-janitor", daemon=True)
        self._janitor.start()

    def inspect(self) -> None:
        """For ``status`` and ``logs``: the watch cache alone (no finalizer janitor: a tool changes nothing)."""
        self.tracker.start()

    def reachable(self) -> bool:
        return self.kube.reachable()

    def log_stream(self, job_name: str, follow: bool) -> Iterator[bytes]:
        return pod_log_stream(self.kube, job_name, follow, self.settings.job_log_max_bytes)

    def ready(self) -> bool:
        return self.tracker.healthy(stale_after=self.settings.watch_timeout_seconds + 60)

    def wake(self) -> None:
        self.tracker.wake()

    def close(self) -> None:
        self._closing.set()
        self.tracker.stop()
        if self._janitor is not None:
            self._janitor.join(2)
        self.kube.close()

    def instrument(self, metrics: Any) -> None:
        """Expose the shared watch's counters (restarts, re-lists, events)."""
        metrics.watch(self.tracker)

    def lookup(self, request_id: str) -> JobView | None:
        """A request's Job as it is now (any replica can answer): its state, and once it
        has ended its outcome with the log tail. From the watch cache while the Job waits
        for its reply; a replied Job has left the cache and is read with one LIST."""
        snap = self._find(request_id)
        if snap is not None and snap.job is not None:
            job, pods, events = snap.job, snap.pods, snap.events
        else:
            found = self._read_replied(request_id)
            if found is None:
                return None
            job, pods = found
            events = []
        status, outcome = current_state(job, pods, utcnow(), self.settings.image_pull_grace_seconds, events,
                                        unschedulable_grace=self.settings.unschedulable_grace_seconds)
        if outcome is not None:
            outcome = outcome.with_log(self.log_tail(outcome))
        return JobView(request_from_job(job), status, outcome)

    def _read_replied(self, request_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """A request's newest Job and its pods, read from the API server (not cached)."""
        try:
            jobs, _ = self.kube.list("jobs", request_id_selector(self.settings, request_id))
            jobs = [j for j in jobs if (j["metadata"].get("annotations") or {}).get(ANNOTATION_REQUEST_ID) == request_id]
            if not jobs:
                return None
            job = max(jobs, key=lambda j: (j["metadata"].get("creationTimestamp") or "", j["metadata"]["name"]))
            request_label = (job["metadata"].get("labels") or {}).get(LABEL_REQUEST, "")
            pods, _ = self.kube.list("pods", f"{selector(self.settings)},{LABEL_REQUEST}={request_label}")
        except (Transient, JobFailedToStart, NotFound) as exc:
            log.info("could not read the job of request %s: %s", request_id, exc)
            return None
        return job, pods

    def _find(self, request_id: str) -> Snapshot | None:
        """A request's Job (found by its request-id annotation) and pods, from the watch
        cache: what GET /jobs/<request id> shows, on any replica. The newest if several."""
        jobs = self.tracker.find(ANNOTATION_REQUEST_ID, request_id)
        if not jobs:
            return None
        newest = max(jobs, key=lambda j: (j["metadata"].get("creationTimestamp") or "", j["metadata"]["name"]))
        return self.tracker.snapshot(newest["metadata"]["name"])

    def run(self, request: WorkRequest, stop: threading.Event, progress: Progress | None = None) -> Outcome:
        context = logs.context(request)
        before = self.tracker.snapshot(request.job_name, pods=False)  # the Job alone: no wait for the pods
        cancelled = cancelled_outcome(before.last, utcnow()) if before.job is None else None
        if cancelled is not None:  # cancelled and deleted while this delivery waited: never run it again
            log.info("request %s was cancelled (job %s deleted): not creating it again", request.request_id,
                     request.job_name, extra=context)
            return cancelled
        try:
            request = self._create_or_adopt(request, context)
        except JobFailedToStart as exc:
            log.warning("job %s refused by the API server: %s", request.job_name, exc, extra=context)
            return Outcome(Status.FAILED, exc.reason, exc.message, completion_time=utcnow())
        except NotFound as exc:  # the namespace does not exist
            log.warning("job %s refused by the API server: %s", request.job_name, exc, extra=context)
            return Outcome(Status.FAILED, "NotFound", str(exc), completion_time=utcnow())
        if progress:
            progress(ACCEPTED, {})
        early_logs: dict[str, str] = {}
        with self._following_lock:
            self._following[request.job_name] += 1
        try:
            outcome = self._follow(request, stop, progress, early_logs)
        finally:
            with self._following_lock:
                self._following[request.job_name] -= 1
                if self._following[request.job_name] <= 0:
                    del self._following[request.job_name]
        if outcome.pod_name in early_logs:
            return outcome.with_log(early_logs[outcome.pod_name])
        return outcome.with_log(self.log_tail(outcome))

    def _names(self, request: WorkRequest) -> list[str]:
        """Where the request's Job may be: its usual name, then its distinct one."""
        return [request.job_name,
                distinct_job_name(request.client_job_name, request.identity, spec_fingerprint(request))]

    def _create_or_adopt(self, request: WorkRequest, context: dict[str, Any]) -> WorkRequest:
        """Create the request's Job, or adopt the one a previous delivery made; the request
        (renamed when its usual name belongs to another request's Job). Raises
        ``JobFailedToStart`` when the API server refuses it, or both names are taken."""
        refusals = []
        for name in self._names(request):
            request = dataclasses.replace(request, job_name=name)
            for _ in range(2):  # a second try if the Job was deleted between the 409 and the read
                try:
                    self.kube.create_job(build_job(request, self.settings))
                    log.info("created job %s for request %s", name, request.request_id, extra=context)
                    return request
                except JobExists:
                    existing = self.tracker.snapshot(name, pods=False).job
                    if existing is None:
                        existing = self.kube.read_job(name)
                        if existing is not None:  # e.g. replied already: outside the watch's selection
                            self.tracker.remember(existing)
                if existing is not None:
                    break
            else:
                raise JobFailedToStart("JobNameConflict", f"job {name} keeps disappearing as it is created")
            why = mismatch(existing, request)
            if why is None:
                self._adopting(request, existing, context)
                return request
            refusals.append(f"job {name}: {why}")
            log.warning("job %s exists but is not request %s's (%s): giving the request a job of its own",
                        name, request.request_id, why, extra=context)
        raise JobFailedToStart("JobNameConflict", "; ".join(refusals))

    @staticmethod
    def _adopting(request: WorkRequest, job: dict, context: dict[str, Any]) -> None:
        annotations = job["metadata"].get("annotations") or {}
        being_deleted = " (being deleted)" if job["metadata"].get("deletionTimestamp") else ""
        log.info("job %s exists%s: adopting it for redelivered request %s", request.job_name, being_deleted,
                 request.request_id, extra=context)
        if ANNOTATION_REPLIED in annotations:
            log.info("job %s already replied %s to request %s; replying again (at-least-once, same event id)",
                     request.job_name, annotations[ANNOTATION_REPLIED], request.request_id, extra=context)

    def _job_of(self, request: WorkRequest) -> dict | None:
        """The request's Job (under either of its names), from the cache or, when the
        cache has not caught up, the API server; None if it is gone."""
        for name in self._names(request):
            job = self.tracker.snapshot(name, pods=False).job or self.kube.read_job(name)
            if job is not None and mismatch(job, request) is None:
                return job
        return None

    def mark_replied(self, request: WorkRequest, status: str, release: bool = True) -> None:
        """Record on the Job that its terminal reply was confirmed and, with ``release``,
        let the Job go (remove the reply finalizer), in one PATCH. Without it the Job is
        kept, still watched, so a redelivery that may yet come adopts it; the finalizer
        horizon lets it go. Best effort: the Job may be gone already; one left holding is
        released by a redelivery or, at worst, the janitor. Never raises."""
        try:
            job = self._job_of(request)
            for _ in range(PATCH_ATTEMPTS):
                if job is None:
                    return
                name = job["metadata"]["name"]
                patch = replied_patch(job, status, request.identity) if release else \
                    held_reply_patch(job, status, request.identity)
                try:
                    self.kube.patch_job(name, patch)
                    return
                except JobFailedToStart:  # a test failed: its finalizers changed meanwhile
                    job = self.kube.read_job(name)
            log.warning("could not mark job %s replied: it kept changing", request.job_name)
        except (WorkerError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # A 409, a body that is not JSON, a Job edited into another shape: the reply is
            # out either way, and the Job is let go by a redelivery or the janitor.
            log.info("could not mark job %s replied: %s", request.job_name, exc)

    def unanswered(self, after_seconds: float) -> Iterator[tuple[WorkRequest, Outcome]]:
        """The Jobs that ended (or were deleted) ``after_seconds`` ago or more without a
        reply, that this replica does not follow, each claimed for this replica (see
        ``core.unanswered``) as it is yielded, with the request to answer and its outcome."""
        for cached in self.tracker.jobs():
            name = cached["metadata"]["name"]
            with self._following_lock:
                if name in self._following:  # now, not when the sweep began: a redelivery may have adopted it
                    continue
            snap = self.tracker.snapshot(name, pods=False)  # as it is now: answering the last ones took a while
            job = snap.last or cached
            if not owned(job, self.settings):
                continue
            now = utcnow()
            outcome = unanswered_outcome(job, snap.pods, now, after_seconds)
            if outcome is None:
                continue
            try:
                claimed = self.kube.patch_job(name, claim_patch(job, now))
            except (Transient, JobFailedToStart, NotFound) as exc:  # changed meanwhile: another replica, or gone
                log.info("not answering job %s now: %s", name, exc)
                continue
            yield request_from_job(claimed), outcome.with_log(self.log_tail(outcome))

    def stop(self, request: WorkRequest, reason: str) -> CancelOutcome:
        """Stop this request's own Job (found as ``_job_of`` finds it: under its usual or
        its distinct name, and only one recording this request and its work), never a
        namesake of another request. Raises ``Transient`` (retry)."""
        job = self._job_of(request)
        if job is None:
            return CancelOutcome(CancelStatus.NOT_FOUND, None, f"no Job for request {request.request_id}")
        return self._cancel_job(job, reason)

    def cancel(self, target: CancelRequest) -> CancelOutcome:
        """Mark the named Job cancelled, then delete it (foreground: its pods stop now; the
        Job stays, held by its reply finalizer, until its requester's reply is confirmed); a
        Job that already finished is left alone, and a Job this handler did not make is not
        found. Raises ``Transient`` (retry the cancel)."""
        if target.job_name:
            job = self.kube.read_job(target.job_name)
        else:
            snap = self._find(target.request_id or "")
            job = snap.job if snap else None
            if job is None:  # a replied Job has left the watch cache: ask the API server
                found = self._read_replied(target.request_id or "")
                job = found[0] if found else None
        if job is not None and not owned(job, self.settings):
            log.warning("cancel of %s names job %s, which this handler did not make: leaving it alone",
                        target.target, job["metadata"]["name"])
            job = None
        if job is None:
            return CancelOutcome(CancelStatus.NOT_FOUND, None, f"no Job for {target.target}")
        return self._cancel_job(job, target.reason)

    def _cancel_job(self, job: dict, reason: str) -> CancelOutcome:
        """Mark ``job`` cancelled and delete it, that very Job (by its uid: a namesake made
        in between is left alone); a finished one is left as it is."""
        name, uid = job["metadata"]["name"], job["metadata"].get("uid")
        annotations = job["metadata"].get("annotations") or {}
        if verdict(job) is not None or ANNOTATION_REPLIED in annotations:
            return CancelOutcome(CancelStatus.FINISHED, job, f"job {name} had already finished")
        try:
            marked = self.kube.patch_job_annotations(name, cancel_annotations(reason), uid=uid)
            self.kube.delete_job(name, uid=uid)
        except NotFound:
            return CancelOutcome(CancelStatus.NOT_FOUND, None, f"job {name} is gone")
        log.info("cancelled job %s (%s)", name, reason)
        return CancelOutcome(CancelStatus.CANCELLED, marked, f"job {name} cancelled")

    # --- the finalizer janitor
    def _janitor_loop(self) -> None:
        """Every so often (a quarter of the horizon, at most every 10 minutes), sweep the
        watch cache for Jobs our finalizer has held past the horizon: no API call per Job."""
        interval = max(0.1, min(self.settings.finalizer_horizon_seconds / 4, 600.0))
        while not self._closing.wait(interval):
            try:
                self.release_expired()
            except Exception:  # noqa: BLE001 - the janitor must outlive one bad sweep
                log.exception("finalizer sweep failed; trying again in %.0f s", interval)

    def release_expired(self) -> int:
        """Remove our finalizer from every Job it has held past the horizon; how many."""
        now, released = utcnow(), 0
        for job in self.tracker.jobs():
            if not finalizer_expired(job, now, self.settings.finalizer_horizon_seconds):
                continue
            name = job["metadata"]["name"]
            try:
                self.kube.patch_job(name, release_patch(job))
            except (Transient, JobFailedToStart, NotFound) as exc:  # another replica was first, or it changed
                log.info("could not release job %s: %s", name, exc)
                continue
            released += 1
            log.warning("released job %s: its reply was not confirmed within %.0f s; the cluster may now delete it",
                        name, self.settings.finalizer_horizon_seconds)
        return released

    def _follow(self, request: WorkRequest, stop: threading.Event, progress: Progress | None,
                early_logs: dict[str, str]) -> Outcome:
        name = request.job_name
        grace = self.settings.image_pull_grace_seconds
        give_up_at = time.monotonic() + request.deadline_seconds + self.settings.deadline_slack_seconds
        started_sent = False
        finished_at: float | None = None
        final_at: float | None = None  # the final verdict (``Complete``/``Failed``) first seen
        read_before_exit: set[str] = set()  # pods whose log was read before their container ended
        while True:
            if stop.is_set():
                raise Interrupted(f"stopped while following job {name}")
            snap = self.tracker.snapshot(name)
            now = utcnow()
            recheck_at = None
            cancelled = cancelled_outcome(snap.last, now)
            if cancelled is not None:
                if snap.job is not None and not snap.job["metadata"].get("deletionTimestamp"):
                    self._delete(name)  # marked but not deleted: the canceller died in between
                return cancelled
            if snap.job is None and snap.seen:
                # Gone from the cache: replied to by another delivery of this request (a
                # replied Job leaves the watch) keeps the verdict it had; else deleted.
                if snap.last is not None and (done := finished_outcome(snap.last, snap.pods)) is not None:
                    return done if done.exit_code is not None else self._with_pod_detail(request, snap.last, done)
                return Outcome(Status.FAILED, "JobDeleted", f"job {name} was deleted before it finished",
                               completion_time=now)
            if snap.job is not None:
                done = finished_outcome(snap.job, snap.pods)
                if done is not None:
                    finished_at = finished_at or time.monotonic()
                    final = verdict_is_final(snap.job)
                    if final:
                        final_at = final_at or time.monotonic()
                    # Success means the pods have ended (the controller counted the pod's exit
                    # first): only their status may lag, on the pods' stream, so their log is
                    # final and is read once. A failure's interim verdict (a deadline) may
                    # come while they still run: read it before they go.
                    ended = final or done.status is Status.SUCCEEDED
                    waited = time.monotonic() - (final_at if final_at is not None else finished_at)
                    # (A success had a pod, even if not one event of it has arrived yet.)
                    if done.exit_code is None and (snap.pods or done.status is Status.SUCCEEDED) and \
                            waited < (POD_DETAIL_WAIT if final else TERMINATION_WAIT):
                        if done.pod_name and done.pod_name not in early_logs:
                            # Ended: the log is final, so read it now rather than after the
                            # pod's status comes (the read covers most of that wait). Not
                            # ended (a deadline): the pods are about to go, and their log
                            # with them; read again once they have exited.
                            early_logs[done.pod_name] = self._pod_log_tail(done.pod_name)
                            if not ended:
                                read_before_exit.add(done.pod_name)
                        self.tracker.wait(POD_DETAIL_WAIT / 5 if final else min(MAX_WAIT, TERMINATION_WAIT - waited),
                                          name, snap.version, stop)
                        continue
                    if done.pod_name in read_before_exit and done.exit_code is not None:
                        early_logs[done.pod_name] = self._pod_log_tail(done.pod_name) or early_logs[done.pod_name]
                    if done.status is Status.TIMEDOUT:
                        # Read the log before the delete takes the pod with it.
                        if done.pod_name and done.pod_name not in early_logs:
                            early_logs[done.pod_name] = self._pod_log_tail(done.pod_name)
                        self._delete(name)
                    elif done.exit_code is None and final:
                        done = self._with_pod_detail(request, snap.job, done)
                    return done
                if snap.job["metadata"].get("deletionTimestamp"):
                    # Deleted by someone else before it finished; our finalizer only kept it
                    # long enough to say so.
                    return Outcome(Status.FAILED, "JobDeleted", f"job {name} was deleted before it finished",
                                   start_time=parse_time((snap.job.get("status") or {}).get("startTime")),
                                   completion_time=now)
                stuck, recheck_at = start_outcome(snap.job, snap.pods, snap.events, now, pull_grace=grace,
                                                  start_grace=self.settings.job_start_grace_seconds,
                                                  unschedulable_grace=self.settings.unschedulable_grace_seconds)
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
            self.tracker.wait(timeout, name, snap.version, stop)

    def _with_pod_detail(self, request: WorkRequest, job: dict, done: Outcome) -> Outcome:
        """The pods' final status has not reached the cache (its watch lags, e.g. while an
        unwell API server keeps cutting it): read the pods once, for the exit code."""
        try:
            pods, _ = self.kube.list("pods", f"{self.selector},{LABEL_REQUEST}={identity_hash(request.identity)}")
        except (Transient, JobFailedToStart, NotFound) as exc:
            log.info("no pod detail for job %s: %s", request.job_name, exc)
            return done
        return finished_outcome(job, [p for p in pods if pod_job_name(p) == request.job_name]) or done

    def _delete(self, name: str) -> None:
        try:
            self.kube.delete_job(name)
            log.info("deleted job %s", name)
        except (Transient, JobFailedToStart, NotFound) as exc:
            log.warning("could not delete job %s: %s", name, exc)

    def log_tail(self, outcome: Outcome) -> str:
        """The tail of the outcome's pod log ("" when there is none or it cannot be read)."""
        return self._pod_log_tail(outcome.pod_name)

    def job_log(self, request: WorkRequest, outcome: Outcome, limit_bytes: int) -> bytes | None:
        """The outcome's pod log from its start, at most ``limit_bytes`` bytes, for the log
        object (``service.joblog``); None when there is none to read (no pod, or the pod is
        gone: a timed-out Job is deleted, and with it its pod)."""
        if not outcome.pod_name:
            return None
        try:
            return self.kube.pod_log(outcome.pod_name, CONTAINER, limit_bytes)
        except (Transient, JobFailedToStart, NotFound) as exc:
            log.info("no full log for pod %s: %s", outcome.pod_name, exc)
            return None

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
