"""What the API server does to a Job between receiving it and storing it.

Validation answers 422 for the mistakes a manifest builder can make (bad name,
no containers, a restartPolicy a Job may not use); defaulting fills the fields
a real server fills, so the handler sees the same object shape it would see in
a cluster. Pure: the caller supplies the uid and the namespace.
"""

import copy
import re

from .objects import JOBS, random_suffix
from .status import ApiError, bad_request, invalid

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_MESSAGE = ("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                 "characters or '-', and must start and end with an alphanumeric character "
                 "(e.g. 'my-name',  or '123-abc', regex used for validation is "
                 "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
JOB_RESTART_POLICIES = ("OnFailure", "Never")


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> dict:
    return {"reason": reason, "message": message, "field": field}


def _name_causes(name: str) -> list[dict]:
    causes = []
    if len(name) > 63:
        causes.append(_cause("metadata.name", f'Invalid value: "{name}": must be no more than 63 characters'))
    if not DNS1123_LABEL.match(name):
        causes.append(_cause("metadata.name", f'Invalid value: "{name}": {LABEL_MESSAGE}'))
    return causes


def _spec_causes(job: dict) -> list[dict]:
    spec = job.get("spec") or {}
    pod_spec = ((spec.get("template") or {}).get("spec")) or {}
    causes = []
    containers = pod_spec.get("containers") or []
    if not containers:
        causes.append(_cause("spec.template.spec.containers", "Required value", "FieldValueRequired"))
    for index, container in enumerate(containers):
        for field in ("name", "image"):
            if not container.get(field):
                causes.append(_cause(f"spec.template.spec.containers[{index}].{field}",
                                     "Required value", "FieldValueRequired"))
    policy = pod_spec.get("restartPolicy")
    if policy not in JOB_RESTART_POLICIES:
        causes.append(_cause("spec.template.spec.restartPolicy",
                             f'Unsupported value: "{policy or "Always"}": supported values: '
                             '"OnFailure", "Never"', "FieldValueNotSupported"))
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and (not isinstance(deadline, int) or deadline <= 0):
        causes.append(_cause("spec.activeDeadlineSeconds", f"Invalid value: {deadline}: must be greater than 0"))
    for field in ("backoffLimit", "ttlSecondsAfterFinished"):
        value = spec.get(field)
        if value is not None and (not isinstance(value, int) or value < 0):
            causes.append(_cause(f"spec.{field}", f"Invalid value: {value}: must be greater than or equal to 0"))
    return causes


def admit_job(body: object, namespace: str, uid: str) -> dict:
    """Validate and default a Job posted to ``namespace``; raises ApiError."""
    if not isinstance(body, dict):
        raise bad_request("the body of the request must be a JSON object")
    job = copy.deepcopy(body)
    meta = job.setdefault("metadata", {})
    if meta.get("namespace") not in (None, "", namespace):
        raise bad_request("the namespace of the provided object does not match the namespace "
                          "sent on the request")
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = meta["generateName"] + random_suffix()
    name = meta.get("name") or ""
    if not name:
        raise ApiError(422, "Invalid", 'Job.batch "" is invalid: metadata.name: Required value: '
                       "name or generateName is required",
                       {"kind": "Job", "group": "batch", "causes": [
                           _cause("metadata.name", "Required value: name or generateName is required",
                                  "FieldValueRequired")]})
    causes = _name_causes(name) + _spec_causes(job)
    if causes:
        raise invalid(JOBS, name, causes)
    return _defaulted(job, namespace, uid)


def _defaulted(job: dict, namespace: str, uid: str) -> dict:
    job["apiVersion"], job["kind"] = JOBS.api_version, JOBS.kind
    meta = job["metadata"]
    meta.update(namespace=namespace, uid=uid, generation=1)
    spec = job.setdefault("spec", {})
    template = spec.setdefault("template", {})
    template_meta = template.setdefault("metadata", {})
    # batch/v1 defaulting copies the template's labels to an unlabelled Job,
    # before the strategy adds the controller's own labels to the template.
    if not meta.get("labels") and template_meta.get("labels"):
        meta["labels"] = dict(template_meta["labels"])
    template_meta.setdefault("labels", {}).update({
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": meta["name"],
        "controller-uid": uid,
        "job-name": meta["name"],
    })
    for field, value in (("backoffLimit", 6), ("completions", 1), ("parallelism", 1),
                         ("completionMode", "NonIndexed"), ("suspend", False),
                         ("manualSelector", False), ("podReplacementPolicy", "TerminatingOrFailed")):
        spec.setdefault(field, value)
    spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    pod_spec = template.setdefault("spec", {})
    for field, value in (("dnsPolicy", "ClusterFirst"), ("schedulerName", "default-scheduler"),
                         ("securityContext", {}), ("terminationGracePeriodSeconds", 30)):
        pod_spec.setdefault(field, value)
    for container in pod_spec.get("containers", []):
        tagged = ":" in container["image"].rsplit("/", 1)[-1]
        latest = not tagged or container["image"].endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("resources", {})
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
    job["status"] = {}
    return job
