"""The original service's own client protocol, step by step, against a real handler process.

What its Python client does (facts from the original, none of its code): with MinIO at
``MINIO_SERVICE_HOST:MINIO_SERVICE_PORT`` and ``minioadmin`` keys it uploads its inputs
to bucket ``test.inputs`` as ``<prefix>-<file>``; declares ``mstc.queue.work`` durable
with no arguments and publishes ``{"image", "jobName", "inputBucket", "prefix"}`` with
``reply_to`` and ``correlation_id``; reads the reply with ``json.loads(body)["result"]``
and takes its second word as the Job's name; then lists the bucket with its prefix and
looks for ``<prefix>-<job name>.log``. The handler here is configured only as the
original was, through those MINIO_* variables, and runs as ``cloud-worker consume``.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path

import pika
import pytest
from minio import Minio

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
INPUT_BUCKET = "test.inputs"


@pytest.fixture
def minio(s3_endpoint, monkeypatch):
    """The original's MinIO settings, in the handler's environment; a client with minioadmin keys."""
    host, port = s3_endpoint.url.removeprefix("http://").split(":")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MINIO_SERVICE_HOST", host)
    monkeypatch.setenv("MINIO_SERVICE_PORT", port)
    monkeypatch.setenv("MINIO_ROOT_USER", "minioadmin")
    monkeypatch.setenv("MINIO_ROOT_PASSWORD", "minioadmin")
    client = Minio(f"{host}:{port}", access_key="minioadmin", secret_key="minioadmin", secure=False)
    made = []
    yield client, made
    for bucket, prefix in made:
        for obj in client.list_objects(bucket_name=bucket, prefix=prefix, recursive=True):
            client.remove_object(bucket_name=bucket, object_name=obj.object_name)


def original_client(rabbitmq, queue, client, made, output_bucket=None, **fields):
    """The original client's steps; returns (reply, job name, {key: body} under the prefix)."""
    prefix = str(int(time.time() * 1000) % 10**10) + uuid.uuid4().hex[:4]
    if not client.bucket_exists(bucket_name=INPUT_BUCKET):
        client.make_bucket(bucket_name=INPUT_BUCKET)
    made.append((INPUT_BUCKET, prefix))
    for name, body in (("input1.txt", b"first input\n"), ("input2.csv", b"a,b\n1,2\n")):
        client.put_object(bucket_name=INPUT_BUCKET, object_name=f"{prefix}-{name}", data=io.BytesIO(body),
                          length=len(body))
    request = {"image": "mstc/python-test", "jobName": "test-job", "inputBucket": INPUT_BUCKET, "prefix": prefix,
               **fields}
    if output_bucket:
        request["outputBucket"] = output_bucket  # the caller removes that bucket

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq))
    try:
        channel = connection.channel()
        channel.queue_declare(queue=queue, durable=True)
        reply_queue = channel.queue_declare(queue="", exclusive=True).method.queue
        correlation_id = str(uuid.uuid4())
        channel.basic_publish("", queue, json.dumps(request),
                              pika.BasicProperties(reply_to=reply_queue, correlation_id=correlation_id))
        reply = None
        deadline = time.monotonic() + 60
        while reply is None and time.monotonic() < deadline:
            method, props, body = channel.basic_get(reply_queue, auto_ack=True)
            if method is None:
                connection.process_data_events(time_limit=0.1)
            elif props.correlation_id == correlation_id:
                reply = body
        assert reply is not None, "no reply within 60 s"
    finally:
        connection.close()

    result = json.loads(reply)["result"]
    job_name = result.split(" ")[1]
    bucket = output_bucket or INPUT_BUCKET
    found = {}
    for obj in client.list_objects(bucket_name=bucket, prefix=prefix, recursive=True):
        response = client.get_object(bucket_name=bucket, object_name=obj.object_name)
        try:
            found[obj.object_name[len(prefix):]] = response.read()
        finally:
            response.close()
            response.release_conn()
    return json.loads(reply), job_name, found, prefix


def test_the_original_client_finds_its_jobs_log_with_the_kubernetes_backend(
        rabbitmq, handlers, queue_name, minio):
    client, made = minio
    handlers.spawn()

    reply, job_name, found, prefix = original_client(rabbitmq, queue_name, client, made)

    assert reply["result"] == f"Job {job_name} succeeded."
    assert job_name == reply["data"]["jobName"] and job_name.startswith("test-job-")
    log = found[f"-{job_name}.log"].decode()
    assert "starting mstc/python-test" in log and log.rstrip().endswith("done")
    assert f"INPUT_BUCKET_URL={minio_url(client)}/{INPUT_BUCKET}" in log
    assert reply["data"]["logObject"] == f"{prefix}-{job_name}.log" and "logUploadError" not in reply["data"]


def test_the_original_client_with_an_output_bucket_finds_the_log_in_a_bucket_the_handler_made(
        rabbitmq, handlers, queue_name, minio):
    client, made = minio
    output_bucket = f"test.outputs.{uuid.uuid4().hex[:8]}"
    handlers.spawn()
    try:
        reply, job_name, found, prefix = original_client(rabbitmq, queue_name, client, made, output_bucket)
        assert reply["result"].split(" ")[1] == job_name
        assert list(found) == [f"-{job_name}.log"]
        assert b"done" in found[f"-{job_name}.log"]
        assert reply["data"]["outputBucketUrl"].endswith(f"/{output_bucket}")
    finally:
        for obj in client.list_objects(bucket_name=output_bucket, recursive=True):
            client.remove_object(bucket_name=output_bucket, object_name=obj.object_name)
        client.remove_bucket(bucket_name=output_bucket)


@pytest.mark.parametrize(("image", "time_out", "status", "says"), [
    ("scenario/fail:3", None, "failed", "error: exiting with code 3"),
    ("scenario/hold", 0.02, "timedout", "starting scenario/hold"),  # 1.2 s, then the Job is deleted
])
def test_a_failed_or_timed_out_job_leaves_its_log_too(rabbitmq, handlers, queue_name, minio, image, time_out, status,
                                                      says):
    client, made = minio
    handlers.spawn()
    fields = {"image": image, **({"timeOut": time_out} if time_out else {})}

    reply, job_name, found, prefix = original_client(rabbitmq, queue_name, client, made, **fields)

    assert reply["result"] == f"Job {job_name} {status}."
    assert says in found[f"-{job_name}.log"].decode()


def test_the_original_client_finds_its_jobs_log_and_outputs_in_local_mode(
        rabbitmq, handlers, queue_name, minio, tmp_path):
    client, made = minio
    images = tmp_path / "images.toml"
    main = REPO / "examples" / "python-test" / "main.py"
    images.write_text(f'[images."mstc/python-test"]\ncommand = ["cloud-worker", "job", "--", "python", "{main}"]\n'
                      'env = { SLEEP_SECONDS = "0" }\n')
    handlers.spawn(backend="local", local_images=str(images))

    reply, job_name, found, prefix = original_client(rabbitmq, queue_name, client, made)

    assert reply["result"] == f"Job {job_name} succeeded.", reply["data"].get("logTail")
    log = found[f"-{job_name}.log"].decode()
    assert f"env FILE_PREFIX={prefix}" in log and f"env INPUT_BUCKET={INPUT_BUCKET}" in log
    assert "found 2 input files" in log  # only this request's <prefix>-<file> inputs
    assert b"2 input files\ninput1.txt\t12\t" in found["-result.txt"]


def minio_url(client):
    return client._base_url._url.geturl().rstrip("/")


def test_the_originals_own_client_test_passes_in_local_mode_with_the_example_test_job(
        rabbitmq, handlers, queue_name, minio, tmp_path):
    """The original's ``test_send`` step by step, against the images file a user gets
    (examples/images.toml): its last assertion is that a file named ``<prefix>-<job name>...``
    among those it downloads with its prefix holds ``SUCCESS``."""
    client, made = minio
    handlers.spawn(backend="local")  # CLOUD_WORKER_LOCAL_IMAGES unset: examples/images.toml

    reply, job_name, found, prefix = original_client(rabbitmq, queue_name, client, made)

    assert reply["result"] == f"Job {job_name} succeeded."
    job_unique_name = prefix + "-" + reply["result"].split(" ")[1]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for key, body in found.items():  # the original's Data.download(bucket, prefix, files_dir)
        (scratch / (prefix + key)).write_bytes(body)
    assert succeeded(job_unique_name, scratch, "SUCCESS")
    log_lines = found[f"-{job_name}.log"].decode().splitlines()
    assert "SUCCESS" in log_lines  # a line of its own, as the original's job printed it


def succeeded(name, path, expected):
    """The original test's own check: some downloaded file named ``name...`` contains ``expected``."""
    return any(f.name.startswith(name) and expected in f.read_text() for f in path.iterdir() if f.is_file())
