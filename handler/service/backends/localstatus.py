"""What a local job's end looks like from a cluster: pure writers of the Job and pod
status the Job controller and kubelet would write, classified by the same functions
(``outcome.finished_outcome`` / ``stuck_outcome``) the Kubernetes backend uses, so a
local reply cannot drift from a cluster's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from handler.core.manifest import CANCELLED_REASON
from handler.core.outcome import Outcome, Status, finished_outcome, stuck_outcome

#: The conditions' messages: the Job controller's reasons (BackoffLimitExceeded,
#: DeadlineExceeded), but words true of a local process, which has no backoff limit to
#: reach when it is tried once.
BACKOFF_MESSAGE = "the job's local process failed"
DEADLINE_MESSAGE = "the job's local process ran past the request's timeOut"


def _iso(value: datetime) -> str:
    return value.isoformat()


@dataclass(frozen=True)
class Ended:
    """How one attempt (one "pod") ended."""

    exit_code: int | None  # None: never started
    log_tail: str
    start_time: datetime
    end_time: datetime
    timed_out: bool = False
    cannot_start: str | None = None  # the reason it never started
    #: Its exit code is one that fails the Job at once (a podFailurePolicy FailJob rule).
    fail_fast: bool = False
    #: What the process wrote to its termination message file, as a container's ``terminated.message``.
    message: str = ""


def reported_outcome(ended: Ended, pod_name: str, start_time: datetime) -> Outcome:
    """What the Kubernetes path reports for a Job whose (last) pod ended like ``ended``.

    The Job and pod status are written as the Job controller and kubelet write them, then
    classified by the same pure functions the Kubernetes backend uses.
    """
    if ended.cannot_start is not None:
        return cannot_start_outcome("CreateContainerError", ended.cannot_start, pod_name, start_time, ended.end_time)
    end = _iso(ended.end_time)
    succeeded = ended.exit_code == 0 and not ended.timed_out
    if succeeded:
        condition = {"type": "Complete", "reason": "CompletionsReached", "message": "Reached expected number of "
                     "succeeded pods"}
    elif ended.timed_out:
        condition = {"type": "Failed", "reason": "DeadlineExceeded", "message": DEADLINE_MESSAGE}
    elif ended.fail_fast:  # the Job controller's words (the FailJob rule follows the disruption rule, index 0)
        condition = {"type": "Failed", "reason": "PodFailurePolicy", "message": f"Container job for pod local/"
                     f"{pod_name} failed with exit code {ended.exit_code} matching FailJob rule at index 1"}
    else:
        condition = {"type": "Failed", "reason": "BackoffLimitExceeded", "message": BACKOFF_MESSAGE}
    job_status: dict[str, Any] = {
        "startTime": _iso(start_time),
        "conditions": [{**condition, "status": "True", "lastTransitionTime": end}],
    }
    if succeeded:
        job_status["completionTime"] = end
    terminated = {"exitCode": ended.exit_code, "reason": "Completed" if ended.exit_code == 0 else "Error",
                  "startedAt": _iso(ended.start_time), "finishedAt": end}
    if ended.message:
        terminated["message"] = ended.message
    pod = {"metadata": {"name": pod_name, "creationTimestamp": _iso(ended.start_time)},
           "status": {"containerStatuses": [{"name": "job", "state": {"terminated": terminated}}]}}
    outcome = finished_outcome({"status": job_status}, [pod])
    assert outcome is not None  # a terminal condition is always written above
    return outcome.with_log(ended.log_tail)


def cannot_start_outcome(reason: str, message: str, pod_name: str, start_time: datetime,
                         now: datetime) -> Outcome:
    """The ``failed`` outcome of a pod that can never start (as ``stuck_outcome`` gives it)."""
    pod = {"metadata": {"name": pod_name, "creationTimestamp": _iso(start_time)},
           "status": {"startTime": _iso(start_time),
                      "containerStatuses": [{"name": "job", "state": {"waiting": {"reason": reason,
                                                                                   "message": message}}}]}}
    outcome, _ = stuck_outcome({"status": {"startTime": _iso(start_time)}}, [pod], now, grace=0)
    assert outcome is not None
    return outcome


def cancelled_outcome(reason: str, pod_name: str, start_time: datetime, now: datetime) -> Outcome:
    """``cancelled``, worded as the Kubernetes path words it (``manifest.cancelled_outcome``)."""
    return Outcome(Status.CANCELLED, CANCELLED_REASON, f"job was cancelled: {reason}", pod_name=pod_name,
                   start_time=start_time, completion_time=now)
