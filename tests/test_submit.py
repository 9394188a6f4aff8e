"""``cloud-worker submit`` and ``Client`` before and around the wait: a request the handler
would reject is refused before anything is uploaded or published, the request id comes
first, and an interrupted submit says how to cancel what it sent."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pika
import pytest

from handler.core.errors import Rejected
from handler.core.exitcodes import ExitCode
from handler.tools.client import Client
from tests.support.rabbit import fresh_queue

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def work_queue(rabbitmq):
    queue = fresh_queue()
    yield queue
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq))
    connection.channel().queue_delete(queue)
    connection.close()


def queue_depth(amqp_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return connection.channel().queue_declare(queue, durable=True).method.message_count
    finally:
        connection.close()


def objects_in(s3_endpoint, bucket: str) -> list[str]:
    return [o.object_name for o in s3_endpoint.client.list_objects(bucket, recursive=True)]


def submit_env(rabbitmq, s3_endpoint, queue):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUD_WORKER_", "AWS_"))}
    env.update(s3_endpoint.env, CLOUD_WORKER_AMQP_URL=rabbitmq, CLOUD_WORKER_QUEUE=queue)
    return env


@pytest.mark.parametrize("extra, field", [
    (["--job-name", "not a valid name!"], "jobName"),
    (["--job-name", "fine", "--timeout", "500"], "timeOut"),
    (["--job-name", "fine", "--image", "UPPER CASE/image"], "image"),
])
def test_a_request_the_handler_would_reject_is_refused_before_anything_is_uploaded(
        rabbitmq, s3_endpoint, s3_bucket, work_queue, tmp_path, extra, field):
    (tmp_path / "in.txt").write_text("x")
    bucket_url = s3_bucket()
    bucket = bucket_url.removeprefix(s3_endpoint.url + "/").split("/")[0]
    done = subprocess.run([sys.executable, "-m", "handler.cli", "submit", "--image", "mstc/python-test",
                           "--input", str(tmp_path / "in.txt"), "--bucket-url", bucket_url, *extra],
                          cwd=REPO, env=submit_env(rabbitmq, s3_endpoint, work_queue), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == ExitCode.REJECTED, done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("cloud-worker submit:")]
    assert f"{field}:" in line and "nothing was uploaded" in line
    assert "Traceback" not in done.stderr and "cloud-worker cancel" not in done.stderr  # no request to cancel
    assert objects_in(s3_endpoint, bucket) == []  # no orphaned inputs
    assert queue_depth(rabbitmq, work_queue) == 0  # and nothing published


def test_the_client_checks_with_the_handlers_parser_before_it_connects(s3_bucket):
    client = Client("amqp://guest:guest@127.0.0.1:9/%2F")  # no broker there: the check comes first
    with pytest.raises(Rejected) as refused:
        client.submit("mstc/python-test", "ok", [], s3_bucket(), timeout_minutes=500)
    assert refused.value.field == "timeOut" and "maximum of 25 minutes" in refused.value.message


@pytest.mark.integration
def test_submit_prints_the_request_id_once_it_is_sent_and_ctrl_c_says_how_to_cancel_it(
        rabbitmq, s3_endpoint, s3_bucket, work_queue, tmp_path):
    (tmp_path / "in.txt").write_text("x")
    proc = subprocess.Popen([sys.executable, "-m", "handler.cli", "submit", "--image", "mstc/python-test",
                             "--job-name", "nobody-takes-it", "--input", str(tmp_path / "in.txt"),
                             "--bucket-url", s3_bucket()], cwd=REPO,
                            env=submit_env(rabbitmq, s3_endpoint, work_queue), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines = [proc.stderr.readline() for _ in range(3)]
    assert "uploading inputs" in lines[0] and "inputs uploaded" in lines[1], lines
    match = re.search(r"^request ([0-9a-f]{32}) \(cancel it with: cloud-worker cancel \1\)$", lines[2])
    assert match, lines
    request_id = match.group(1)
    for _ in range(100):  # published: no handler consumes this queue, so it waits there
        if queue_depth(rabbitmq, work_queue) == 1:
            break
        subprocess.run(["sleep", "0.1"], check=True)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == ExitCode.INTERRUPTED
    assert f"interrupted: request {request_id} may still run; cancel it with: cloud-worker cancel {request_id}" in err
    assert "Traceback" not in err


def submit(env, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "handler.cli", "submit", "--image", "mstc/python-test",
                           "--job-name", "what-happened", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.integration
@pytest.mark.parametrize("case", ["no credentials", "input not found", "s3 unreachable", "no such bucket"])
def test_a_submit_that_fails_before_publishing_prints_only_its_failure(rabbitmq, s3_endpoint, s3_bucket, work_queue,
                                                                       tmp_path, case):
    (tmp_path / "in.txt").write_text("x")
    env = submit_env(rabbitmq, s3_endpoint, work_queue)
    bucket_url, given = s3_bucket(), str(tmp_path / "in.txt")
    if case == "no credentials":
        del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    elif case == "input not found":
        given = str(tmp_path / "missing.txt")
    elif case == "s3 unreachable":
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            bucket_url = f"http://127.0.0.1:{closed.getsockname()[1]}/some-bucket"
    else:
        bucket_url = s3_endpoint.bucket_url(f"nb-{uuid.uuid4().hex[:8]}")

    done = submit(env, tmp_path, "--input", given, "--bucket-url", bucket_url)

    assert done.returncode in (ExitCode.CONFIG, ExitCode.USAGE, ExitCode.STORAGE), done.stderr
    [line] = done.stderr.splitlines()  # the failure, and nothing that did not happen
    assert line.startswith("cloud-worker submit: ") and "Traceback" not in line
    assert "HTTPConnectionPool" not in line and "Max retries" not in line
    assert queue_depth(rabbitmq, work_queue) == 0


@pytest.mark.parametrize("bucket_url", [
    "http://169.254.169.254/latest-bucket",  # a metadata service: the handler would refuse it
    "http://[fe80::1]:9000/some-bucket",  # link-local
    "ftp://minio:9000/some-bucket",  # not a bucket URL at all
    "http://minio:9000/Bad_Bucket",
])
def test_every_bad_bucket_url_is_a_configuration_error_with_one_exit_code(tmp_path, bucket_url):
    (tmp_path / "in.txt").write_text("x")
    env = {"PATH": __import__("os").environ["PATH"], "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
           "CLOUD_WORKER_AMQP_URL": "amqp://guest:guest@127.0.0.1:9/%2F"}
    done = submit(env, tmp_path, "--input", str(tmp_path / "in.txt"), "--bucket-url", bucket_url)
    assert done.returncode == ExitCode.CONFIG, done.stderr
    [line] = done.stderr.splitlines()
    assert "bucket" in line and "Traceback" not in line
