"""The HTTP face through Flask's test client, against the fake API server through the
real KubernetesBackend: every content mode, synchronous and asynchronous, rejections,
idempotency, limits; and once through real gunicorn (`cloud-worker serve`)."""

import io
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

from handler.core.config import Settings
from handler.core.errors import ConfigError
from handler.core.manifest import ANNOTATION_TRACEPARENT, LABEL_REQUEST
from handler.core.naming import identity_hash
from handler.service.backends.kubernetes import KubernetesBackend
from handler.service.http import create_app, message_from_http, read_body, wants_async
from handler.service.serve import options
from tests.support.handlers import REPO
from tests.support.requester import SEED_REQUEST
from tests.support.waiting import job_request, wait_until

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "vendor=opaque"
#: The bearer token every test app accepts, and every test client sends unless told not to.
TOKEN = "test-token-" + uuid.uuid4().hex


@pytest.fixture
def serve(fakekube, namespace):
    """``serve(**settings)`` → a Flask test client of a new app (a new "replica"), sending
    the test token (``serve(token=None)``: a client that sends none)."""
    apps = []

    def make(token=TOKEN, **settings):
        env = {"KUBECONFIG": fakekube.kubeconfig, "CLOUD_WORKER_NAMESPACE": namespace,
               "CLOUD_WORKER_IMAGE_PULL_GRACE_SECONDS": "0.5", "CLOUD_WORKER_DEADLINE_SLACK_SECONDS": "5",
               "CLOUD_WORKER_HTTP_TOKEN": TOKEN}
        env.update({f"CLOUD_WORKER_{k.upper()}": str(v) for k, v in settings.items()})
        s = Settings.from_env(env)
        backend = KubernetesBackend(s)
        backend.start()
        try:
            app = create_app(s, backend)
        except Exception:
            backend.close()
            raise
        apps.append((app, backend))
        client = app.test_client()
        if token:
            client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return client

    yield make
    for app, backend in apps:
        app.extensions["cloud_worker"].close()
        backend.close()


def binary_headers(event_id, source="urn:test:http", **extra):
    return {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": source,
            "ce-type": "io.mstc.work.requested.v1", "Content-Type": "application/json", **extra}


def structured(event_id, data, **attributes):
    return json.dumps({"specversion": "1.0", "id": event_id, "source": "urn:test:http",
                       "type": "io.mstc.work.requested.v1", "datacontenttype": "application/json", "data": data,
                       **attributes})


def test_a_plain_json_request_is_answered_with_a_structured_reply_once_its_job_ends(serve, fakekube, namespace):
    client = serve()
    response = client.post("/", json=job_request("scenario/succeed:0.2"))
    assert response.status_code == 200
    assert response.content_type.startswith("application/cloudevents+json")
    reply = response.get_json()
    assert reply["type"] == "mstc.cloud.worker.job.succeeded.v1"
    assert (reply["data"]["status"], reply["data"]["exitCode"]) == ("succeeded", 0)
    assert fakekube.created_jobs(namespace) == [reply["data"]["jobName"]]


def test_a_binary_cloudevent_is_answered_in_binary_mode_with_its_headers_decoded(serve, fakekube, namespace):
    client = serve()
    event_id = f"ev-{uuid.uuid4().hex[:8]}"
    headers = binary_headers(event_id, source="urn:test:http%20client")  # percent-encoded, per the HTTP binding
    response = client.post("/", data=json.dumps(SEED_REQUEST), headers=headers)
    assert response.status_code == 200
    assert response.headers["ce-type"] == "mstc.cloud.worker.job.succeeded.v1"
    assert response.headers["ce-specversion"] == "1.0" and response.headers["ce-id"]
    assert response.content_type == "application/json"
    data = response.get_json()
    assert (data["status"], data["requestId"]) == ("succeeded", event_id)
    job = fakekube.jobs(namespace)[0]
    assert job["metadata"]["labels"][LABEL_REQUEST] == identity_hash(f"ce:urn:test:http client:{event_id}")


def test_a_structured_cloudevent_gets_a_structured_reply_and_200_even_when_its_job_fails(serve):
    client = serve()
    body = structured("ev-fail", job_request("scenario/fail:3"))
    response = client.post("/", data=body, content_type="application/cloudevents+json")
    assert response.status_code == 200
    reply = response.get_json()
    assert reply["type"] == "mstc.cloud.worker.job.failed.v1"
    assert (reply["data"]["status"], reply["data"]["exitCode"], reply["data"]["requestId"]) == ("failed", 3, "ev-fail")


@pytest.mark.parametrize("mode", ["plain", "structured", "binary"])
def test_a_bad_request_is_answered_400_with_a_rejected_event_in_its_content_mode(serve, fakekube, namespace, mode):
    client = serve()
    bad = dict(SEED_REQUEST, jobName="../../etc/passwd")
    if mode == "plain":
        response = client.post("/", json=bad)
    elif mode == "structured":
        response = client.post("/", data=structured("ev-bad", bad), content_type="application/cloudevents+json")
    else:
        response = client.post("/", data=json.dumps(bad), headers=binary_headers("ev-bad"))
    assert response.status_code == 400
    if mode == "binary":
        assert response.headers["ce-type"] == "mstc.cloud.worker.job.rejected.v1"
        data = response.get_json()
    else:
        assert response.get_json()["type"] == "mstc.cloud.worker.job.rejected.v1"
        data = response.get_json()["data"]
    assert (data["field"], data["reason"]) == ("jobName", "InvalidJobName")
    assert fakekube.created_jobs(namespace) == []


def test_a_binary_event_whose_data_is_not_json_is_rejected_naming_the_data(serve):
    response = serve().post("/", data=b"{not json", headers=binary_headers("ev-broken"))
    assert response.status_code == 400
    assert (response.get_json()["field"], response.get_json()["reason"]) == ("data", "InvalidJson")


def test_the_same_event_id_posted_twice_runs_one_job_synchronously_or_not(serve, fakekube, namespace):
    client = serve()
    headers = binary_headers("ev-twice")
    first = client.post("/", data=json.dumps(job_request("scenario/succeed:0.2")), headers=headers)
    second = client.post("/", data=json.dumps(job_request("scenario/succeed:0.2")), headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.headers["ce-id"] == second.headers["ce-id"]
    third = client.post("/", data=json.dumps(job_request("scenario/succeed:0.2")),
                        headers=dict(headers, Prefer="respond-async"))
    assert third.status_code == 202
    assert len(fakekube.created_jobs(namespace)) == 1


def test_an_asynchronous_request_is_accepted_then_polled_until_its_reply(serve, fakekube, namespace):
    client = serve()
    response = client.post("/", data=structured("ev/async 1", job_request("scenario/succeed:0.5")),
                           content_type="application/cloudevents+json", headers={"Prefer": "respond-async"})
    assert response.status_code == 202
    assert response.headers["Location"] == "/jobs/ev%2Fasync%201"
    assert response.headers["Preference-Applied"] == "respond-async"
    assert response.get_json()["status"] in ("pending", "running")
    assert fakekube.created_jobs(namespace)  # the Job exists when the 202 comes
    states = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        polled = client.get(response.headers["Location"])
        states.append(polled.get_json()["status"])
        if "reply" in polled.get_json():
            break
        assert polled.headers["Retry-After"] == "1"
        time.sleep(0.05)
    doc = polled.get_json()
    assert doc["status"] == "succeeded" and doc["requestId"] == "ev/async 1"
    assert doc["reply"]["type"] == "mstc.cloud.worker.job.succeeded.v1"
    assert "running" in states


def test_any_replica_reads_an_asynchronous_request_back_from_its_job(serve, fakekube, namespace):
    first, second = serve(), serve()
    headers = dict(binary_headers("ev-replica"), Prefer="respond-async", traceparent=TRACEPARENT)
    accepted = first.post("/", data=json.dumps(job_request("scenario/hold")), headers=headers)
    assert accepted.status_code == 202
    wait_until(lambda: second.get("/jobs/ev-replica").status_code == 200, "the other replica sees the job")
    assert second.get("/jobs/ev-replica").get_json()["status"] in ("pending", "running")
    fakekube.finish(namespace, fakekube.created_jobs(namespace)[0])
    wait_until(lambda: "reply" in second.get("/jobs/ev-replica").get_json(), "the other replica has the reply")
    wait_until(lambda: "reply" in first.get("/jobs/ev-replica").get_json(), "the first replica has the reply")
    theirs, ours = second.get("/jobs/ev-replica").get_json(), first.get("/jobs/ev-replica").get_json()
    assert theirs["status"] == ours["status"] == "succeeded"
    assert theirs["reply"]["id"] == ours["reply"]["id"]  # the same event, rebuilt from the Job alone
    assert theirs["reply"]["traceparent"] == TRACEPARENT
    for key in ("jobName", "requestJobName", "image", "inputBucketUrl", "outputBucketUrl", "timeOut", "status"):
        assert theirs["reply"]["data"][key] == ours["reply"]["data"][key], key


def test_an_unknown_request_id_is_404(serve):
    response = serve().get("/jobs/never-posted")
    assert response.status_code == 404
    assert response.get_json()["status"] == "unknown"


def test_a_body_over_the_limit_is_rejected_with_413_and_runs_nothing(serve, fakekube, namespace):
    client = serve(max_body_bytes=1024)
    padded = dict(SEED_REQUEST, padding="x" * 2000)
    response = client.post("/", json=padded)
    assert response.status_code == 413
    data = response.get_json()["data"]
    assert (data["field"], data["reason"]) == ("body", "BodyTooLarge")
    response = client.post("/", data=json.dumps(padded), headers=binary_headers("ev-big"))
    assert response.status_code == 413 and response.headers["ce-type"].endswith(".rejected.v1")
    assert fakekube.created_jobs(namespace) == []


@pytest.mark.parametrize("mode", ["structured", "binary"])
@pytest.mark.parametrize("attribute", ["id", "source", "specversion", "type"])
def test_a_cloudevent_without_a_required_attribute_is_rejected_naming_it_and_runs_nothing(
        serve, fakekube, namespace, mode, attribute):
    client = serve()
    for _ in range(2):  # the same event twice: two answers, and still no Job
        if mode == "structured":
            event = {k: v for k, v in json.loads(structured("ev-x", SEED_REQUEST)).items() if k != attribute}
            response = client.post("/", data=json.dumps(event), content_type="application/cloudevents+json")
        else:
            headers = {k: v for k, v in binary_headers("ev-x").items() if k != f"ce-{attribute}"}
            response = client.post("/", data=json.dumps(SEED_REQUEST), headers=headers)
        assert response.status_code == 400
        data = response.get_json()["data"] if mode == "structured" else response.get_json()  # binary: the data
        assert (data["field"], data["reason"]) == (attribute, "InvalidCloudEvent")
        assert f"no '{attribute}' attribute" in data["message"]
    assert fakekube.created_jobs(namespace) == []


def test_different_rejections_of_id_less_requests_have_different_event_and_request_ids(serve, fakekube, namespace):
    client = serve(max_body_bytes=1024)
    answers = [
        client.post("/", data=json.dumps(SEED_REQUEST), content_type="text/plain"),  # 415
        client.post("/", data=json.dumps(SEED_REQUEST), content_type="text/plain"),  # 415, another request
        client.post("/", json=dict(SEED_REQUEST, padding="x" * 2000)),  # 413
        client.post("/", json=dict(SEED_REQUEST, timeOut=-1)),  # 400
        client.post("/", json=dict(SEED_REQUEST, jobName="../bad")),  # 400, another answer
    ]
    assert [a.status_code for a in answers] == [415, 415, 413, 400, 400]
    events = [a.get_json() for a in answers]
    assert len({e["id"] for e in events}) == len(events)
    assert len({e["data"]["requestId"] for e in events}) == len(events)
    again = client.post("/", json=dict(SEED_REQUEST, timeOut=-1))  # the same answer to the same request
    assert again.get_json()["id"] == events[3]["id"]
    assert fakekube.created_jobs(namespace) == []


def test_probes_and_metrics_are_served_in_http_mode(serve):
    client = serve()
    assert client.get("/healthz").get_json()["alive"] is True
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json() == {"ready": True, "kubernetes": True}
    client.post("/", json=job_request("scenario/succeed:0.1"))
    metrics = client.get("/metrics")
    assert metrics.content_type.startswith("text/plain")
    assert 'cloud_worker_requests_total{outcome="succeeded",profile="default"} 1.0' in metrics.text


@pytest.mark.parametrize("mode", ["header", "extension"])
def test_trace_context_reaches_the_job_and_the_reply_unchanged(serve, fakekube, namespace, mode):
    client = serve()
    if mode == "header":
        response = client.post("/", json=job_request("scenario/succeed:0.1"),
                               headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE})
        reply_trace = response.get_json()["traceparent"], response.get_json()["tracestate"]
    else:
        headers = binary_headers("ev-traced", **{"ce-traceparent": TRACEPARENT, "ce-tracestate": TRACESTATE})
        response = client.post("/", data=json.dumps(job_request("scenario/succeed:0.1")), headers=headers)
        reply_trace = response.headers["ce-traceparent"], response.headers["ce-tracestate"]
    assert response.status_code == 200
    assert reply_trace == (TRACEPARENT, TRACESTATE)
    job = fakekube.jobs(namespace)[0]
    assert job["metadata"]["annotations"][ANNOTATION_TRACEPARENT] == TRACEPARENT
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRACEPARENT"] == TRACEPARENT


@pytest.mark.parametrize("prefer, expected", [
    ("respond-async", True), ("wait=10, respond-async", True), ("Respond-Async; x=1", True),
    ("return=minimal", False), ("", False),
])
def test_prefer_respond_async_is_found_among_other_preferences(prefer, expected):
    assert wants_async({"Prefer": prefer}) is expected


def test_an_idempotency_key_names_a_plain_request_else_its_body_does():
    keyed = message_from_http({"Content-Type": "application/json", "Idempotency-Key": "k-1"}, b"{}")
    assert keyed.message_id == "k-1"
    assert message_from_http({"Content-Type": "application/json"}, b"{}").message_id is None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cloud_worker_serve_runs_gunicorn_that_answers_a_cloudevent(fakekube, namespace, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_WORKER_")}
    env.update({"KUBECONFIG": fakekube.kubeconfig, "CLOUD_WORKER_NAMESPACE": namespace,
                "CLOUD_WORKER_HTTP_PORT": str(port), "CLOUD_WORKER_HTTP_THREADS": "4",
                "CLOUD_WORKER_HTTP_PROBE_PORT": str(free_port()), "CLOUD_WORKER_HTTP_TOKEN": TOKEN,
                "CLOUD_WORKER_SHUTDOWN_GRACE_SECONDS": "2", "CLOUD_WORKER_LOG_FORMAT": "json"})
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "handler.cli", "serve"], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/readyz"), "gunicorn is ready", timeout=30)
        response = requests.post(base + "/", data=json.dumps(job_request("scenario/succeed:0.2")),
                                 headers=dict(binary_headers("ev-gunicorn"), Authorization=f"Bearer {TOKEN}"),
                                 timeout=30)
        assert response.status_code == 200, log_path.read_text()
        assert response.headers["ce-type"] == "mstc.cloud.worker.job.succeeded.v1"
        assert response.json()["requestId"] == "ev-gunicorn"
        chunked = requests.post(base + "/", data=(b"x" * 1024 for _ in range(10_000)), timeout=30,
                                headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
        assert chunked.status_code == 413 and chunked.json()["data"]["reason"] == "BodyTooLarge"
        assert "Transfer-Encoding" not in chunked.request.headers or chunked.request.headers.get("Content-Length") is None
        unauthenticated = requests.post(base + "/", json=SEED_REQUEST, timeout=5)
        assert unauthenticated.status_code == 401 and unauthenticated.headers["WWW-Authenticate"]
        probe_port = env["CLOUD_WORKER_HTTP_PROBE_PORT"]
        assert requests.get(f"http://127.0.0.1:{probe_port}/healthz", timeout=5).json()["alive"] is True
        metrics = requests.get(base + "/metrics", timeout=5).text
        assert 'cloud_worker_requests_total{outcome="succeeded",profile="default"} 1.0' in metrics
        assert "cloud_worker_receipt_to_job_created_seconds_count 1.0" in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    assert code == 0, log_path.read_text()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    created = [line for line in lines if line["message"].startswith("created job")]
    assert created and created[0]["request_id"] == "ev-gunicorn" and created[0]["job_name"]
    assert any(line["logger"] == "gunicorn.error" for line in lines)  # gunicorn's own lines are JSON too


def _answers(url):
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def test_a_cancel_posted_asynchronously_cancels_the_running_job_at_once(serve, fakekube, namespace):
    client = serve()
    started = client.post("/", data=structured("ev-cancel-me", job_request("scenario/hold")),
                          content_type="application/cloudevents+json", headers={"Prefer": "respond-async"})
    assert started.status_code == 202
    cancel_event = json.dumps({"specversion": "1.0", "id": "cancel-1", "source": "urn:test:http",
                               "type": "mstc.cloud.worker.job.cancel.v1", "datacontenttype": "application/json",
                               "data": {"requestId": "ev-cancel-me", "reason": "changed my mind"}})
    answer = client.post("/", data=cancel_event, content_type="application/cloudevents+json",
                         headers={"Prefer": "respond-async"})
    assert answer.status_code == 200
    assert answer.get_json()["data"]["status"] == "cancelled"
    wait_until(lambda: fakekube.jobs(namespace) == [], "the cancelled job is deleted")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        doc = client.get(started.headers["Location"]).get_json()
        if "reply" in doc:
            break
        time.sleep(0.05)
    assert doc["status"] == "cancelled"


# --- security: a token on every route but the probes; bounded threads; JSON answers; limits

def test_every_route_but_the_probes_needs_a_bearer_token_it_accepts(serve, fakekube, namespace):
    client = serve(token=None)
    attempts = [
        ("POST", "/", {}), ("GET", "/jobs/any-id", {}), ("GET", "/no/such/route", {}), ("DELETE", "/", {}),
        ("POST", "/", {"Authorization": "Bearer wrong"}), ("POST", "/", {"Authorization": f"Bearer {TOKEN}x"}),
        ("POST", "/", {"Authorization": f"Basic {TOKEN}"}), ("POST", "/", {"Authorization": "Bearer "}),
        ("POST", "/", {"Authorization": TOKEN}),
    ]
    for method, path, headers in attempts:
        response = client.open(path, method=method, json=job_request("scenario/succeed:0.1"), headers=headers)
        assert response.status_code == 401, (method, path, headers)
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="cloud-worker"')
        assert response.get_json()["status"] == "unauthorized"
    wrong = client.post("/", json={}, headers={"Authorization": "Bearer wrong"})
    assert wrong.headers["WWW-Authenticate"] == 'Bearer realm="cloud-worker", error="invalid_token"'
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path
    assert fakekube.created_jobs(namespace) == []
    accepted = client.post("/", json=job_request("scenario/succeed:0.1"), headers={"Authorization": f"bearer {TOKEN}"})
    assert accepted.status_code == 200


def test_a_rotated_token_file_is_read_again_without_a_restart(serve, tmp_path):
    path = tmp_path / "token"

    def write(text):  # as the kubelet updates a mounted Secret: a new file swapped in
        (tmp_path / "next").write_text(text)
        os.replace(tmp_path / "next", path)

    write("old-token\n")
    client = serve(token=None, http_token="", http_token_file=path)

    def status(token):
        return client.get("/jobs/unknown", headers={"Authorization": f"Bearer {token}"}).status_code
    assert (status("old-token"), status("new-token")) == (404, 401)
    write("# rotating: both for a while\nold-token\nnew-token\n")
    assert (status("old-token"), status("new-token")) == (404, 404)
    write("new-token\n")
    assert (status("old-token"), status("new-token")) == (401, 404)
    path.unlink()  # a vanished file keeps the tokens read last
    assert (status("old-token"), status("new-token")) == (401, 404)


@pytest.mark.parametrize("host, bind", [("0.0.0.0", "0.0.0.0:8080"), ("127.0.0.1", "127.0.0.1:8080"),
                                        ("::1", "[::1]:8080")])
def test_serve_binds_every_interface_unless_told_which(host, bind):
    assert options(Settings(http_auth="none", http_host=host))["bind"] == [bind]


def test_serve_refuses_to_start_without_a_token_unless_authentication_is_turned_off(serve, fakekube, namespace,
                                                                                   tmp_path):
    with pytest.raises(ConfigError, match="CLOUD_WORKER_HTTP_AUTH=none"):
        options(Settings(namespace=namespace))
    with pytest.raises(ConfigError, match="CLOUD_WORKER_HTTP_AUTH=none"):
        serve(http_token="")
    with pytest.raises(ConfigError, match="cannot be read"):
        serve(http_token="", http_token_file=tmp_path / "missing")
    with pytest.raises(ConfigError, match="hold no token"):
        (tmp_path / "empty").write_text("\n# nothing yet\n")
        serve(http_token="", http_token_file=tmp_path / "empty")
    assert options(Settings(http_auth="none"))["threads"] == 32
    open_client = serve(token=None, http_token="", http_auth="none")
    assert open_client.post("/", json=job_request("scenario/succeed:0.1")).status_code == 200
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD_WORKER_")}
    env.update({"KUBECONFIG": fakekube.kubeconfig, "CLOUD_WORKER_NAMESPACE": namespace,
                "CLOUD_WORKER_HTTP_PORT": str(free_port())})
    refused = subprocess.run([sys.executable, "-m", "handler.cli", "serve"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=60)
    assert refused.returncode == 3 and "needs a bearer token" in refused.stderr


def test_two_producers_reusing_an_event_id_get_two_jobs_asynchronously(serve, fakekube, namespace):
    client = serve()
    for source in ("urn:producer:one", "urn:producer:two"):
        response = client.post("/", data=json.dumps(job_request("scenario/succeed:0.2")),
                               headers=dict(binary_headers("ev-shared", source=source), Prefer="respond-async"))
        assert response.status_code == 202
    again = client.post("/", data=json.dumps(job_request("scenario/succeed:0.2")),
                        headers=dict(binary_headers("ev-shared", source="urn:producer:one"), Prefer="respond-async"))
    assert again.status_code == 202
    wait_until(lambda: len(fakekube.created_jobs(namespace)) == 2, "both producers' Jobs exist")
    time.sleep(0.3)
    assert len(fakekube.created_jobs(namespace)) == 2  # and the repeat ran none


def test_unknown_routes_wrong_methods_and_content_types_are_answered_in_json(serve, fakekube, namespace):
    client = serve()
    missing = client.get("/no/such/route")
    assert missing.status_code == 404 and missing.get_json()["error"] == "Not Found"
    wrong_method = client.put("/")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["error"] == "Method Not Allowed"
    assert "POST" in wrong_method.headers["Allow"]
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/cloudevents-batch+json"):
        response = client.post("/", data=json.dumps(SEED_REQUEST), content_type=content_type)
        assert response.status_code == 415, content_type
        data = response.get_json()["data"]
        assert (data["field"], data["reason"]) == ("content-type", "UnsupportedMediaType")
    assert client.post("/", data=json.dumps(job_request("scenario/succeed:0.1")),
                       content_type="application/json; charset=utf-8").status_code == 200
    assert len(fakekube.created_jobs(namespace)) == 1


def test_asynchronous_requests_past_the_limit_are_answered_503_and_start_no_thread(serve, fakekube, namespace):
    client = serve(http_async_limit=1)
    first = client.post("/", data=json.dumps(job_request("scenario/hold")),
                        headers=dict(binary_headers("ev-first"), Prefer="respond-async"))
    assert first.status_code == 202
    threads = threading.active_count()
    second = client.post("/", data=json.dumps(job_request("scenario/hold")),
                         headers=dict(binary_headers("ev-second"), Prefer="respond-async"))
    assert second.status_code == 503 and second.headers["Retry-After"] == "1"
    assert second.get_json()["status"] == "busy" and threading.active_count() == threads
    repeat = client.post("/", data=json.dumps(job_request("scenario/hold")),
                         headers=dict(binary_headers("ev-first"), Prefer="respond-async"))
    assert repeat.status_code == 202  # the request already followed is no new thread
    fakekube.finish(namespace, fakekube.created_jobs(namespace)[0])
    wait_until(lambda: "reply" in client.get("/jobs/ev-first").get_json(), "the first request has its reply")
    third = client.post("/", data=json.dumps(job_request("scenario/succeed:0.1")),
                        headers=dict(binary_headers("ev-third"), Prefer="respond-async"))
    assert third.status_code == 202
    assert len(fakekube.created_jobs(namespace)) == 2


def test_synchronous_requests_past_all_threads_but_one_are_answered_503_at_once(serve, fakekube, namespace):
    client = serve(http_threads=3)
    answers = []
    holders = [threading.Thread(target=lambda i=i: answers.append(client.post(
        "/", data=json.dumps(job_request("scenario/hold")), headers=binary_headers(f"ev-hold-{i}")).status_code))
        for i in range(2)]
    for holder in holders:
        holder.start()
    wait_until(lambda: len(fakekube.created_jobs(namespace)) == 2, "two synchronous requests hold their threads")
    started = time.monotonic()
    busy = client.post("/", data=json.dumps(job_request("scenario/succeed:0.1")), headers=binary_headers("ev-3"))
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1" and time.monotonic() - started < 1
    assert client.get("/jobs/ev-hold-0").status_code == 200  # polls still answered
    for name in fakekube.created_jobs(namespace):
        fakekube.finish(namespace, name)
    for holder in holders:
        holder.join(15)
    assert answers == [200, 200]
    assert client.post("/", data=json.dumps(job_request("scenario/succeed:0.1")),
                       headers=binary_headers("ev-3")).status_code == 200


def test_a_body_is_read_up_to_the_limit_and_one_byte_more_never_to_its_end():
    read = []

    class Endless:
        def read(self, size):
            read.append(size)
            return b"x" * size
    assert read_body(Endless(), 100_000) is None
    assert sum(read) == 100_001
    assert read_body(io.BytesIO(b"x" * 100), 100) == b"x" * 100
    assert read_body(io.BytesIO(b""), 100) == b""


def test_a_profiles_max_in_flight_holds_in_http_mode_while_other_profiles_go_on(serve, fakekube, namespace, tmp_path):
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("default: plain\nprofiles:\n  plain: {}\n  gpu: {maxInFlight: 1, nodeSelector: {gpu: 'yes'}}\n")
    client = serve(profiles_file=profiles)
    answers = []
    holder = threading.Thread(target=lambda: answers.append(client.post(
        "/", data=json.dumps(job_request("scenario/hold", profile="gpu")), headers=binary_headers("ev-gpu-1"))))
    holder.start()
    wait_until(lambda: len(fakekube.created_jobs(namespace)) == 1, "the GPU Job runs")
    busy = client.post("/", data=json.dumps(job_request("scenario/succeed:0.1")),
                       headers=binary_headers("ev-gpu-2", **{"ce-profile": "gpu"}))
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
    assert "profile gpu runs at most 1 Jobs at once" in busy.get_json()["message"]
    later = client.post("/", data=json.dumps(job_request("scenario/succeed:0.1", profile="gpu")),
                        headers=dict(binary_headers("ev-gpu-3"), Prefer="respond-async"))
    assert later.status_code == 503  # asynchronous ones too: no thread waits for a slot
    plain = client.post("/", data=json.dumps(job_request("scenario/succeed:0.1")), headers=binary_headers("ev-plain"))
    assert plain.status_code == 200 and plain.get_json()["profile"] == "plain"  # binary in, binary out: the data
    fakekube.finish(namespace, fakekube.created_jobs(namespace)[0])
    holder.join(15)
    assert answers[0].status_code == 200 and answers[0].get_json()["profile"] == "gpu"
    again = client.post("/", data=json.dumps(job_request("scenario/succeed:0.1")),
                        headers=binary_headers("ev-gpu-2", **{"ce-profile": "gpu"}))
    assert again.status_code == 200 and again.get_json()["profile"] == "gpu"


def test_the_readme_lists_every_status_get_jobs_can_answer():
    import re

    from handler.core.outcome import Status

    readme = (REPO / "README.md").read_text()
    [row] = [line for line in readme.splitlines() if line.startswith("| `GET /jobs/<request id>`")]
    listed = set(re.search(r'"status": ([a-z|\\]+),', row).group(1).replace("\\", "").split("|"))
    # following (this replica), the Job's two states before its end, and every way a Job ends
    answered = {"accepted", "pending", "running"} | {s.value for s in Status if s is not Status.REJECTED}
    assert listed == answered
