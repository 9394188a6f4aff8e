import json
from pathlib import Path

import pytest
from cloudevents.core.bindings import rabbitmq
from cloudevents.core.v1.event import CloudEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handler.core.config import Settings
from handler.core.manifest import (
    ANNOTATION_CORRELATION_ID,
    ANNOTATION_REPLY_TO,
    ANNOTATION_REQUEST_ID,
    SELECTOR,
    build_job,
    mismatch,
    request_from_job,
    spec_fingerprint,
)
from handler.core.messages import Message
from handler.core.request import parse_request

SEED = {"image": "mstc/python-test:latest", "jobName": "test-job", "inputBucketUrl": "http://minio:9000/inputs",
        "outputBucketUrl": "http://minio:9000/outputs", "timeOut": 2}


def request(body=SEED, **props):
    return parse_request(Message(json.dumps(body).encode(), "application/json", **props), Settings.from_env({}))


def env_of(job):
    return {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_bucket_urls_and_the_originals_bucket_names_and_endpoint_reach_the_container():
    env = env_of(build_job(request(), Settings.from_env({})))
    assert (env["INPUT_BUCKET_URL"], env["INPUT_BUCKET"]) == ("http://minio:9000/inputs", "inputs")
    assert (env["OUTPUT_BUCKET_URL"], env["OUTPUT_BUCKET"]) == ("http://minio:9000/outputs", "outputs")
    assert (env["MINIO_SERVICE_HOST"], env["MINIO_SERVICE_PORT"]) == ("minio", "9000")
    assert env["MSTC_JOB"] == "true" and "FILE_PREFIX" not in env


def test_a_request_naming_buckets_gives_the_job_names_prefix_and_the_handlers_endpoint():
    settings = Settings.from_env({"MINIO_SERVICE_HOST": "10.0.0.7", "MINIO_SERVICE_PORT": "9001"})
    body = {"image": "mstc/python-test", "jobName": "test-job", "inputBucket": "test.inputs", "prefix": "17$(X)"}
    job = build_job(parse_request(Message(json.dumps(body).encode(), "application/json"), settings), settings)
    env = env_of(job)
    assert (env["INPUT_BUCKET"], env["OUTPUT_BUCKET"], env["FILE_PREFIX"]) == ("test.inputs", "test.inputs", "17$$(X)")
    assert env["INPUT_BUCKET_URL"] == env["OUTPUT_BUCKET_URL"] == "http://10.0.0.7:9001/test.inputs"
    assert (env["MINIO_SERVICE_HOST"], env["MINIO_SERVICE_PORT"]) == ("10.0.0.7", "9001")
    again = request_from_job(job)
    assert (again.file_prefix, again.named_buckets, again.log_key) == ("17$(X)", True, f"17$(X)-{again.job_name}.log")


def test_an_s3_url_gives_the_job_no_minio_endpoint_its_own_environment_has_one():
    env = env_of(build_job(request(dict(SEED, inputBucketUrl="s3://inputs/run", outputBucketUrl=None)),
                           Settings.from_env({})))
    assert env["INPUT_BUCKET"] == "inputs" and "MINIO_SERVICE_HOST" not in env


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


# --- the cluster's semantics (issue 12): finalizer, failure policy, ownership, identity

def test_every_job_carries_the_reply_finalizer():
    from handler.core.manifest import FINALIZER

    assert build_job(request(), Settings.from_env({}))["metadata"]["finalizers"] == [FINALIZER]


def test_a_disrupted_pod_is_retried_and_the_operators_exit_codes_fail_the_job_at_once():
    policy = build_job(request(), Settings.from_env({"CLOUD_WORKER_JOB_FAIL_FAST_EXIT_CODES": "64,2,2"}))["spec"][
        "podFailurePolicy"]
    assert policy["rules"][0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget",
                                                                            "status": "True"}]}
    assert policy["rules"][1] == {"action": "FailJob", "onExitCodes": {"containerName": "job", "operator": "In",
                                                                       "values": [2, 64]}}
    assert len(build_job(request(), Settings.from_env({}))["spec"]["podFailurePolicy"]["rules"]) == 1


def test_a_fail_fast_exit_code_of_0_is_a_configuration_error():
    from handler.core.errors import ConfigError

    with pytest.raises(ConfigError, match="FAIL_FAST_EXIT_CODES"):
        Settings.from_env({"CLOUD_WORKER_JOB_FAIL_FAST_EXIT_CODES": "0,1"})


def test_the_job_with_a_failure_policy_passes_the_kubernetes_schema():
    from tests.support.validate import validate_manifest

    validate_manifest(build_job(request(), Settings.from_env({"CLOUD_WORKER_JOB_FAIL_FAST_EXIT_CODES": "3"})))


def test_an_instance_name_labels_the_job_and_narrows_what_the_handler_follows_and_cancels():
    from handler.core.manifest import LABEL_INSTANCE, owned, selector

    named = Settings.from_env({"CLOUD_WORKER_INSTANCE": "blue"})
    job = build_job(request(), named)
    assert job["metadata"]["labels"][LABEL_INSTANCE] == "blue"
    assert selector(named) == f"{SELECTOR},{LABEL_INSTANCE}=blue"
    assert owned(job, named) and owned(job, Settings.from_env({}))
    assert not owned(job, Settings.from_env({"CLOUD_WORKER_INSTANCE": "green"}))
    assert not owned({"metadata": {"name": "theirs", "labels": {"app": "x"}}}, Settings.from_env({}))


def test_a_job_is_this_requests_only_if_identity_and_work_match():
    from handler.core.manifest import mismatch

    settings = Settings.from_env({})
    mine = request(correlation_id="1", reply_to="client-a")
    job = build_job(mine, settings)
    assert mismatch(job, mine) is None
    other_client = request(dict(SEED, image="other/image:1"), correlation_id="1", reply_to="client-b")
    assert "belongs to request" in mismatch(job, other_client)
    same_id_other_work = request(dict(SEED, outputBucketUrl="http://minio:9000/elsewhere"), message_id="m")
    assert "output bucket" in mismatch(build_job(request(message_id="m"), settings), same_id_other_work)


def test_the_replied_patch_removes_only_our_finalizer_and_tests_what_it_read():
    from handler.core.manifest import ANNOTATION_REPLIED, FINALIZER, replied_patch
    from tests.fakekube.patch import PatchError, json_patch

    job = build_job(request(message_id="m"), Settings.from_env({}))
    job["metadata"]["finalizers"] = ["foregroundDeletion", FINALIZER]
    patched = json_patch(job, replied_patch(job, "succeeded", "mid:m"))
    assert patched["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert patched["metadata"]["annotations"][ANNOTATION_REPLIED] == "succeeded"
    changed = dict(job, metadata=dict(job["metadata"], finalizers=[FINALIZER]))  # the GC was first
    with pytest.raises(PatchError):
        json_patch(changed, replied_patch(job, "succeeded", "mid:m"))
    with pytest.raises(PatchError):  # a namesake of another request is left alone
        json_patch(job, replied_patch(job, "succeeded", "mid:someone-else"))


def test_the_finalizer_expires_a_horizon_after_the_verdict_or_the_deadline():
    from datetime import UTC, datetime, timedelta

    from handler.core.manifest import finalizer_expired

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    job = build_job(request(), Settings.from_env({}))
    job["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    deadline = job["spec"]["activeDeadlineSeconds"]
    assert not finalizer_expired(job, t0 + timedelta(seconds=deadline + 50), 60)
    assert finalizer_expired(job, t0 + timedelta(seconds=deadline + 70), 60)
    job["status"] = {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T01:00:00Z"}]}
    assert not finalizer_expired(job, t0 + timedelta(hours=1, seconds=50), 60)
    assert finalizer_expired(job, t0 + timedelta(hours=1, seconds=70), 60)
    job["metadata"]["finalizers"] = []
    assert not finalizer_expired(job, t0 + timedelta(days=9), 60)


#: Jobs built before profiles existed (at d150488, by the code of that commit), serialised with
#: ``json.dumps``: the request, the settings and the Job's exact bytes.
UNPROFILED_JOBS = json.loads((Path(__file__).parent / "data" / "unprofiled-jobs.json").read_text())


@pytest.mark.parametrize("pinned", UNPROFILED_JOBS, ids=[case["case"] for case in UNPROFILED_JOBS])
def test_a_request_without_a_profile_builds_the_very_bytes_it_built_before_profiles(pinned):
    settings = Settings.from_env(pinned["env"])
    sent = pinned["message"]
    message = Message(sent["body"].encode(), sent["content_type"], reply_to=sent["reply_to"],
                      correlation_id=sent["correlation_id"], message_id=sent["message_id"])
    assert json.dumps(build_job(parse_request(message, settings), settings)) == pinned["job"]


# --- Job profiles: a profile's fields, and only they, shape its Jobs

GPU = {"resources": {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi", "nvidia.com/gpu": 1}},
       "nodeSelector": {"accelerator": "nvidia"},
       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
       "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
           {"matchExpressions": [{"key": "gpu-model", "operator": "In", "values": ["a100", "h100"]}]}]}}},
       "priorityClassName": "gpu-batch", "runtimeClassName": "nvidia", "serviceAccountName": "solver",
       "envFrom": [{"secretRef": {"name": "licence-server"}}],
       "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "50Gi"}},
                   {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}}],
       "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"},
                        {"name": "models", "mountPath": "/models", "readOnly": True}],
       "labels": {"team": "solvers"}, "annotations": {"example.com/cost-centre": "42"},
       "maxTimeoutMinutes": 20, "backoffLimit": 1, "failFastExitCodes": [2, 64], "maxInFlight": 2}
OPERATOR = {"CLOUD_WORKER_JOB_ENV_SECRET": "bucket-creds", "CLOUD_WORKER_JOB_SERVICE_ACCOUNT": "runner",
            "CLOUD_WORKER_JOB_RESOURCES": '{"limits":{"memory":"512Mi"}}', "CLOUD_WORKER_JOB_FAIL_FAST_EXIT_CODES": "3"}


def profiles_with(settings, **fields):
    from handler.core.profiles import parse_profiles

    return parse_profiles({"default": "standard", "profiles": {"standard": {}, **fields}}, settings, "profiles.yaml")


def differences(a, b, path=""):
    """The paths at which two JSON documents differ (lists of one length compared item by item)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {p for key in a.keys() | b.keys()
                for p in differences(a.get(key, MISSING), b.get(key, MISSING), f"{path}.{key}".lstrip("."))}
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return {p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in differences(x, y, f"{path}[{i}]")}
    return set() if a == b else {path}


MISSING = object()


def fields(paths):
    """Differing paths cut to the Job field they are in (``...containers[0].resources.limits.memory``
    → ``...containers[0].resources``; a pod label or annotation keeps its key)."""
    out = set()
    for path in paths:
        for root in ("spec.template.spec.containers[0].", "spec.template.spec.", "spec.template.metadata.labels.",
                     "spec.template.metadata.", "metadata.labels.", "metadata.annotations.", "spec."):
            if path.startswith(root):
                rest = path[len(root):]
                head = rest if root.endswith("labels.") or root.endswith("annotations.") else \
                    rest.split(".")[0].split("[")[0]
                out.add(root + head)
                break
        else:
            out.add(path)
    return out


def test_a_profiles_job_differs_from_the_default_profiles_by_exactly_the_profiles_fields():
    settings = Settings.from_env(OPERATOR)
    profiles = profiles_with(settings, **{"gpu-large": GPU})
    body = dict(SEED, timeOut=20)
    standard = build_job(parse_request(Message(json.dumps(body).encode()), settings, profiles), settings)
    gpu = build_job(parse_request(Message(json.dumps(dict(body, profile="gpu-large")).encode()), settings, profiles),
                    settings)
    pod = "spec.template.spec"
    assert fields(differences(standard, gpu)) == {
        # The request differs (its body names the profile): its id, its Job's name and labels.
        "metadata.name", f"{pod}.containers[0].env",  # (MSTC_REQUEST_ID)
        "metadata.labels.cloud-worker.mstc.io/request", "metadata.labels.cloud-worker.mstc.io/request-id",
        "metadata.annotations.cloud-worker.mstc.io/request-id", "metadata.annotations.cloud-worker.mstc.io/identity",
        "metadata.labels.cloud-worker.mstc.io/profile", "spec.template.metadata.labels.cloud-worker.mstc.io/profile",
        "spec.template.metadata.labels.cloud-worker.mstc.io/request",
        "spec.template.metadata.labels.cloud-worker.mstc.io/request-id",
        # ... and the profile's fields, each where Kubernetes has it:
        f"{pod}.containers[0].resources", f"{pod}.containers[0].envFrom", f"{pod}.containers[0].volumeMounts",
        f"{pod}.nodeSelector", f"{pod}.tolerations", f"{pod}.affinity", f"{pod}.priorityClassName",
        f"{pod}.runtimeClassName", f"{pod}.serviceAccountName", f"{pod}.volumes",
        "spec.template.metadata.labels.team", "spec.template.metadata.annotations",
        "spec.backoffLimit", "spec.podFailurePolicy",
    }
    spec, container = gpu["spec"]["template"]["spec"], gpu["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi", "nvidia.com/gpu": "1"}}
    assert container["envFrom"] == [{"secretRef": {"name": "bucket-creds"}}, *GPU["envFrom"]]
    assert container["volumeMounts"] == GPU["volumeMounts"]
    assert {k: spec[k] for k in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "runtimeClassName",
                                 "serviceAccountName", "volumes")} == \
        {k: GPU[k] for k in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "runtimeClassName",
                             "serviceAccountName", "volumes")}
    assert gpu["spec"]["template"]["metadata"]["annotations"] == GPU["annotations"]
    assert (gpu["spec"]["backoffLimit"], gpu["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"]["values"]) == \
        (1, [2, 64])
    # The handler's part is untouched by any profile.
    assert spec["securityContext"] == standard["spec"]["template"]["spec"]["securityContext"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert spec["automountServiceAccountToken"] is False


def test_a_profile_that_names_nothing_gives_the_job_of_the_settings_with_the_profile_on_it():
    settings = Settings.from_env(OPERATOR)
    profiles = profiles_with(settings)
    message = Message(json.dumps(SEED).encode(), message_id="m-1")
    unprofiled = build_job(parse_request(message, settings), settings)
    standard = build_job(parse_request(message, settings, profiles), settings)
    assert differences(unprofiled, standard) == {"metadata.labels.cloud-worker.mstc.io/profile",
                                                 "spec.template.metadata.labels.cloud-worker.mstc.io/profile"}


def test_a_profiles_job_reads_back_its_profile_and_a_redelivery_with_another_profile_is_other_work():
    settings = Settings.from_env({})
    profiles = profiles_with(settings, **{"gpu-large": GPU})
    message = Message(json.dumps(dict(SEED, profile="gpu-large")).encode(), message_id="m-1")
    job = build_job(parse_request(message, settings, profiles), settings)
    again = request_from_job(job)
    assert (again.profile.name, again.profile.configured) == ("gpu-large", True)
    same_id_standard = parse_request(Message(json.dumps(SEED).encode(), message_id="m-1"), settings, profiles)
    assert mismatch(job, parse_request(message, settings, profiles)) is None
    assert mismatch(job, same_id_standard) == "its profile is 'gpu-large', not 'standard'"
    assert spec_fingerprint(same_id_standard) != spec_fingerprint(parse_request(message, settings, profiles))


def test_a_profiles_jobs_are_valid_and_admitted_by_a_restricted_namespace():
    from tests.support.validate import restricted_pss_violations, validate_manifest

    settings = Settings.from_env(OPERATOR)
    profiles = profiles_with(settings, **{"gpu-large": GPU})
    job = build_job(parse_request(Message(json.dumps(dict(SEED, profile="gpu-large")).encode()), settings, profiles),
                    settings)
    validate_manifest(job)
    assert restricted_pss_violations(job["spec"]["template"]["spec"]) == []


# --- no request field can add, remove or change a profile field (property test)

#: Request fields that look like what a profile sets, or like the Job itself.
LOOKALIKES = ["resources", "nodeSelector", "tolerations", "affinity", "priorityClassName", "runtimeClassName",
              "serviceAccountName", "envFrom", "volumes", "volumeMounts", "labels", "annotations", "backoffLimit",
              "maxInFlight", "maxTimeoutMinutes", "allowedImages", "failFastExitCodes", "securityContext",
              "hostNetwork", "spec", "template", "metadata", "podFailurePolicy", "namespace", "containers", "env"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(LOOKALIKES) | st.text(max_size=8),
                                                                inner, max_size=3),
    max_leaves=8)
PROFILE_OWNED = {
    "container": ("resources", "envFrom", "volumeMounts", "securityContext"),
    "pod": ("nodeSelector", "tolerations", "affinity", "priorityClassName", "runtimeClassName", "serviceAccountName",
            "volumes", "securityContext", "automountServiceAccountToken", "restartPolicy", "hostNetwork"),
}


def profile_part(job):
    """Everything in a Job that a profile (or the handler) decides and no request may touch."""
    template = job["spec"]["template"]
    spec, (container,) = template["spec"], template["spec"]["containers"]
    labels = {k: v for k, v in template["metadata"]["labels"].items()
              if not k.startswith("cloud-worker.mstc.io/request") and k != "cloud-worker.mstc.io/job-name"}
    return {"container": {k: container.get(k) for k in PROFILE_OWNED["container"]},
            "pod": {k: spec.get(k) for k in PROFILE_OWNED["pod"]},
            "other containers": len(spec["containers"]), "labels": labels,
            "annotations": template["metadata"].get("annotations"),
            "backoffLimit": job["spec"]["backoffLimit"], "podFailurePolicy": job["spec"]["podFailurePolicy"],
            "namespace": job["metadata"]["namespace"]}


PROPERTY_SETTINGS = Settings.from_env(dict(OPERATOR, CLOUD_WORKER_MAX_BODY_BYTES="1000000"))
PROPERTY_PROFILES = profiles_with(PROPERTY_SETTINGS, **{"gpu-large": GPU, "bare": {"maxInFlight": 1}})
#: Each profile's part, from a plain request of it: what every request of that profile must get.
REFERENCE = {name: profile_part(build_job(parse_request(
    Message(json.dumps(dict(SEED, profile=name)).encode()), PROPERTY_SETTINGS, PROPERTY_PROFILES), PROPERTY_SETTINGS))
    for name in PROPERTY_PROFILES.names}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profile=st.sampled_from([None, *PROPERTY_PROFILES.names]),
       extras=st.dictionaries(st.sampled_from(LOOKALIKES) | st.text(max_size=10), JSON_VALUES, max_size=6),
       timeout=st.none() | st.integers(0, 20) | st.floats(0.1, 20),
       as_cloudevent=st.booleans(),
       extensions=st.dictionaries(st.sampled_from(["nodeselector", "resources", "volumes", "tolerations",
                                                   "serviceaccountname", "securitycontext"]),
                                  st.text(max_size=12), max_size=3),
       prefix=st.none() | st.text(alphabet="abc-$()_", max_size=10))
def test_no_request_field_can_add_remove_or_change_a_profile_field(profile, extras, timeout, as_cloudevent,
                                                                   extensions, prefix):
    body = {**extras, **SEED}
    for key, value in (("profile", profile), ("timeOut", timeout), ("prefix", prefix)):
        if value is not None:
            body[key] = value
    if as_cloudevent:
        m = rabbitmq.to_structured_event(CloudEvent(
            attributes={"type": "t", "source": "/s", "id": "1", **extensions}, data=body))
        message = Message(m.body, m.content_type, m.headers)
    else:
        message = Message(json.dumps(body).encode(), "application/json")
    request = parse_request(message, PROPERTY_SETTINGS, PROPERTY_PROFILES)
    chosen = profile or "standard"
    assert request.profile is PROPERTY_PROFILES.get(chosen)
    assert profile_part(build_job(request, PROPERTY_SETTINGS)) == REFERENCE[chosen]
