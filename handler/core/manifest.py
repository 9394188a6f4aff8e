"""The Job manifest for a request: a pure function of (request, settings).

The Job carries everything the cluster needs to enforce the request on its own
(``activeDeadlineSeconds``, ``ttlSecondsAfterFinished``) and everything a restarted or
different handler needs to finish the conversation (reply_to, correlation id, request
id in annotations), so no handler state lives anywhere but the Job.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from handler.core.config import Settings
from handler.core.naming import identity_hash, sanitise
from handler.core.outcome import Outcome, Status, parse_time
from handler.core.request import WorkRequest

MANAGER = "mstc-cloud-worker"
GROUP = "cloud-worker.mstc.io"
CONTAINER = "job"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_REQUEST = f"{GROUP}/request"
LABEL_JOB_NAME = f"{GROUP}/job-name"
#: Selects every Job (and pod) this handler manages; the informer watches exactly these.
SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"

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
#: Set (to the reply's status) once the terminal reply was confirmed by the broker: a
#: handler adopting the Job later knows the requester has its answer (and replies again
#: anyway, with the same event id: at-least-once).
ANNOTATION_REPLIED = f"{GROUP}/replied"
#: Set (to the reason) by a cancel just before it deletes the Job, so whoever follows the
#: Job reports ``cancelled`` rather than "deleted by someone else" (see ``RequestHandler.cancel`` and the README's "Cancel").
ANNOTATION_CANCELLED = f"{GROUP}/cancelled"


def job_labels(request: WorkRequest) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGER,
        LABEL_REQUEST: identity_hash(request.identity),
        LABEL_JOB_NAME: sanitise(request.client_job_name)[:63].rstrip("-"),
    }


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
    }
    return {k: v for k, v in annotations.items() if v}


def container_env(request: WorkRequest) -> list[dict[str, str]]:
    env = {
        "INPUT_BUCKET_URL": request.input_bucket_url,
        "OUTPUT_BUCKET_URL": request.output_bucket_url,
        # The seed's names, kept so its job images keep working.
        "INPUT_BUCKET": request.input_bucket_url,
        "OUTPUT_BUCKET": request.output_bucket_url,
        "MSTC_JOB": "true",
        "MSTC_REQUEST_ID": request.request_id,
        "TRACEPARENT": request.traceparent,
    }
    return [{"name": k, "value": v} for k, v in env.items() if v]


def build_job(request: WorkRequest, settings: Settings) -> dict[str, Any]:
    labels = job_labels(request)
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
    if settings.job_env_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.job_env_secret}}]
    if settings.job_resources:
        container["resources"] = settings.job_resources_spec
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
    if settings.job_service_account:
        pod_spec["serviceAccountName"] = settings.job_service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": request.job_name,
            "namespace": settings.namespace,
            "labels": labels,
            "annotations": job_annotations(request),
        },
        "spec": {
            "backoffLimit": settings.job_backoff_limit,
            "activeDeadlineSeconds": request.deadline_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": pod_spec,
            },
        },
    }


def request_from_job(job: dict[str, Any]) -> WorkRequest:
    """The request a Job was built for, read back from the Job alone (the inverse of
    ``build_job`` as far as a reply needs), so any replica can describe any Job."""
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
        image=job["spec"]["template"]["spec"]["containers"][0]["image"],
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
    )


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
