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

from tests.support.handlers import REPO
from tests.test_backends_kubernetes import job_request, wait_until
from tests.test_cancel import cancel_body
from tests.test_consumer import close_handler_connections

pytestmark = pytest.mark.integration


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
    wait_until(lambda: len(requester.replies_for(held)) >= 2, "the held job is accepted and started", timeout=20)
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
