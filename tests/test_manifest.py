import json

import pytest

from handler.core.config import Settings
from handler.core.manifest import (
    ANNOTATION_CORRELATION_ID, ANNOTATION_REPLY_TO, ANNOTATION_REQUEST_ID, SELECTOR, build_job, request_from_job,
)
from handler.core.messages import Message
from handler.core.request import parse_request

SEED = {"image": "mstc/python-test:latest", "jobName": "test-job", "inputBucketUrl": "http://minio:9000/inputs",
        "outputBucketUrl": "http://minio:9000/outputs", "timeOut": 2}


def request(body=SEED, **props):
    return parse_request(Message(json.dumps(body).encode(), "application/json", **props), Settings.from_env({}))


def env_of(job):
    return {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_bucket_urls_reach_the_container_under_new_and_legacy_names():
    env = env_of(build_job(request(), Settings.from_env({})))
    assert env["INPUT_BUCKET_URL"] == env["INPUT_BUCKET"] == "http://minio:9000/inputs"
    assert env["OUTPUT_BUCKET_URL"] == env["OUTPUT_BUCKET"] == "http://minio:9000/outputs"
    assert env["MSTC_JOB"] == "true"


@pytest.mark.parametrize("env, path, expected", [
    ({}, ("spec", "backoffLimit"), 0),
    ({"CLOUD_WORKER_JOB_BACKOFF_LIMIT": "2"}, ("spec", "backoffLimit"), 2),
    ({}, ("spec", "activeDeadlineSeconds"), 120),
    ({}, ("spec", "ttlSecondsAfterFinished"), 30),
    ({"CLOUD_WORKER_JOB_TTL_SECONDS": "300"}, ("spec", "ttlSecondsAfterFinished"), 300),
    ({}, ("spec", "template", "spec", "restartPolicy"), "Never"),
    ({}, ("spec", "template", "spec", "containers", 0, "imagePullPolicy"), "IfNotPresent"),
    ({}, ("spec", "template", "spec", "automountServiceAccountToken"), False),
    ({}, ("metadata", "namespace"), "mstc-dev"),
    ({"CLOUD_WORKER_NAMESPACE": "work"}, ("metadata", "namespace"), "work"),
    ({"CLOUD_WORKER_JOB_SERVICE_ACCOUNT": "runner"}, ("spec", "template", "spec", "serviceAccountName"), "runner"),
    ({"CLOUD_WORKER_JOB_ENV_SECRET": "bucket-creds"}, ("spec", "template", "spec", "containers", 0, "envFrom"),
     [{"secretRef": {"name": "bucket-creds"}}]),
    ({"CLOUD_WORKER_JOB_RESOURCES": '{"limits":{"memory":"1Gi"}}'},
     ("spec", "template", "spec", "containers", 0, "resources"), {"limits": {"memory": "1Gi"}}),
    ({"CLOUD_WORKER_JOB_RUN_AS_USER": "4242"}, ("spec", "template", "spec", "securityContext", "runAsUser"), 4242),
])
def test_settings_shape_the_job(env, path, expected):
    value = build_job(request(), Settings.from_env(env))
    for key in path:
        value = value[key]
    assert value == expected


def test_optional_fields_are_absent_unless_configured():
    job = build_job(request(), Settings.from_env({}))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "envFrom" not in container and "resources" not in container
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]


def test_the_job_and_its_pods_carry_the_handler_selector_label():
    job = build_job(request(), Settings.from_env({}))
    key, value = SELECTOR.split("=")
    assert job["metadata"]["labels"][key] == value
    assert job["spec"]["template"]["metadata"]["labels"][key] == value


def test_the_job_records_what_a_new_handler_needs_to_reply():
    job = build_job(request(correlation_id="c-9", reply_to="replies"), Settings.from_env({}))
    annotations = job["metadata"]["annotations"]
    assert annotations[ANNOTATION_REQUEST_ID] == "c-9"
    assert annotations[ANNOTATION_CORRELATION_ID] == "c-9"
    assert annotations[ANNOTATION_REPLY_TO] == "replies"


def test_the_pod_is_restricted_by_default():
    spec = build_job(request(), Settings.from_env({}))["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = spec["containers"][0]["securityContext"]
    assert container == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_building_is_pure_the_same_inputs_give_the_same_manifest():
    r, s = request(correlation_id="x"), Settings.from_env({})
    assert build_job(r, s) == build_job(r, s)


@pytest.mark.parametrize("env", [
    {},
    {"CLOUD_WORKER_JOB_ENV_SECRET": "bucket-creds", "CLOUD_WORKER_JOB_SERVICE_ACCOUNT": "runner",
     "CLOUD_WORKER_JOB_RESOURCES": '{"requests":{"cpu":"100m","memory":"128Mi"},"limits":{"memory":"1Gi"}}'},
])
def test_the_job_passes_the_kubernetes_schema_in_strict_mode(env):
    from tests.support.validate import validate_manifest

    validate_manifest(build_job(request(), Settings.from_env(env)))


def test_the_job_pod_passes_the_restricted_pod_security_standard():
    from tests.support.validate import restricted_pss_violations

    assert restricted_pss_violations(build_job(request(), Settings.from_env({}))["spec"]["template"]["spec"]) == []


@pytest.mark.parametrize("message", [
    Message(json.dumps(SEED).encode(), "application/json", {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
                                                            "tracestate": "v=1", "x-mstc-progress": "true"},
            correlation_id="c-9", reply_to="replies"),
    Message(json.dumps({"specversion": "1.0", "id": "ev:1", "source": "urn:a:b", "type": "t", "data": SEED}).encode(),
            "application/cloudevents+json"),
    Message(json.dumps(SEED).encode(), "application/json"),
], ids=["amqp", "cloudevent", "body-only"])
def test_any_replica_can_rebuild_the_request_from_its_job(message):
    original = parse_request(message, Settings.from_env({}))
    assert request_from_job(build_job(original, Settings.from_env({}))) == original
