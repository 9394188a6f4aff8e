"""Secrets: credentials the handler holds (the broker password in its AMQP URL, the API
server token in its kubeconfig, bucket credentials in its environment) and credentials
a requester wrongly puts in a bucket URL never appear in the handler's logs, in any
reply, or in any Job or pod object. A test plants unique values and greps everything."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from handler.core.config import Settings
from handler.core.manifest import build_job
from handler.core.messages import Message
from handler.core.request import is_valid_traceparent, parse_request
from tests.reliability.test_fuzz import FUZZ
from tests.support.handlers import REPO
from tests.support.rabbit import close_handler_connections
from tests.support.waiting import job_request, wait_until
from tests.test_cancel import cancel_body
from tests.test_security import kubelet_expand, unescaped_references


@pytest.fixture
def broker_user(rabbitmq):
    """A broker user whose password is a planted secret (deleted afterwards)."""
    user, password = f"cw-secrets-{uuid.uuid4().hex[:8]}", f"amqp-{uuid.uuid4().hex}"

    def ctl(*args):
        subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True)
    ctl("add_user", user, password)
    try:
        ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        yield user, password
    finally:
        ctl("delete_user", user)


@pytest.mark.integration
def test_planted_credentials_never_reach_logs_replies_or_jobs(handlers, requester, fakekube, namespace, tmp_path,
                                                              broker_user, monkeypatch, figures):
    user, amqp_password = broker_user
    token, s3_secret, request_secret = (f"{kind}-{uuid.uuid4().hex}" for kind in ("token", "s3", "request"))
    secrets = {"amqp password": amqp_password, "API token": token, "bucket secret key": s3_secret,
               "requester's bucket password": request_secret}
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "cloud-worker")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_secret)
    monkeypatch.setenv("MINIO_SECRET_KEY", s3_secret)
    kubeconfig = yaml.safe_load(Path(fakekube.kubeconfig).read_text())
    kubeconfig["users"][0]["user"] = {"token": token}
    (tmp_path / "kubeconfig-token").write_text(yaml.safe_dump(kubeconfig))
    handlers.kubeconfig = str(tmp_path / "kubeconfig-token")
    objects: list[dict] = []
    fakekube.on_write(lambda plural, kind, ns, obj: objects.append(json.loads(json.dumps(obj))) if ns == namespace
                      else None)
    amqp_url = f"amqp://{user}:{amqp_password}@127.0.0.1:5672/%2F"
    dead_letters = f"{handlers.queue}.dead"
    handlers.spawn("--concurrency", "2", amqp_url=amqp_url, log_level="DEBUG", job_env_secret="bucket-credentials",
                   dead_letter_queue=dead_letters)
    cids = [requester.submit(job_request("scenario/succeed:0.2")),
            requester.submit(job_request("scenario/fail:3")),
            requester.submit(job_request("scenario/succeed:0.2",
                                         inputBucketUrl=f"http://reader:{request_secret}@minio:9000/bucket")),
            requester.submit(b"not json")]
    held = requester.submit(job_request("scenario/hold"), headers={"x-mstc-progress": "true"})
    for cid in cids:
        requester.wait_reply(cid, timeout=30)
    def held_started() -> bool:
        requester.collect(0.1)  # replies_for only reads what was collected
        return len(requester.replies_for(held)) >= 2

    wait_until(held_started, "the held job is accepted and started", timeout=20)
    close_handler_connections()  # reconnecting logs the broker URL, and the error
    cancel = requester.publish(cancel_body(requestId=held), content_type="application/cloudevents+json")
    requester.wait_reply(cancel, timeout=30)
    requester.wait_reply(held, timeout=30)
    # start-up failures log the URL too: a wrong password, and a configuration error
    wrong = handlers.spawn(amqp_url=amqp_url.replace(amqp_password, amqp_password[::-1]),
                           reconnect_max_seconds="0.1")
    assert wrong.wait(30) == 4
    config_error = subprocess.run([sys.executable, "-m", "handler.cli", "consume", "--concurrency", "0"],
                                  cwd=REPO, capture_output=True, text=True, timeout=30,
                                  env={**handlers.env(amqp_url=amqp_url), "PATH": "/usr/bin:/bin"})
    assert config_error.returncode == 3
    requester.collect(0.5)
    outputs = {
        "handler logs": "\n".join(handlers.log_of(i) for i in range(len(handlers.processes))),
        "configuration error output": config_error.stdout + config_error.stderr,
        "replies": "\n".join(body.decode("utf-8", "replace") + repr(props.headers) for props, body in requester.raw),
        "Job and pod objects": "\n".join(json.dumps(o) for o in objects),
    }
    figures.update(secrets_planted=len(secrets), outputs_searched=list(outputs),
                   bytes_searched=sum(len(text) for text in outputs.values()), replies=len(requester.raw),
                   objects=len(objects), leaks=0)
    assert "reconnecting" in outputs["handler logs"] and "unreachable" in outputs["handler logs"]
    assert len(objects) > 10 and len(requester.raw) >= 7
    for output, text in outputs.items():
        for secret, value in secrets.items():
            assert value not in text, f"the {secret} appears in the {output}"


# --- no request value reaches a Job as a $(VAR) reference (property test over every field and header)

#: Pieces the values are built from: references to the Job's secrets, escapes, and halves of both.
DOLLAR_PIECES = ["$", "$$", "$(", ")", "(", "$(AWS_SECRET_ACCESS_KEY)", "$(AWS_ACCESS_KEY_ID)", "$$(", "${HOME}",
                 "$(INPUT_BUCKET_URL)", "a", "-", "1", "%24"]
dollar_text = st.lists(st.sampled_from(DOLLAR_PIECES), min_size=1, max_size=8).map("".join)
prefix_text = dollar_text.filter(lambda t: t not in (".", "..") and "%" not in t).map(lambda t: "p" + t)
bucket_urls = st.one_of(
    prefix_text.map(lambda p: f"http://minio:9000/bucket/{p}"),
    prefix_text.map(lambda p: f"s3://bucket/{p}/x"),
    st.just("http://minio:9000/bucket"))
traceparents = st.one_of(
    st.just("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    st.just("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-$(AWS_SECRET_ACCESS_KEY)"),
    dollar_text)
SECRET_ENV = {name: f"<expanded {name}>" for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "HOME",
                                                     "INPUT_BUCKET_URL", "MSTC_JOB", "a")}


@st.composite
def dollar_messages(draw) -> tuple[Message, dict[str, str]]:
    """A valid request in any transport form, every field and header that reaches the Job
    carrying ``$`` and ``$(...)``; and what the container must see for each of them."""
    body = {"image": "mstc/python-test:latest", "jobName": "job", "inputBucketUrl": draw(bucket_urls)}
    if draw(st.booleans()):
        body["outputBucketUrl"] = draw(bucket_urls)
    trace = draw(st.none() | traceparents)
    form = draw(st.sampled_from(["plain", "binary", "structured"]))
    event_id = draw(dollar_text)
    if form == "plain":
        message_id, correlation_id = draw(st.none() | dollar_text), draw(st.none() | dollar_text)
        headers = {"traceparent": trace} if trace else {}
        message = Message(json.dumps(body).encode(), "application/json", headers, message_id, correlation_id)
        request_id = message_id or correlation_id
    elif form == "binary":
        headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": draw(dollar_text),
                   "ce-type": "io.mstc.work.requested.v1", **({"ce-traceparent": trace} if trace else {})}
        message = Message(json.dumps(body).encode(), "application/json", headers, draw(st.none() | dollar_text))
        request_id = event_id
    else:
        event = {"specversion": "1.0", "id": event_id, "source": draw(dollar_text), "type": "io.mstc.work.requested.v1",
                 "datacontenttype": "application/json", "data": body, **({"traceparent": trace} if trace else {})}
        message = Message(json.dumps(event).encode(), "application/cloudevents+json", {}, draw(st.none() | dollar_text))
        request_id = event_id
    seen = {"INPUT_BUCKET_URL": body["inputBucketUrl"],
            "OUTPUT_BUCKET_URL": body.get("outputBucketUrl") or body["inputBucketUrl"]}
    if request_id:
        seen["MSTC_REQUEST_ID"] = request_id
    if trace and is_valid_traceparent(trace):
        seen["TRACEPARENT"] = trace
    return message, seen


def test_no_request_value_reaches_a_job_as_a_dollar_reference(figures):
    settings = Settings(namespace="mstc-dev", job_env_secret="bucket-credentials")
    counts = {"examples": 0, "env_values_checked": 0, "dollar_references_reaching_a_job": 0,
              "values_the_container_sees_changed": 0}

    @hyp_settings(FUZZ, max_examples=500)
    @given(dollar_messages())
    def check(case):
        message, expected = case
        job = build_job(parse_request(message, settings), settings)
        containers = job["spec"]["template"]["spec"]["containers"]
        values = [(c["name"], e["name"], e["value"]) for c in containers for e in c.get("env", [])]
        values += [(c["name"], "args", arg) for c in containers for arg in c.get("args", []) + c.get("command", [])]
        counts["examples"] += 1
        counts["env_values_checked"] += len(values)
        references = [v for v in values if unescaped_references(v[2])]
        counts["dollar_references_reaching_a_job"] += len(references)
        seen = {name: kubelet_expand(value, SECRET_ENV) for _, name, value in values}
        changed = {name for name, value in expected.items() if seen.get(name) != value}
        counts["values_the_container_sees_changed"] += len(changed)
        assert not references, references
        assert not changed, {name: (seen.get(name), expected[name]) for name in changed}
        assert "<expanded" not in json.dumps(seen)

    check()
    figures.update(counts)
    assert counts["dollar_references_reaching_a_job"] == 0
