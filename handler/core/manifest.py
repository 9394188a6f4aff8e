"""The Job manifest for a request: a pure function of (request, settings).

The Job carries everything the cluster needs to enforce the request on its own
(``activeDeadlineSeconds``, ``ttlSecondsAfterFinished``, a ``podFailurePolicy`` that
retries a pod the cluster disrupted and fails at once on the operator's fail-fast exit
codes) and everything a restarted or different handler needs to finish the conversation
(reply_to, correlation id, request id in annotations), so no handler state lives
anywhere but the Job.

The Job also carries the ``cloud-worker.mstc.io/reply`` finalizer: the TTL controller (or
anyone) may mark it for deletion once it ends, but it stays, with its status, until a
handler has confirmed its reply and removed the finalizer in the same PATCH that records
``replied`` (``replied_patch``). A redelivery at any time therefore finds the Job (a 409)
instead of creating it again, and never reads a succeeded Job as deleted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from handler.core.bucketurl import InvalidBucketUrl, parse_bucket_url, split_host_port
from handler.core.config import Settings
from handler.core.naming import identity_hash, sanitise
from handler.core.outcome import CONTAINER, DISRUPTION, Outcome, Status, parse_time, verdict
from handler.core.profiles import BUILTIN, CONTAINER_FIELDS, POD_FIELDS, Profile
from handler.core.request import WorkRequest

MANAGER = "mstc-cloud-worker"
GROUP = "cloud-worker.mstc.io"
#: Holds the Job (not its pods) until its reply is confirmed; see the module docstring.
FINALIZER = f"{GROUP}/reply"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_REQUEST = f"{GROUP}/request"
LABEL_JOB_NAME = f"{GROUP}/job-name"
#: A hash of the request id: a replied Job has left the watch cache, and ``GET /jobs/<id>``
#: (or ``cloud-worker status``) then finds it by this label with one LIST.
LABEL_REQUEST_ID = f"{GROUP}/request-id"
#: The installation's name (``Settings.instance``), when it has one.
LABEL_INSTANCE = f"{GROUP}/instance"
#: The Job profile the request chose, on Jobs of a handler with a profiles file (its pods too).
LABEL_PROFILE = f"{GROUP}/profile"
#: Selects every Job (and pod) cloud workers manage; ``selector`` narrows it to one installation.
SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"
#: Set on a Job (to the reply's status) in the PATCH that records its confirmed reply, so
#: the watch can ask the API server for the Jobs still waiting for one
#: (``waiting_selector``) instead of every finished Job in the namespace.
LABEL_REPLIED = f"{GROUP}/replied"

ANNOTATION_REQUEST_ID = f"{GROUP}/request-id"
ANNOTATION_REPLY_TO = f"{GROUP}/reply-to"
ANNOTATION_CORRELATION_ID = f"{GROUP}/correlation-id"
ANNOTATION_TIMEOUT = f"{GROUP}/timeout-minutes"
ANNOTATION_INPUT = f"{GROUP}/input-bucket-url"
ANNOTATION_OUTPUT = f"{GROUP}/output-bucket-url"
ANNOTATION_TRACEPARENT = f"{GROUP}/traceparent"
ANNOTATION_TRACESTATE = f"{GROUP}/tracestate"
#: What makes two deliveries the same request, and the client's own jobName: with the
#: rest, enough for any replica to rebuild the request (``request_from_job``).
ANNOTATION_IDENTITY = f"{GROUP}/identity"
ANNOTATION_REQUEST_JOB_NAME = f"{GROUP}/request-job-name"
ANNOTATION_PROGRESS = f"{GROUP}/progress-events"
#: The request's ``prefix`` and whether it named its buckets (the original client's form).
ANNOTATION_FILE_PREFIX = f"{GROUP}/file-prefix"
ANNOTATION_NAMED_BUCKETS = f"{GROUP}/named-buckets"
#: Set (to the reply's status) once the terminal reply was confirmed by the broker: a
#: handler adopting the Job later knows the requester has its answer (and replies again
#: anyway, with the same event id: at-least-once).
ANNOTATION_REPLIED = f"{GROUP}/replied"
#: Set (to the reason) by a cancel just before it deletes the Job, so whoever follows the
#: Job reports ``cancelled`` rather than "deleted by someone else" (see ``RequestHandler.cancel`` and the README's "Cancel").
ANNOTATION_CANCELLED = f"{GROUP}/cancelled"
#: Where a job's container says why it failed: Kubernetes' default terminationMessagePath
#: (the kubelet makes the file and copies it into the pod's ``terminated.message``), the
#: variable that names another file instead (the local backend sets it), and as much of
#: it as the kubelet reads.
TERMINATION_LOG = "/dev/termination-log"
TERMINATION_LOG_VARIABLE = "MSTC_TERMINATION_LOG"
TERMINATION_MESSAGE_BYTES = 4096


def selector(settings: Settings) -> str:
    """The label selector of the Jobs and pods this installation follows."""
    return f"{SELECTOR},{LABEL_INSTANCE}={settings.instance}" if settings.instance else SELECTOR


def request_id_selector(settings: Settings, request_id: str) -> str:
    """The label selector of a request's Jobs, replied or not (the annotation says which
    is really it: the label is a hash)."""
    return f"{selector(settings)},{LABEL_REQUEST_ID}={identity_hash(request_id)}"


def waiting_selector(settings: Settings) -> str:
    """The label selector of this installation's Jobs not yet replied to: the ones a
    replica follows. A replied Job leaves the watch (the API server sends it as deleted)."""
    return f"{selector(settings)},!{LABEL_REPLIED}"


def owned(job: Mapping[str, Any], settings: Settings) -> bool:
    """The Job was made by a cloud worker (of this installation, when it has a name):
    the only Jobs a cancel may touch."""
    labels = job["metadata"].get("labels") or {}
    return labels.get(LABEL_MANAGED_BY) == MANAGER and (
        not settings.instance or labels.get(LABEL_INSTANCE) == settings.instance)


def job_labels(request: WorkRequest, settings: Settings | None = None) -> dict[str, str]:
    labels = {
        LABEL_MANAGED_BY: MANAGER,
        LABEL_REQUEST: identity_hash(request.identity),
        LABEL_REQUEST_ID: identity_hash(request.request_id),
        LABEL_JOB_NAME: sanitise(request.client_job_name)[:63].rstrip("-"),
    }
    if settings is not None and settings.instance:
        labels[LABEL_INSTANCE] = settings.instance
    if request.profile.configured:
        labels[LABEL_PROFILE] = request.profile.name
    return labels


def job_annotations(request: WorkRequest) -> dict[str, str]:
    annotations = {
        ANNOTATION_REQUEST_ID: request.request_id,
        ANNOTATION_TIMEOUT: f"{request.timeout_minutes:g}",
        ANNOTATION_INPUT: request.input_bucket_url,
        ANNOTATION_OUTPUT: request.output_bucket_url,
        ANNOTATION_REPLY_TO: request.reply_to,
        ANNOTATION_CORRELATION_ID: request.correlation_id,
        ANNOTATION_TRACEPARENT: request.traceparent,
        ANNOTATION_TRACESTATE: request.tracestate,
        ANNOTATION_IDENTITY: request.identity,
        ANNOTATION_REQUEST_JOB_NAME: request.client_job_name,
        ANNOTATION_PROGRESS: "true" if request.progress_events else None,
        ANNOTATION_FILE_PREFIX: request.file_prefix,
        ANNOTATION_NAMED_BUCKETS: "true" if request.named_buckets else None,
    }
    return {k: v for k, v in annotations.items() if v}


def container_env(request: WorkRequest) -> list[dict[str, str]]:
    """The Job container's env. Every value but ``MSTC_JOB`` comes from the request, so
    each is written with ``escape_env_value``: the kubelet expands ``$(NAME)`` in env
    values from the variables before it and from ``envFrom`` (the bucket credentials),
    and a request must never choose a secret to be pasted into a URL it also chose."""
    env = {
        "INPUT_BUCKET_URL": request.input_bucket_url,
        "OUTPUT_BUCKET_URL": request.output_bucket_url,
        # The original's names and meanings, so its job images keep working: bucket
        # names, the files' prefix, and the endpoint the buckets live on (its jobs build
        # their S3 endpoint from MINIO_SERVICE_HOST/PORT, in a cluster the minio
        # Service's links; set here, they hold in any namespace).
        "INPUT_BUCKET": request.input_bucket,
        "OUTPUT_BUCKET": request.output_bucket,
        "FILE_PREFIX": request.file_prefix,
        **_minio_service(request.input_bucket_url),
        "MSTC_JOB": "true",
        "MSTC_REQUEST_ID": request.request_id,
        "TRACEPARENT": request.traceparent,
    }
    return [{"name": k, "value": escape_env_value(v)} for k, v in env.items() if v]


def _minio_service(url: str) -> dict[str, str]:
    """MINIO_SERVICE_HOST/PORT of an http(s) bucket URL's endpoint; none for ``s3://``
    (its endpoint is the Job's own AWS_ENDPOINT_URL_S3)."""
    try:
        parsed = parse_bucket_url(url)
    except InvalidBucketUrl:
        return {}
    if parsed.endpoint is None:
        return {}
    host, port = split_host_port(parsed.endpoint)
    return {"MINIO_SERVICE_HOST": host, "MINIO_SERVICE_PORT": str(port or (443 if parsed.secure else 80))}


def escape_env_value(value: str) -> str:
    """``value`` as an env value or arg the kubelet turns back into exactly ``value``:
    every ``$`` doubled (``$$`` is the kubelet's escape for a literal ``$``)."""
    return value.replace("$", "$$")


def expand_env_value(value: str, defined: Mapping[str, str]) -> str:
    """What a container sees for the env value ``value``: the kubelet's expansion
    (``$$`` → ``$``; ``$(NAME)`` → ``defined[NAME]`` when defined, else left as it is;
    any other ``$`` kept), so the local backend gives a process what a pod would get."""
    out, i = [], 0
    while i < len(value):
        char = value[i]
        if char != "$" or i + 1 == len(value):
            out.append(char)
            i += 1
            continue
        following = value[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(" and (end := value.find(")", i + 2)) != -1:
            name = value[i + 2:end]
            out.append(defined[name] if name in defined else value[i:end + 1])
            i = end + 1
        else:
            out.append(value[i:i + 2])
            i += 2
    return "".join(out)


def pod_failure_policy(settings: Settings, profile: Profile = BUILTIN) -> dict[str, Any]:
    """Retry a pod the cluster disrupted (drain, preemption, spot reclaim, scale-down)
    within the same deadline, without counting it against ``backoffLimit``; fail the Job
    at once on the fail-fast exit codes (the profile's, else the operator's setting).
    Rules apply in order, first match wins."""
    codes: Sequence[int] = settings.job_fail_fast_exit_codes
    if profile.fail_fast_exit_codes is not None:
        codes = profile.fail_fast_exit_codes
    rules: list[dict[str, Any]] = [{"action": "Ignore", "onPodConditions": [{"type": DISRUPTION, "status": "True"}]}]
    if codes:
        rules.append({"action": "FailJob", "onExitCodes": {
            "containerName": CONTAINER, "operator": "In", "values": sorted(set(codes))}})
    return {"rules": rules}


def build_job(request: WorkRequest, settings: Settings) -> dict[str, Any]:
    """The request's Job: the handler's parts (security context, env from the request,
    labels, annotations, finalizer, deadline, TTL), and the request's profile's fields where
    the profile names them, else the settings'. Nothing of the request but its image, its
    timeout and the env values above reaches the Job; a profile's fields come from the
    profile alone (deep copies: a Job never shares structure with its profile)."""
    profile = request.profile
    labels = job_labels(request, settings)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": request.image,
        "imagePullPolicy": "IfNotPresent",
        "env": container_env(request),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    own = profile.fields(CONTAINER_FIELDS)
    env_from = [{"secretRef": {"name": settings.job_env_secret}}] if settings.job_env_secret else []
    env_from += own.pop("envFrom", [])  # after the bucket credentials: the profile's win a clash
    if env_from:
        container["envFrom"] = env_from
    resources = own.pop("resources") if "resources" in own else (
        settings.job_resources_spec if settings.job_resources else None)
    if resources:
        container["resources"] = resources
    container.update(own)  # volumeMounts
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Jobs talk to buckets, not to the API server.
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.job_run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    pod_fields = profile.fields(POD_FIELDS)
    service_account = pod_fields.pop("serviceAccountName", None) or settings.job_service_account
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    pod_spec.update(pod_fields)
    template_meta: dict[str, Any] = {"labels": labels}
    if profile.spec.get("labels"):
        template_meta["labels"] = {**labels, **profile.fields(("labels",))["labels"]}
    if profile.spec.get("annotations"):
        template_meta["annotations"] = profile.fields(("annotations",))["annotations"]
    backoff_limit = settings.job_backoff_limit if profile.backoff_limit is None else profile.backoff_limit
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": request.job_name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": job_annotations(request),
            "finalizers": [FINALIZER],
        },
        "spec": {
            "backoffLimit": backoff_limit,
            "podFailurePolicy": pod_failure_policy(settings, profile),
            "activeDeadlineSeconds": request.deadline_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {
                "metadata": template_meta,
                "spec": pod_spec,
            },
        },
    }


def request_from_job(job: dict[str, Any]) -> WorkRequest:
    """The request a Job was built for, read back from the Job alone (the inverse of
    ``build_job`` as far as a reply needs), so any replica can describe any Job. Its
    profile is known by name only (its fields are the Job's)."""
    meta = job["metadata"]
    annotations = meta.get("annotations") or {}
    request_id = annotations.get(ANNOTATION_REQUEST_ID, "")
    identity = annotations.get(ANNOTATION_IDENTITY) or request_id
    event_id = event_source = None
    if identity.startswith("ce:") and identity.endswith(f":{request_id}"):  # see request.request_identity
        event_id, event_source = request_id, identity[3:-len(request_id) - 1]
    labels = meta.get("labels") or {}
    return WorkRequest(
        request_id=request_id,
        identity=identity,
        job_name=meta["name"],
        client_job_name=annotations.get(ANNOTATION_REQUEST_JOB_NAME) or labels.get(LABEL_JOB_NAME, ""),
        image=job_image(job),
        timeout_minutes=float(annotations.get(ANNOTATION_TIMEOUT) or 0),
        input_bucket_url=annotations.get(ANNOTATION_INPUT, ""),
        output_bucket_url=annotations.get(ANNOTATION_OUTPUT, ""),
        reply_to=annotations.get(ANNOTATION_REPLY_TO),
        correlation_id=annotations.get(ANNOTATION_CORRELATION_ID),
        event_id=event_id,
        event_source=event_source,
        traceparent=annotations.get(ANNOTATION_TRACEPARENT),
        tracestate=annotations.get(ANNOTATION_TRACESTATE),
        progress_events=annotations.get(ANNOTATION_PROGRESS) == "true",
        file_prefix=annotations.get(ANNOTATION_FILE_PREFIX),
        named_buckets=annotations.get(ANNOTATION_NAMED_BUCKETS) == "true",
        profile=Profile(labels[LABEL_PROFILE]) if labels.get(LABEL_PROFILE) else BUILTIN,
    )


def job_image(job: Mapping[str, Any]) -> str:
    containers = job["spec"]["template"]["spec"].get("containers") or []
    mine = [c for c in containers if c.get("name") == CONTAINER] or containers[:1]
    return mine[0].get("image", "") if mine else ""


def spec_fingerprint(request: WorkRequest) -> str:
    """A short digest of the work a request asks for: image, buckets, timeout, and its
    profile when it has a configured one."""
    work = [request.image, request.input_bucket_url, request.output_bucket_url, f"{request.timeout_minutes:g}"]
    if request.profile.configured:
        work.append(request.profile.name)
    return hashlib.sha256(json.dumps(work).encode()).hexdigest()[:16]


def profile_name(request: WorkRequest) -> str | None:
    """The name of the request's profile when it is a configured one (on the Job), else None."""
    return request.profile.name if request.profile.configured else None


def mismatch(job: Mapping[str, Any], request: WorkRequest) -> str | None:
    """Why an existing Job of the request's name is not this request's Job (None: it is):
    another requester's request, or the same identity asking for other work."""
    annotations = job["metadata"].get("annotations") or {}
    recorded = annotations.get(ANNOTATION_IDENTITY)
    if recorded is not None and recorded != request.identity:
        return f"it belongs to request {annotations.get(ANNOTATION_REQUEST_ID) or recorded!r}"
    theirs = request_from_job(dict(job))
    for what, mine, other in (("image", request.image, theirs.image),
                              ("input bucket", request.input_bucket_url, theirs.input_bucket_url),
                              ("output bucket", request.output_bucket_url, theirs.output_bucket_url),
                              ("timeout", f"{request.timeout_minutes:g}", f"{theirs.timeout_minutes:g}"),
                              ("profile", profile_name(request), profile_name(theirs))):
        if mine != other:
            return f"its {what} is {other!r}, not {mine!r}"
    return None


# --- the reply finalizer (module docstring)

def pointer(key: str) -> str:
    """``key`` as one JSON pointer (RFC 6901) segment."""
    return key.replace("~", "~0").replace("/", "~1")


def release_patch(job: Mapping[str, Any], annotations: Mapping[str, str] | None = None,
                  identity: str | None = None) -> list[dict[str, Any]]:
    """A JSON patch that removes our finalizer, keeping any other, and sets ``annotations``.

    The finalizer list can only be replaced as a whole, so the patch first tests that the
    list is still the one read (another controller, the garbage collector's
    ``foregroundDeletion`` say, may have changed it meanwhile: the API server then refuses
    the patch with 422 and the caller reads again), and, given ``identity``, that the Job is
    still that request's (a namesake made after a deletion is left alone).
    """
    meta = job["metadata"]
    ops: list[dict[str, Any]] = []
    if identity is not None:
        ops.append({"op": "test", "path": f"/metadata/annotations/{pointer(ANNOTATION_IDENTITY)}", "value": identity})
    current = list(meta.get("finalizers") or [])
    if FINALIZER in current:
        ops.append({"op": "test", "path": "/metadata/finalizers", "value": current})
        ops.append({"op": "replace", "path": "/metadata/finalizers", "value": [f for f in current if f != FINALIZER]})
    if annotations:
        if meta.get("annotations") is None:
            ops.append({"op": "add", "path": "/metadata/annotations", "value": dict(annotations)})
        else:
            ops += [{"op": "add", "path": f"/metadata/annotations/{pointer(k)}", "value": v}
                    for k, v in annotations.items()]
    return ops


def replied_patch(job: Mapping[str, Any], status: str, identity: str) -> list[dict[str, Any]]:
    """Record the confirmed reply (annotation and ``LABEL_REPLIED``) and let the Job go, in
    one PATCH (``release_patch``)."""
    ops = release_patch(job, {ANNOTATION_REPLIED: status}, identity)
    if job["metadata"].get("labels") is None:
        ops.append({"op": "add", "path": "/metadata/labels", "value": {LABEL_REPLIED: status}})
    else:
        ops.append({"op": "add", "path": f"/metadata/labels/{pointer(LABEL_REPLIED)}", "value": status})
    return ops


def holds(job: Mapping[str, Any]) -> bool:
    """The Job still carries our finalizer."""
    return FINALIZER in (job["metadata"].get("finalizers") or ())


def held_since(job: Mapping[str, Any]) -> datetime | None:
    """Since when our finalizer holds the Job only to wait for its reply: since its
    verdict, its deletion, or (never started, never deleted) its deadline. None when the
    finalizer is not on it, or the time cannot be told."""
    if not holds(job):
        return None
    meta = job["metadata"]
    found = verdict(job)
    since = None
    if found is not None:
        since = parse_time(found[1].get("lastTransitionTime"))
    if since is None and meta.get("deletionTimestamp"):
        since = parse_time(meta["deletionTimestamp"])
    if since is None:
        created = parse_time(meta.get("creationTimestamp"))
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds") or 0
        since = created + timedelta(seconds=deadline) if created is not None else None
    return since


def finalizer_expired(job: Mapping[str, Any], now: datetime, horizon_seconds: float) -> bool:
    """Our finalizer has held the Job for longer than the horizon since it could have been
    replied to (``held_since``); the janitor then lets it go (``release_patch``)."""
    since = held_since(job)
    return since is not None and (now - since).total_seconds() > horizon_seconds


# --- cancels: marked on the Job, then deleted (README, "Cancel")
#: The ``reason`` of a ``cancelled`` reply.
CANCELLED_REASON = "Cancelled"


def cancel_annotations(reason: str) -> dict[str, str]:
    """The annotations a cancel sets on the Job before deleting it. The mark travels with
    the Job's final state in the deletion event, so whoever follows the Job reports
    ``cancelled`` rather than "deleted by someone else" (``failed: JobDeleted``)."""
    return {ANNOTATION_CANCELLED: reason}


def cancelled_outcome(job: Mapping[str, Any] | None, now: datetime) -> Outcome | None:
    """``cancelled`` for a Job that carries the cancel mark (live or as deleted), else None."""
    if job is None:
        return None
    reason = (job["metadata"].get("annotations") or {}).get(ANNOTATION_CANCELLED)
    if reason is None:
        return None
    start = parse_time((job.get("status") or {}).get("startTime"))
    return Outcome(Status.CANCELLED, CANCELLED_REASON, f"job {job['metadata']['name']} was cancelled: {reason}",
                   start_time=start, completion_time=now)
