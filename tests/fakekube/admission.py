"""What the API server does to a Job between receiving it and storing it.

Validation answers 422 for the mistakes a manifest builder can make (bad name,
no containers, a restartPolicy a Job may not use, a podFailurePolicy the API
server refuses — see :mod:`tests.fakekube.failurepolicy`); defaulting fills the
fields a real server fills (``podReplacementPolicy`` is ``Failed`` when a
podFailurePolicy is set, ``TerminatingOrFailed`` otherwise), so the handler sees
the same object shape it would see in a cluster. :func:`check_update` refuses
what an update may not change (a Job's selector and template, a pod's spec).
Pure: the caller supplies the uid and the namespace.
"""

import copy
import re

from .failurepolicy import validation_causes
from .objects import JOBS, PODS, Resource, random_suffix
from .status import ApiError, bad_request, invalid

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_MESSAGE = ("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                 "characters or '-', and must start and end with an alphanumeric character "
                 "(e.g. 'my-name',  or '123-abc', regex used for validation is "
                 "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
JOB_RESTART_POLICIES = ("OnFailure", "Never")
MAX_INT32 = 2**31 - 1
POD_UPDATE_MESSAGE = ("Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                      "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                      "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
                      "set to 1 if it was previously negative)")


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
    for field in ("backoffLimit", "ttlSecondsAfterFinished", "backoffLimitPerIndex"):
        value = spec.get(field)
        if value is not None and (not isinstance(value, int) or value < 0):
            causes.append(_cause(f"spec.{field}", f"Invalid value: {value}: must be greater than or equal to 0"))
    if spec.get("backoffLimitPerIndex") is not None and spec.get("completionMode") != "Indexed":
        causes.append(_cause("spec.backoffLimitPerIndex", f"Invalid value: {spec['backoffLimitPerIndex']}: "
                                                          "requires indexed completion mode"))
    if spec.get("suspend") not in (None, True, False):
        causes.append(_cause("spec.suspend", f"Invalid value: {spec['suspend']!r}: must be a boolean"))
    return causes + validation_causes(spec)


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
    policy = spec.get("podFailurePolicy")
    for field, value in (("backoffLimit", 6 if spec.get("backoffLimitPerIndex") is None else MAX_INT32),
                         ("completions", 1), ("parallelism", 1),
                         ("completionMode", "NonIndexed"), ("suspend", False), ("manualSelector", False),
                         ("podReplacementPolicy", "Failed" if policy is not None else "TerminatingOrFailed")):
        spec.setdefault(field, value)
    for rule in (policy or {}).get("rules") or []:
        for pattern in rule.get("onPodConditions") or []:
            pattern.setdefault("status", "True")
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


def check_update(resource: Resource, old: dict, new: dict) -> None:
    """Raise the 422 a real API server answers to an update of an immutable field."""
    name = old["metadata"]["name"]
    if resource is JOBS:
        old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
        causes = [_cause(f"spec.{field}", "Invalid value: ...: field is immutable")
                  for field in ("selector", "template", "completionMode")
                  if new_spec.get(field) != old_spec.get(field)]
        if causes:
            raise invalid(JOBS, name, causes)
    elif resource is PODS:
        def mutable_removed(spec: dict) -> dict:
            spec = copy.deepcopy(spec or {})
            spec.pop("activeDeadlineSeconds", None)
            for key in ("containers", "initContainers"):
                for container in spec.get(key) or []:
                    container.pop("image", None)
            return spec

        if mutable_removed(new.get("spec")) != mutable_removed(old.get("spec")):
            raise invalid(PODS, name, [_cause("spec", POD_UPDATE_MESSAGE, "FieldValueForbidden")])
