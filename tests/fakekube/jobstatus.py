"""What the Job controller writes in ``status``: conditions, pod counters, indexes.

Pure helpers after the docs' "Jobs" page (Kubernetes 1.31+):

- a Job that reaches its end first gets the interim condition —
  ``SuccessCriteriaMet`` or ``FailureTarget`` — and only once none of its pods
  is still running or terminating the terminal one, ``Complete`` or ``Failed``,
  with the same reason and message. ``completionTime`` is set with
  ``Complete`` and only then.
- ``Suspended`` is True (``JobSuspended``, "Job suspended") while
  ``spec.suspend`` holds and turns False (``JobResumed``) on resume.
- ``active`` counts pods neither ended nor being deleted (omitted when 0),
  ``terminating`` the ones being deleted that have not ended, ``ready`` the
  active ones with a True Ready condition; ``failed`` and ``succeeded`` are the
  controller's own tallies.
"""

from .objects import being_deleted

BACKOFF_MESSAGE = "Job has reached the specified backoff limit"
DEADLINE_MESSAGE = "Job was active longer than specified deadline"
SUCCESS_MESSAGE = "Reached expected number of succeeded pods"
FAILED_INDEXES_MESSAGE = "Job has failed indexes"
TERMINAL_PHASES = ("Succeeded", "Failed")
INTERIM = {"Complete": "SuccessCriteriaMet", "Failed": "FailureTarget"}


def condition(kind: str, reason: str, message: str, now: str, status: str = "True") -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}


def set_condition(status: dict, new: dict) -> None:
    """Add ``new``, or replace the condition of its type when status, reason or message differ."""
    conditions = status.setdefault("conditions", [])
    for index, old in enumerate(conditions):
        if old.get("type") == new["type"]:
            if (old.get("status"), old.get("reason"), old.get("message")) != (
                    new["status"], new["reason"], new["message"]):
                conditions[index] = new
            return
    conditions.append(new)


def has_condition(job: dict, kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def ended(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def is_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def counts(pods: list[dict]) -> dict:
    """``active``, ``ready`` and ``terminating`` for the Job's current pods."""
    active = [p for p in pods if not ended(p) and not being_deleted(p)]
    return {"active": len(active), "ready": sum(1 for p in active if is_ready(p)),
            "terminating": sum(1 for p in pods if not ended(p) and being_deleted(p))}


def apply_counts(status: dict, counted: dict, succeeded: int, failed: int) -> None:
    if counted["active"]:
        status["active"] = counted["active"]
    else:
        status.pop("active", None)
    status.update(ready=counted["ready"], terminating=counted["terminating"])
    for field, value in (("succeeded", succeeded), ("failed", failed)):
        if value:
            status[field] = value


def indexes(values: set[int]) -> str:
    """The API's compressed index list: "1,3-5,7" (three or more in a row become a range)."""
    ordered, parts, start = sorted(values), [], None
    for position, value in enumerate(ordered):
        if start is None:
            start = value
        if position + 1 < len(ordered) and ordered[position + 1] == value + 1:
            continue
        if value - start >= 2:
            parts.append(f"{start}-{value}")
        else:
            parts.extend(str(v) for v in range(start, value + 1))
        start = None
    return ",".join(parts)
