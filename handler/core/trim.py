"""What of a Job, a pod or an event the handler keeps in its watch cache.

The API server sends whole objects: a Job with its pod template, ``managedFields`` and
every status counter, a pod with its full spec, volumes and every container's status,
some 4–8 KB of JSON each and several times that as Python objects. The handler reads a
few fields of them (``outcome``, ``manifest.request_from_job``, ``manifest.finalizer_expired``
and the Kubernetes backend), so the tracker keeps only those: a namespace holding
thousands of finished Jobs then costs a replica a few MB, not a few hundred.

Each ``trim_*`` is a pure function listing the fields kept; a field read anywhere in the
handler and missing here is a bug that ``tests/test_trim.py`` catches by running the
readers on trimmed and on whole objects and comparing what they say.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from handler.core.manifest import GROUP
from handler.core.outcome import CONTAINER, DISRUPTION, SCHEDULED

Json = dict[str, Any]
#: The pod labels that name a pod's Job (the tracker indexes pods by them).
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
#: Job metadata read by ``manifest`` (labels, our annotations, our finalizer, the
#: timestamps the janitor and ``latest``-pickers compare), the watch (version) and the
#: claim of an unanswered Job (``unanswered.claim_patch`` tests the version it read).
_JOB_META = ("name", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "labels", "finalizers")
_JOB_STATUS = ("startTime", "completionTime", "active")
_CONDITION = ("type", "status", "reason", "message", "lastTransitionTime")
_POD_META = ("name", "creationTimestamp")
_POD_STATUS = ("reason", "message", "startTime")
_EVENT = ("reason", "message", "firstTimestamp", "lastTimestamp", "eventTime", "count")


def _pick(obj: Mapping[str, Any] | None, keys: tuple[str, ...]) -> Json:
    if not obj:
        return {}
    return {k: obj[k] for k in keys if obj.get(k) is not None}


def trim_job(job: Mapping[str, Any]) -> Json:
    """The Job's identity, labels, our annotations and finalizer, deadline, the ``job``
    container's image, and its start, completion, active count and conditions."""
    meta = job.get("metadata") or {}
    kept_meta = _pick(meta, _JOB_META)
    if "labels" in kept_meta:
        kept_meta["labels"] = {sys.intern(k): v for k, v in kept_meta["labels"].items()}
    # Interned keys: each watch event is parsed apart, and would bring its own copies.
    annotations = {sys.intern(k): v for k, v in (meta.get("annotations") or {}).items() if k.startswith(f"{GROUP}/")}
    if annotations:
        kept_meta["annotations"] = annotations
    spec = job.get("spec") or {}
    containers = (((spec.get("template") or {}).get("spec") or {}).get("containers")) or []
    kept_spec: Json = {"template": {"spec": {"containers": [_pick(c, ("name", "image")) for c in containers]}}}
    if spec.get("activeDeadlineSeconds") is not None:
        kept_spec["activeDeadlineSeconds"] = spec["activeDeadlineSeconds"]
    status = job.get("status") or {}
    kept_status = _pick(status, _JOB_STATUS)
    conditions = [_pick(c, _CONDITION) for c in status.get("conditions") or ()]
    if conditions:
        kept_status["conditions"] = conditions
    return {"metadata": kept_meta, "spec": kept_spec, "status": kept_status}


def _container_state(state: Mapping[str, Any] | None) -> Json:
    kept: Json = {}
    for phase, keys in (("terminated", ("exitCode", "reason", "message")), ("waiting", ("reason", "message")),
                        ("running", ())):
        if phase in (state or {}):
            kept[phase] = _pick((state or {})[phase], keys)
    return kept


def trim_pod(pod: Mapping[str, Any]) -> Json:
    """The pod's name and age, the label naming its Job, the node it was bound to and whether
    the scheduler could place it (its ``PodScheduled`` condition), why it ended (its
    ``DisruptionTarget`` condition, ``reason``), when it started, and the state of its ``job``
    container only."""
    meta = pod.get("metadata") or {}
    kept_meta = _pick(meta, _POD_META)
    labels = meta.get("labels") or {}
    named_by = next((k for k in JOB_NAME_LABELS if k in labels), None)
    if named_by is not None:  # the one label the tracker indexes the pod by
        kept_meta["labels"] = {named_by: labels[named_by]}
    status = pod.get("status") or {}
    kept_status = _pick(status, _POD_STATUS)
    conditions = [_pick(c, _CONDITION) for c in status.get("conditions") or ()
                  if c.get("type") in (DISRUPTION, SCHEDULED)]
    if conditions:
        kept_status["conditions"] = conditions
    containers = [{"name": CONTAINER, "state": _container_state(c.get("state"))}
                  for c in status.get("containerStatuses") or () if c.get("name") == CONTAINER]
    if containers:
        kept_status["containerStatuses"] = containers
    trimmed: Json = {"metadata": kept_meta, "status": kept_status}
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        trimmed["spec"] = {"nodeName": node}
    return trimmed


def trim_event(event: Mapping[str, Any]) -> Json:
    """The event's name and time, the object it is about (name, uid), its reason and message."""
    kept = _pick(event, _EVENT)
    kept["metadata"] = _pick(event.get("metadata"), ("name", "creationTimestamp"))
    kept["involvedObject"] = _pick(event.get("involvedObject"), ("kind", "name", "uid"))
    return kept


TRIMMERS = {"jobs": trim_job, "pods": trim_pod, "events": trim_event}
