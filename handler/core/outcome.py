"""What happened to a Job: pure classification of Job and pod objects (API JSON dicts).

The Job's own conditions are the verdict. Since Kubernetes 1.31 the Job controller
writes it in two steps: ``SuccessCriteriaMet``/``FailureTarget`` first (the verdict is
final from then on), ``Complete``/``Failed`` once the pods have terminated, which for a
deadline can be a whole grace period later; either step is the verdict here. The pods
add the detail a user needs (exit code, ``OOMKilled``, an eviction or other disruption),
always read from the container named ``job``: the kubelet sorts container statuses by
name, so an injected sidecar may come first, and native sidecars (restartable init
containers) report under ``initContainerStatuses``, which is never read. The pods and the
Job's events also reveal the Jobs that can never start (image pull errors, missing
Secrets, a ``FailedCreate`` refused by quota or admission, a ``Suspended`` Job), which the
Job controller would otherwise leave pending until the deadline.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

#: The Job's own container, by name: the only container whose state is the outcome.
CONTAINER = "job"


class Status(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEDOUT = "timedout"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


#: Container waiting reasons that no amount of waiting fixes (after a grace for
#: registry hiccups and Secrets created a moment late).
STUCK_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"}
)
#: The Job's terminal conditions: (final, interim) for success and for failure.
SUCCESS = ("Complete", "SuccessCriteriaMet")
FAILURE = ("Failed", "FailureTarget")
#: The pod condition the cluster sets on a pod it is about to stop for its own reasons
#: (drain, preemption, taint, pod GC, kubelet shutdown), not because the job failed.
DISRUPTION = "DisruptionTarget"
#: The event reason of a Job whose pod the API server refused (quota, Pod Security
#: admission, LimitRange): the controller retries, but only an operator can fix it.
FAILED_CREATE = "FailedCreate"
#: The scheduler's reason on a pod no node can take (``PodScheduled=False``): a selector,
#: affinity or toleration no node matches, or resources no node has.
SCHEDULED = "PodScheduled"
UNSCHEDULABLE = "Unschedulable"


@dataclass(frozen=True)
class Outcome:
    status: Status
    reason: str
    message: str
    exit_code: int | None = None
    #: Why the pod ended, most specific first: a disruption's reason (``EvictionByEvictionAPI``),
    #: the pod's own (``Evicted``), else the container's (``OOMKilled``, ``Error``).
    pod_reason: str | None = None
    pod_name: str | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None
    log_tail: str = ""

    @property
    def duration_seconds(self) -> float | None:
        if self.start_time is None or self.completion_time is None:
            return None
        return max(0.0, (self.completion_time - self.start_time).total_seconds())

    def with_log(self, log_tail: str) -> Outcome:
        return replace(self, log_tail=log_tail)


def utcnow() -> datetime:
    """Now, in UTC: the clock every outcome and reply is stamped with (tests pass their own)."""
    return datetime.now(UTC)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The object's condition of type ``kind`` when it is True, else None."""
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == kind and cond.get("status") == "True":
            return cast(Mapping[str, Any], cond)
    return None


def verdict(job: Mapping[str, Any]) -> tuple[bool, Mapping[str, Any], bool] | None:
    """(succeeded, the condition, whether it is the final one) once the Job has a verdict."""
    for succeeded, (final, _interim) in ((False, FAILURE), (True, SUCCESS)):
        cond = condition(job, final)
        if cond is not None:
            return succeeded, cond, True
    for succeeded, (_final, interim) in ((False, FAILURE), (True, SUCCESS)):
        cond = condition(job, interim)
        if cond is not None:
            return succeeded, cond, False
    return None


def verdict_is_final(job: Mapping[str, Any]) -> bool:
    """The Job's pods have all terminated (``Complete``/``Failed``), not just its verdict set."""
    found = verdict(job)
    return found is not None and found[2]


def latest_pod(pods: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The pod that speaks for the Job: the newest one (the last retry)."""
    ordered = sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
    return ordered[-1] if ordered else None


def container_status(pod: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The status of the pod's ``job`` container ({} when absent)."""
    if pod is None:
        return {}
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        if status.get("name") == CONTAINER:
            return cast(Mapping[str, Any], status)
    return {}


def _container_state(pod: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return container_status(pod).get("state") or {}


def pod_reason(pod: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """Why the cluster ended the pod, when it did, not the job's code: its
    ``DisruptionTarget`` condition, else its own ``status.reason`` (``Evicted``); with the message."""
    if pod is None:
        return None
    disrupted = condition(pod, DISRUPTION)
    if disrupted is not None:
        return disrupted.get("reason") or DISRUPTION, disrupted.get("message") or "disrupted"
    status = pod.get("status") or {}
    if status.get("reason"):
        return status["reason"], status.get("message") or status["reason"]
    return None


def finished_outcome(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> Outcome | None:
    """The verdict once the Job has a terminal condition (final or interim), else None."""
    found = verdict(job)
    if found is None:
        return None
    succeeded, cond, _ = found
    status = job.get("status") or {}
    pod = latest_pod(pods)
    terminated = _container_state(pod).get("terminated") or {}
    ended_by = pod_reason(pod)
    start = parse_time(status.get("startTime"))
    end = parse_time(status.get("completionTime") or cond.get("lastTransitionTime"))
    pod_name = pod["metadata"]["name"] if pod else None
    common: dict[str, Any] = dict(
        exit_code=terminated.get("exitCode"),
        pod_reason=ended_by[0] if ended_by and not succeeded else terminated.get("reason"),
        pod_name=pod_name,
        start_time=start,
        completion_time=end,
    )
    if succeeded:
        return Outcome(Status.SUCCEEDED, "Completed", "Job completed", **common)
    reason = cond.get("reason") or "Failed"
    message = cond.get("message") or "Job failed"
    if ended_by is not None:
        message = f"{message}; pod {pod_name} was stopped by the cluster ({ended_by[0]}): {ended_by[1]}"
    if terminated:
        detail = f"container exited with code {terminated.get('exitCode')}"
        if terminated.get("reason"):
            detail += f" ({terminated['reason']})"
        if terminated.get("message"):
            detail += f": {terminated['message']}"
        message = f"{message}; {detail}"
    if reason == "DeadlineExceeded":
        return Outcome(Status.TIMEDOUT, reason, message, **common)
    return Outcome(Status.FAILED, reason, message, **common)


def _stuck_since(pod: Mapping[str, Any]) -> tuple[str, str, datetime] | None:
    waiting = _container_state(pod).get("waiting") or {}
    reason = waiting.get("reason")
    if reason not in STUCK_REASONS:
        return None
    since = parse_time((pod.get("status") or {}).get("startTime") or pod["metadata"].get("creationTimestamp"))
    return reason, waiting.get("message") or reason, since or datetime.min


def stuck_outcome(
    job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], now: datetime, grace: float
) -> tuple[Outcome | None, datetime | None]:
    """A ``failed`` outcome for a pod that can never start and has waited past the grace;
    otherwise None and the moment a stuck pod's grace runs out (to re-check then)."""
    pod = latest_pod(pods)
    stuck = _stuck_since(pod) if pod is not None else None
    if pod is None or stuck is None:
        return None, None
    reason, message, since = stuck
    expires = since + timedelta(seconds=grace)
    if now < expires:
        return None, expires
    start = parse_time((job.get("status") or {}).get("startTime"))
    outcome = Outcome(
        Status.FAILED, reason, f"pod {pod['metadata']['name']} cannot start: {message}",
        pod_reason=reason, pod_name=pod["metadata"]["name"], start_time=start, completion_time=now,
    )
    return outcome, None


def _unschedulable(pod: Mapping[str, Any]) -> tuple[str, datetime] | None:
    """The scheduler's message and the time since when, for a pod it cannot place."""
    if (pod.get("spec") or {}).get("nodeName"):
        return None  # placed: whatever the condition says, it is late
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if cond.get("type") == SCHEDULED and cond.get("status") == "False" and cond.get("reason") == UNSCHEDULABLE:
            since = parse_time(cond.get("lastTransitionTime") or pod["metadata"].get("creationTimestamp"))
            return cond.get("message") or UNSCHEDULABLE, since or datetime.min.replace(tzinfo=UTC)
    return None


def unschedulable_outcome(
    job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], now: datetime, grace: float
) -> tuple[Outcome | None, datetime | None]:
    """A ``failed`` outcome (reason ``Unschedulable``, the scheduler's message) for a Job whose
    pod no node has taken for the grace; otherwise None and the moment the grace runs out
    (to re-check then). Reported then, not as a timeout at the deadline."""
    pod = latest_pod(pods)
    found = _unschedulable(pod) if pod is not None else None
    if pod is None or found is None:
        return None, None
    message, since = found
    expires = since + timedelta(seconds=grace)
    if now < expires:
        return None, expires
    name = pod["metadata"]["name"]
    return Outcome(Status.FAILED, UNSCHEDULABLE, f"pod {name} cannot be scheduled: {message}",
                   pod_reason=UNSCHEDULABLE, pod_name=name,
                   start_time=parse_time((job.get("status") or {}).get("startTime")), completion_time=now), None


def _failed_create(job: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> tuple[str, datetime] | None:
    """The Job's newest ``FailedCreate`` event (of this Job, by uid): its message and
    when it first happened."""
    uid = job["metadata"].get("uid")
    found = [e for e in events if e.get("reason") == FAILED_CREATE
             and (e.get("involvedObject") or {}).get("uid") in (None, uid)]
    if not found:
        return None
    newest = max(found, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    first = parse_time(newest.get("firstTimestamp") or newest.get("eventTime")
                       or newest["metadata"].get("creationTimestamp"))
    return newest.get("message") or FAILED_CREATE, first or datetime.min


def held_outcome(
    job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]],
    now: datetime, grace: float
) -> tuple[Outcome | None, datetime | None]:
    """A ``failed`` outcome for a Job held back by the cluster past the grace: ``Suspended``
    (a queue such as Kueue has not admitted it) or unable to create its pod (``FailedCreate``);
    otherwise None and the moment the grace runs out (to re-check then)."""
    name = job["metadata"]["name"]
    suspended = condition(job, "Suspended")
    held: tuple[str, str, datetime] | None = None
    if suspended is not None:
        held = ("Suspended", f"job {name} is suspended: {suspended.get('message') or suspended.get('reason')}",
                parse_time(suspended.get("lastTransitionTime")) or datetime.min)
    elif not list(pods) and not (job.get("status") or {}).get("active"):
        refused = _failed_create(job, events)
        if refused is not None:
            held = (FAILED_CREATE, f"job {name} cannot create its pod: {refused[0]}", refused[1])
    if held is None:
        return None, None
    reason, message, since = held
    expires = since + timedelta(seconds=grace)
    if now < expires:
        return None, expires
    return Outcome(Status.FAILED, reason, message, completion_time=now), None


def start_outcome(
    job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]],
    now: datetime, *, pull_grace: float, start_grace: float, unschedulable_grace: float
) -> tuple[Outcome | None, datetime | None]:
    """A Job that has not started and will not: its pod cannot start (``stuck_outcome``), the
    cluster holds it back (``held_outcome``) or no node takes its pod
    (``unschedulable_outcome``), each past its grace, in that order; otherwise None and the
    soonest moment a grace still running ends (to re-check then: nothing else may change)."""
    pods = list(pods)
    stuck, stuck_until = stuck_outcome(job, pods, now, pull_grace)
    if stuck is not None:
        return stuck, None
    held, held_until = held_outcome(job, pods, events, now, start_grace)
    if held is not None:
        return held, None
    unplaced, unplaced_until = unschedulable_outcome(job, pods, now, unschedulable_grace)
    if unplaced is not None:
        return unplaced, None
    return None, min(filter(None, (stuck_until, held_until, unplaced_until)), default=None)


def pod_is_running(pods: Iterable[Mapping[str, Any]]) -> bool:
    """Any pod's container has started (for the ``started`` lifecycle event)."""
    return any(_container_state(p).keys() & {"running", "terminated"} for p in pods)


def ended_pod(pods: Iterable[Mapping[str, Any]]) -> tuple[str, bool] | None:
    """The newest pod once its container has terminated: its name, and whether it exited
    0. Its log is final from then on, though the Job's verdict may come later."""
    pod = latest_pod(pods)
    terminated = _container_state(pod).get("terminated")
    if pod is None or not terminated:
        return None
    return pod["metadata"]["name"], terminated.get("exitCode") == 0


def current_state(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], now: datetime,
                  grace: float, events: Iterable[Mapping[str, Any]] = (),
                  unschedulable_grace: float | None = None) -> tuple[str, Outcome | None]:
    """Where a Job is now, for a status query: its outcome once it has one (finished, or a
    pod that can never start or be placed), else ``running`` (a container started) or ``pending``."""
    pods = list(pods)
    done = (finished_outcome(job, pods) or stuck_outcome(job, pods, now, grace)[0]
            or held_outcome(job, pods, events, now, grace)[0]
            or (unschedulable_outcome(job, pods, now, unschedulable_grace)[0]
                if unschedulable_grace is not None else None))
    if done is not None:
        return done.status.value, done
    return ("running" if pod_is_running(pods) else "pending"), None
