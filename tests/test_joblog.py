"""The Job's log object, against the real (embedded) S3 endpoint with a fake log source."""

import json
import socket
import uuid

import pytest

from handler.core.config import Settings
from handler.core.messages import Message
from handler.core.outcome import Outcome, Status
from handler.core.request import parse_request
from handler.service.joblog import truncation_marker, upload_job_log


class Logs:
    """A backend's log reader: answers with ``log`` (or raises it) and counts the calls."""

    def __init__(self, log=b"starting\ndone\n"):
        self.log, self.calls = log, []

    def job_log(self, request, outcome, limit_bytes):
        self.calls.append(limit_bytes)
        if isinstance(self.log, Exception):
            raise self.log
        return None if self.log is None else self.log[:limit_bytes]


def minio_settings(s3_endpoint, **extra):
    host, port = s3_endpoint.url.removeprefix("http://").split(":")
    return Settings.from_env({"MINIO_SERVICE_HOST": host, "MINIO_SERVICE_PORT": port, **extra})


def named_request(settings, **fields):
    body = {"image": "mstc/python-test", "jobName": "test-job", "inputBucket": "test.inputs", "prefix": "17", **fields}
    return parse_request(Message(json.dumps(body).encode(), "application/json"), settings)


def read(s3_endpoint, bucket, key):
    response = s3_endpoint.client.get_object(bucket_name=bucket, object_name=key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


@pytest.fixture
def bucket_name(s3_endpoint):
    """A bucket name nobody has made yet; the bucket is removed afterwards if it was made."""
    name = f"test-log-{uuid.uuid4().hex[:12]}"
    yield name
    client = s3_endpoint.client
    if client.bucket_exists(bucket_name=name):
        for obj in client.list_objects(bucket_name=name, recursive=True):
            client.remove_object(bucket_name=name, object_name=obj.object_name)
        client.remove_bucket(bucket_name=name)


DONE = Outcome(Status.SUCCEEDED, "Completed", "done", exit_code=0, pod_name="p", log_tail="done\n")


def test_the_log_lands_as_prefix_dash_job_name_dot_log_in_a_bucket_made_for_it(s3_endpoint, bucket_name):
    settings = minio_settings(s3_endpoint)
    request = named_request(settings, inputBucket=bucket_name)

    upload = upload_job_log(request, DONE, Logs(), settings)

    assert upload.error is None and upload.key == f"17-{request.job_name}.log" and not upload.truncated
    assert upload.url == f"{s3_endpoint.url}/{bucket_name}/17-{request.job_name}.log"
    assert read(s3_endpoint, bucket_name, upload.key) == b"starting\ndone\n" and upload.size == 14


def test_a_log_over_the_cap_is_cut_there_and_ends_with_a_marker(s3_endpoint, bucket_name):
    settings = minio_settings(s3_endpoint, CLOUD_WORKER_JOB_LOG_MAX_BYTES="10")
    request = named_request(settings, inputBucket=bucket_name)
    logs = Logs(b"0123456789abcdef")

    upload = upload_job_log(request, DONE, logs, settings)

    assert logs.calls == [11]  # one byte more than the cap tells a cut log from one of exactly the cap
    assert upload.truncated and read(s3_endpoint, bucket_name, upload.key) == b"0123456789" + truncation_marker(10)


def test_a_log_of_exactly_the_cap_is_whole(s3_endpoint, bucket_name):
    settings = minio_settings(s3_endpoint, CLOUD_WORKER_JOB_LOG_MAX_BYTES="10")
    upload = upload_job_log(named_request(settings, inputBucket=bucket_name), DONE, Logs(b"0123456789"), settings)
    assert not upload.truncated and read(s3_endpoint, bucket_name, upload.key) == b"0123456789"


def test_without_the_full_log_the_tail_stands_in_and_without_either_the_outcome_says_why(s3_endpoint, bucket_name):
    settings = minio_settings(s3_endpoint)
    timed_out = Outcome(Status.TIMEDOUT, "DeadlineExceeded", "too slow", pod_name="p", log_tail="last line\n")
    request = named_request(settings, inputBucket=bucket_name)
    body = read(s3_endpoint, bucket_name, upload_job_log(request, timed_out, Logs(None), settings).key)
    assert body.endswith(b"\nlast line\n") and b"full log is no longer available" in body

    never_ran = Outcome(Status.FAILED, "ErrImagePull", "image nope cannot be pulled")
    body = read(s3_endpoint, bucket_name, upload_job_log(request, never_ran, Logs(None), settings).key)
    assert body == b"[cloud-worker: no log: image nope cannot be pulled]\n"


def test_a_url_request_to_a_handler_without_credentials_reads_and_writes_nothing_and_says_why():
    request = parse_request(Message(json.dumps({"image": "i", "jobName": "j", "inputBucketUrl": "http://h:9/bucket"})
                                    .encode()), Settings.from_env({}))
    logs = Logs()
    upload = upload_job_log(request, DONE, logs, Settings.from_env({}))
    assert logs.calls == []
    assert upload is not None and upload.key == f"{request.job_name}.log"
    assert "no bucket credentials" in upload.error and "AWS_ACCESS_KEY_ID" in upload.error


def test_a_url_request_with_credentials_gets_its_log_under_the_output_urls_path(s3_endpoint, s3_bucket):
    settings = Settings.from_env({"AWS_ENDPOINT_URL_S3": s3_endpoint.url, "AWS_ACCESS_KEY_ID": "k",
                                  "AWS_SECRET_ACCESS_KEY": "s"})
    out = s3_bucket("results/run-1")
    body = {"image": "i", "jobName": "j", "inputBucketUrl": s3_bucket(), "outputBucketUrl": out}
    request = parse_request(Message(json.dumps(body).encode()), settings)

    upload = upload_job_log(request, DONE, Logs(), settings)

    assert upload.key == f"results/run-1/{request.job_name}.log"
    assert read(s3_endpoint, out.split("/")[3], upload.key) == b"starting\ndone\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_endpoint_is_reported_not_raised():
    settings = Settings.from_env({"MINIO_SERVICE_HOST": "127.0.0.1", "MINIO_SERVICE_PORT": str(free_port())})
    upload = upload_job_log(named_request(settings), DONE, Logs(), settings)
    assert "could not write the Job's log" in upload.error and "unreachable" in upload.error
    assert "minioadmin" not in upload.error


def test_a_log_reader_that_blows_up_costs_the_log_not_the_reply(s3_endpoint, bucket_name):
    settings = minio_settings(s3_endpoint)
    upload = upload_job_log(named_request(settings, inputBucket=bucket_name), DONE, Logs(RuntimeError("boom")),
                            settings)
    assert upload.error.endswith("RuntimeError: boom")


def test_the_handlers_keys_never_sign_a_request_to_a_host_the_requester_chose(s3_endpoint, bucket_name):
    """A URL-form request may name any bucket host for its Job; the handler's own keys go
    only to its own endpoint or to an allowed host, never to one the request picked."""
    settings = Settings.from_env({"AWS_ENDPOINT_URL_S3": s3_endpoint.url, "AWS_ACCESS_KEY_ID": "handler",
                                  "AWS_SECRET_ACCESS_KEY": "handler-secret"})
    elsewhere = parse_request(Message(json.dumps({
        "image": "mstc/python-test", "jobName": "test-job",
        "inputBucketUrl": f"http://attacker.example:9000/{bucket_name}"}).encode(), "application/json"), settings)
    opened = []
    upload = upload_job_log(elsewhere, DONE, Logs(), settings, opener=lambda url, creds: opened.append(url))
    assert opened == [] and "attacker.example:9000 is neither" in upload.error
    allowed = Settings.from_env({"AWS_ENDPOINT_URL_S3": s3_endpoint.url, "AWS_ACCESS_KEY_ID": "handler",
                                 "AWS_SECRET_ACCESS_KEY": "handler-secret",
                                 "CLOUD_WORKER_ALLOWED_BUCKET_HOSTS": "ATTACKER.example:9000"})

    class Opened:
        def put_bytes(self, key, body, content_type):
            opened.append(key)

    upload = upload_job_log(elsewhere, DONE, Logs(), allowed, opener=lambda url, creds: Opened())
    assert upload.error is None and opened == [elsewhere.log_key]


# minio leaves the connection of an error answer to the garbage collector (its warning, not ours)
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_bucket_host_that_redirects_gets_no_second_request(tmp_path):
    """An S3 endpoint answering 307 elsewhere: the handler's S3 client does not follow it."""
    import http.server
    import threading

    from handler.adapters.storage import S3Credentials, open_bucket
    from handler.core.bucketurl import parse_bucket_url
    from handler.core.errors import WorkerError

    hits = []

    class Redirecting(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802 - the http.server protocol
            hits.append(self.path)
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/internal/admin")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_PUT  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        bucket = open_bucket(parse_bucket_url(f"http://127.0.0.1:{server.server_port}/logs"),
                             S3Credentials("key", "secret"))
        with pytest.raises(WorkerError):
            bucket.put_bytes("job.log", b"the log", "text/plain")
    finally:
        server.shutdown()
    assert hits and not any(path.startswith("/internal") for path in hits)


class SilentEndpoint:
    """An S3 endpoint that accepts connections and reads requests, and never answers."""

    def __init__(self):
        import threading

        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(conn)  # kept open, never read from or answered

    def close(self):
        self.server.close()
        for conn in self.connections:
            conn.close()


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_bucket_host_that_never_answers_costs_the_reply_its_upload_deadline_only():
    """minio's read timeout is 120 s and urllib3 retried read timeouts: a silent host held
    the reply for minutes, past the broker's consumer timeout for a long Job."""
    import time

    endpoint = SilentEndpoint()
    try:
        settings = Settings.from_env({"MINIO_SERVICE_HOST": "127.0.0.1", "MINIO_SERVICE_PORT": str(endpoint.port),
                                      "CLOUD_WORKER_LOG_UPLOAD_TIMEOUT_SECONDS": "1.5"})
        started = time.monotonic()
        upload = upload_job_log(named_request(settings), DONE, Logs(), settings)
        took = time.monotonic() - started
    finally:
        endpoint.close()
    assert took < 3.0, took
    # The PUT timed out on its own (no answer within the deadline), or the deadline ended the wait first.
    assert "no answer within 1.5 s" in upload.error or "took longer than 1.5 s" in upload.error, upload.error
    assert upload.key.startswith("17-test-job-")
    assert endpoint.connections  # it was tried, and given up on time
