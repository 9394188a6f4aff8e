"""Jobs nobody answered: when any replica may answer a Job from the Job itself.

A request is answered by the handler that follows its Job, the delivery in hand, and a
redelivery adopts the Job when that handler goes. But a request can leave the queue
unanswered: it carried an AMQP ``expiration`` and expired after going back to the queue
(RabbitMQ keeps a requeued message's original expiry), or it was purged. Its Job, held
by the reply finalizer, still has all a reply needs (``manifest.request_from_job``).

So a Job that could have been answered ``after`` seconds ago (its final verdict, or its
deletion) and has not been is answered by whichever replica sweeps it first: the
replica claims it (a JSON patch that tests the ``resourceVersion`` it read, so one
replica wins), replies, and records the reply without letting the Job go
(``held_reply_patch``): a late redelivery still finds the Job and adopts it rather than
running the work again, until the finalizer horizon lets it go.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from handler.core.manifest import (
    ANNOTATION_IDENTITY,
    ANNOTATION_REPLIED,
    GROUP,
    cancelled_outcome,
    holds,
    pointer,
)
from handler.core.outcome import Outcome, Status, finished_outcome, parse_time, verdict

#: When a replica claimed the Job to answer it (ISO 8601); a claim older than ``after``
#: has lapsed (its replica died before replying) and the Job may be claimed again.
ANNOTATION_CLAIMED = f"{GROUP}/unanswered-claimed"


def answerable_since(job: Mapping[str, Any]) -> datetime | None:
    """Since when the Job could have been answered: its final verdict (its pods have all
    ended), or its deletion; None while it runs."""
    found = verdict(job)
    if found is not None and found[2]:
        return parse_time(found[1].get("lastTransitionTime"))
    return parse_time(job["metadata"].get("deletionTimestamp"))


def unanswered_outcome(job: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], now: datetime,
                       after_seconds: float) -> Outcome | None:
    """The outcome to answer the Job with, if nobody answered it for ``after_seconds``
    since it could have been and no live claim is on it; else None."""
    annotations = job["metadata"].get("annotations") or {}
    if not holds(job) or ANNOTATION_REPLIED in annotations:
        return None
    since = answerable_since(job)
    if since is None or (now - since).total_seconds() < after_seconds:
        return None
    claimed = parse_time(annotations.get(ANNOTATION_CLAIMED))
    if claimed is not None and (now - claimed).total_seconds() < after_seconds:
        return None
    return cancelled_outcome(job, now) or finished_outcome(job, pods) or Outcome(
        Status.FAILED, "JobDeleted", f"job {job['metadata']['name']} was deleted before it finished",
        start_time=parse_time((job.get("status") or {}).get("startTime")), completion_time=since)


def claim_patch(job: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
    """A JSON patch that claims the Job for this replica's answer: refused (422) when the
    Job changed since it was read, another replica's claim included."""
    stamp = now.isoformat().replace("+00:00", "Z")
    return [{"op": "test", "path": "/metadata/resourceVersion", "value": job["metadata"]["resourceVersion"]},
            {"op": "add", "path": f"/metadata/annotations/{pointer(ANNOTATION_CLAIMED)}", "value": stamp}]


def held_reply_patch(job: Mapping[str, Any], status: str, identity: str) -> list[dict[str, Any]]:
    """Record that the reply went out, and keep the Job (its finalizer, and its place in
    the watch): a redelivery may still come, and must adopt it rather than run the work
    again. The finalizer horizon lets it go."""
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": f"/metadata/annotations/{pointer(ANNOTATION_IDENTITY)}", "value": identity}]
    if job["metadata"].get("annotations") is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": {ANNOTATION_REPLIED: status}})
    else:
        ops.append({"op": "add", "path": f"/metadata/annotations/{pointer(ANNOTATION_REPLIED)}", "value": status})
    return ops
