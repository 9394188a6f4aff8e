"""What happened to a Job: pure classification of Job and pod objects (API JSON dicts).

The Job's own conditions are the verdict (``Complete``, ``Failed`` with its reason);
its pods add the detail a user needs (exit code, ``OOMKilled``), and reveal the Jobs
that can never start (image pull errors, missing Secrets), which the Job controller
would otherwise leave pending until the deadline.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any


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


@dataclass(frozen=True)
class Outcome:
    status: Status
    reason: str
    message: str
    exit_code: int | None = None
    #: The container's own termination reason (``OOMKilled``, ``Error``), when known.
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


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _condition(job: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or ():
        if cond.get("type") == kind and cond.get("status") == "True":
            return cond
    return None


def latest_pod(pods: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The pod that speaks for the Job: the newest one (the last retry)."""
    ordered = sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))
    return ordered[-1] if ordered else None


def _container_state(pod: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if pod is None:
        return {}
    statuses = (pod.get("status") or {}).get("containerStatuses") or ()
    return (statuses[0].get("state") or {}) if statuses else {}


def finished_outcome(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> Outcome | None:
    """The verdict once the Job has a terminal condition, else None."""
    complete = _condition(job, "Complete")
    failed = _condition(job, "Failed")
    if complete is None and failed is None:
        return None
    status = job.get("status") or {}
    pod = latest_pod(pods)
    terminated = _container_state(pod).get("terminated") or {}
    cond = complete or failed
    start = parse_time(status.get("startTime"))
    end = parse_time(status.get("completionTime") or cond.get("lastTransitionTime"))
    common = dict(
        exit_code=terminated.get("exitCode"),
        pod_reason=terminated.get("reason"),
        pod_name=pod["metadata"]["name"] if pod else None,
        start_time=start,
        completion_time=end,
    )
    if complete is not None:
        return Outcome(Status.SUCCEEDED, "Completed", "Job completed", **common)
    reason = failed.get("reason") or "Failed"
    message = failed.get("message") or "Job failed"
    if reason == "DeadlineExceeded":
        return Outcome(Status.TIMEDOUT, reason, message, **common)
    if terminated:
        detail = f"container exited with code {terminated.get('exitCode')}"
        if terminated.get("reason"):
            detail += f" ({terminated['reason']})"
        if terminated.get("message"):
            detail += f": {terminated['message']}"
        message = f"{message}; {detail}"
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
    if stuck is None:
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


def pod_is_running(pods: Iterable[Mapping[str, Any]]) -> bool:
    """Any pod's container has started (for the ``started`` lifecycle event)."""
    return any(_container_state(p).get("running") or _container_state(p).get("terminated") for p in pods)


def ended_pod(pods: Iterable[Mapping[str, Any]]) -> tuple[str, bool] | None:
    """The newest pod once its container has terminated: its name, and whether it exited
    0. Its log is final from then on, though the Job's verdict may come later."""
    pod = latest_pod(pods)
    terminated = _container_state(pod).get("terminated")
    if pod is None or not terminated:
        return None
    return pod["metadata"]["name"], terminated.get("exitCode") == 0


def current_state(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], now: datetime,
                  grace: float) -> tuple[str, Outcome | None]:
    """Where a Job is now, for a status query: its outcome once it has one (finished, or a
    pod that can never start), else ``running`` (a container started) or ``pending``."""
    pods = list(pods)
    done = finished_outcome(job, pods) or stuck_outcome(job, pods, now, grace)[0]
    if done is not None:
        return done.status.value, done
    return ("running" if pod_is_running(pods) else "pending"), None
