"""The client against the real RabbitMQ, the embedded S3 (moto) and a local-mode handler:
the whole loop a user runs, from ``Client.submit`` and from ``cloud-worker submit``."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pika
import pytest

from handler.adapters.amqp import Broker
from handler.adapters.storage import S3Credentials
from handler.core.bucketurl import parse_bucket_url
from handler.core.config import Settings
from handler.service.backends.local import open_local_backend
from handler.service.consumer import Consumer
from handler.service.handling import RequestHandler
from handler.tools.client import Client, NoReply
from tests.support.rabbit import delete_queues, fresh_queue
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
MAIN = REPO / "examples" / "python-test" / "main.py"
IMAGES = f"""
[images."mstc/python-test"]
command = ["cloud-worker", "job", "--", "python", "{MAIN}"]
env = {{ SLEEP_SECONDS = "0.1" }}
[images."test/slow"]
command = ["cloud-worker", "job", "--", "python", "{MAIN}"]
env = {{ SLEEP_SECONDS = "1.2" }}
[images."test/slower"]
command = ["cloud-worker", "job", "--", "python", "{MAIN}"]
env = {{ SLEEP_SECONDS = "2.4" }}
[images."test/fail"]
command = ["cloud-worker", "job", "--", "python", "{MAIN}"]
env = {{ SLEEP_SECONDS = "0", FAIL = "3" }}
[images."test/sleep"]
command = ["python", "-c", "import time; time.sleep(60)"]
"""
ACCEPTED, STARTED = "mstc.cloud.worker.job.accepted.v1", "mstc.cloud.worker.job.started.v1"


@pytest.fixture
def images_file(tmp_path):
    path = tmp_path / "images.toml"
    path.write_text(IMAGES)
    return path


@pytest.fixture
def local_handler(rabbitmq, queue_name, s3_endpoint, images_file):
    """``local_handler(**settings)``: a consumer with the local backend, in a thread."""
    running = []

    def start(**settings):
        environ = {"CLOUD_WORKER_AMQP_URL": rabbitmq, "CLOUD_WORKER_QUEUE": queue_name, "CLOUD_WORKER_HTTP_PORT": "0",
                   "CLOUD_WORKER_BACKEND": "local", "CLOUD_WORKER_LOCAL_IMAGES": str(images_file),
                   "CLOUD_WORKER_SHUTDOWN_GRACE_SECONDS": "2",
                   "CLOUD_WORKER_LOCAL_STATE_DIR": str(images_file.parent / "state")}
        environ.update({f"CLOUD_WORKER_{k.upper()}": str(v) for k, v in settings.items()})
        s = Settings.from_env(environ)
        backend = open_local_backend(s, {"PATH": os.environ["PATH"]}, s3_env=s3_endpoint.env)
        consumer = Consumer(s, RequestHandler(s, backend), Broker(s))
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        running.append((consumer, thread, backend))

    yield start
    for consumer, thread, backend in running:
        consumer.stop()
        thread.join(15)
        backend.close()
    delete_queues(rabbitmq, queue_name)


@pytest.fixture
def client(rabbitmq, queue_name, s3_endpoint):
    with Client(rabbitmq, routing_key=queue_name, credentials=S3Credentials.from_env(s3_endpoint.env)) as c:
        yield c


def keys_under(s3_endpoint, url):
    where = parse_bucket_url(url)
    return sorted(o.object_name for o in s3_endpoint.client.list_objects(bucket_name=where.bucket, prefix=where.prefix,
                                                                          recursive=True))


def test_inputs_land_under_the_requests_own_prefix_and_the_outputs_come_back(local_handler, client, s3_endpoint,
                                                                            s3_bucket, tmp_path):
    local_handler()
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    (inputs / "a.txt").write_text("alpha")
    (inputs / "sub" / "b.txt").write_text("beta")
    (tmp_path / "extra.csv").write_text("1,2\n")
    bucket_url = s3_bucket("runs/")
    states = []
    reply = client.submit("mstc/python-test:latest", "client-test", [inputs, tmp_path / "extra.csv"], bucket_url,
                          download_to=tmp_path / "out", on_event=lambda state, event: states.append(state))
    assert reply.status == "succeeded", reply.data
    rid = reply.request_id
    assert reply.data["requestId"] == rid and reply.data["requestJobName"] == "client-test"
    assert reply.input_url == reply.data["inputBucketUrl"] == f"{bucket_url}{rid}/input/"
    assert reply.output_url == reply.data["outputBucketUrl"] == f"{bucket_url}{rid}/output/"
    bucket = parse_bucket_url(bucket_url).bucket
    assert keys_under(s3_endpoint, bucket_url) == [
        f"runs/{rid}/input/a.txt", f"runs/{rid}/input/extra.csv", f"runs/{rid}/input/sub/b.txt",
        f"runs/{rid}/output/result.txt",
    ], bucket
    assert states == ["checked", "uploading", "uploaded", "published", "accepted", "started", "succeeded"]
    assert [e["type"] for e in reply.events] == [ACCEPTED, STARTED]
    assert reply.downloaded == ((tmp_path / "out" / "result.txt").resolve(),)
    result = (tmp_path / "out" / "result.txt").read_text()
    assert result.startswith("3 input files") and "sub/b.txt\t4\t" in result


def test_the_request_is_published_as_the_seed_client_publishes_it(client, rabbitmq, queue_name, s3_bucket, tmp_path):
    (tmp_path / "in.txt").write_text("x")
    with pytest.raises(NoReply):  # no handler consumes this queue
        client.submit("mstc/python-test:latest", "seed-like", [tmp_path / "in.txt"], s3_bucket(), timeout_minutes=5,
                      wait_seconds=0.5)
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq))
    try:
        method, props, body = connection.channel().basic_get(queue_name, auto_ack=True)
    finally:
        connection.close()
        delete_queues(rabbitmq, queue_name)
    request = json.loads(body)
    assert set(request) == {"image", "jobName", "timeOut", "inputBucketUrl", "outputBucketUrl"}
    assert (request["image"], request["jobName"], request["timeOut"]) == ("mstc/python-test:latest", "seed-like", 5)
    assert props.content_type == "application/json" and props.delivery_mode == 2
    assert props.correlation_id == props.message_id and request["inputBucketUrl"].endswith(f"/{props.message_id}/input/")
    assert props.reply_to.startswith("amq.gen-")
    assert props.headers == {"x-mstc-progress": "true"}


def test_concurrent_submissions_on_one_client_each_get_their_own_reply(local_handler, client, s3_bucket, tmp_path):
    local_handler(concurrency=3)
    bucket_url = s3_bucket()
    # The first submitted finishes last: every waiter sees the others' replies go by first.
    images = ["test/slower", "test/slow", "mstc/python-test"]
    replies, errors = {}, []

    def submit(i):
        source = tmp_path / f"input-{i}.txt"
        source.write_text(f"input of submission {i}")
        try:
            replies[i] = client.submit(images[i], f"concurrent-{i}", [source], bucket_url,
                                       download_to=tmp_path / f"out-{i}", wait_seconds=30)
        except Exception as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(40)
    assert not errors
    finished = sorted(replies, key=lambda i: replies[i].event["time"])
    assert finished == [2, 1, 0]
    for i, reply in replies.items():
        assert reply.status == "succeeded"
        assert (reply.data["requestId"], reply.data["requestJobName"]) == (reply.request_id, f"concurrent-{i}")
        assert f"input-{i}.txt" in (tmp_path / f"out-{i}" / "result.txt").read_text()
    assert len({r.request_id for r in replies.values()}) == 3


# --- ``cloud-worker submit`` against ``cloud-worker consume --backend local`` (both real processes)

@pytest.fixture(scope="module")
def consume_process(rabbitmq, s3_endpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("consume")
    (folder / "images.toml").write_text(IMAGES)
    queue = fresh_queue()
    env = {"PATH": os.environ["PATH"], **s3_endpoint.env, "CLOUD_WORKER_AMQP_URL": rabbitmq,
           "CLOUD_WORKER_QUEUE": queue, "CLOUD_WORKER_HTTP_PORT": "0", "CLOUD_WORKER_LOG_FORMAT": "text",
           "CLOUD_WORKER_LOCAL_IMAGES": str(folder / "images.toml"),
           "CLOUD_WORKER_LOCAL_STATE_DIR": str(folder / "state")}
    with open(folder / "handler.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "handler.cli", "consume", "--backend", "local",
                                    "--concurrency", "2"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    yield {"PATH": os.environ["PATH"], **s3_endpoint.env, "CLOUD_WORKER_AMQP_URL": rabbitmq,
           "CLOUD_WORKER_QUEUE": queue}
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0, (folder / "handler.log").read_text()
    delete_queues(rabbitmq, queue)


def submit(env, *args):
    return subprocess.run([sys.executable, "-m", "handler.cli", "submit", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("image, extra, code, status", [
    ("mstc/python-test:latest", [], 0, "succeeded"),
    ("test/fail", [], 1, "failed"),
    ("test/sleep", ["--timeout", "0.01"], 6, "timedout"),
])
def test_cloud_worker_submit_exits_by_how_the_request_ended(consume_process, s3_bucket, tmp_path, image, extra, code,
                                                           status):
    (tmp_path / "in.txt").write_text("x")
    done = submit(consume_process, "--image", image, "--job-name", "cli-test", "--input", str(tmp_path / "in.txt"),
                  "--bucket-url", s3_bucket(), "--download", str(tmp_path / "out"), *extra)
    assert done.returncode == code, done.stderr
    reply = json.loads(done.stdout)
    assert reply["data"]["status"] == status
    assert f"{status} after" in done.stderr
    if status == "succeeded":
        assert (tmp_path / "out" / "result.txt").read_text().startswith("1 input files")
    if status == "failed":
        assert (reply["data"]["exitCode"], reply["data"]["reason"]) == (3, "BackoffLimitExceeded")
        assert (tmp_path / "out" / "errors" / "exit-code.txt").read_text() == "3\n"


def test_cloud_worker_submit_without_waiting_publishes_and_the_job_still_runs(consume_process, s3_endpoint, s3_bucket,
                                                                            tmp_path):
    (tmp_path / "in.txt").write_text("x")
    done = submit(consume_process, "--image", "mstc/python-test", "--job-name", "no-wait", "--input",
                  str(tmp_path / "in.txt"), "--bucket-url", s3_bucket(), "--no-wait")
    assert done.returncode == 0, done.stderr
    output_url = json.loads(done.stdout)["outputBucketUrl"]
    deadline = time.monotonic() + 20
    while len(keys_under(s3_endpoint, output_url)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    # The Job's output, and the handler's copy of the Job's log (`<job name>.log`) once the Job ended.
    names = sorted(key.rsplit("/", 1)[1] for key in keys_under(s3_endpoint, output_url))
    assert len(names) == 2 and "result.txt" in names, names
    assert re.fullmatch(r"no-wait-[0-9a-f]{10}\.log", names[0]), names


def test_cloud_worker_submit_has_distinct_exit_codes_when_it_cannot_get_an_answer(consume_process, rabbitmq, s3_bucket,
                                                                                tmp_path):
    (tmp_path / "in.txt").write_text("x")
    common = ["--image", "mstc/python-test", "--job-name", "t", "--input", str(tmp_path / "in.txt")]
    nobody_listens = fresh_queue("unserved")
    try:
        done = submit(consume_process, *common, "--bucket-url", s3_bucket(), "--routing-key", nobody_listens,
                      "--wait-seconds", "1")
        assert done.returncode == 8 and "no reply" in done.stderr, done.stderr
    finally:
        delete_queues(rabbitmq, nobody_listens)
    done = submit(consume_process, *common, "--bucket-url", s3_bucket(), "--amqp-url",
                  "amqp://guest:guest@127.0.0.1:1/%2F")
    assert done.returncode == 4 and "CLOUD_WORKER_AMQP_URL" in done.stderr, done.stderr
    done = submit(consume_process, *common, "--bucket-url", "ftp://example.com/bucket")
    assert done.returncode == 3 and "scheme" in done.stderr, done.stderr
    done = submit(consume_process, *common[:-1], str(tmp_path / "missing.txt"), "--bucket-url", s3_bucket())
    assert done.returncode == 2 and "missing.txt" in done.stderr, done.stderr


def test_a_request_nobody_takes_in_time_expires_into_the_dead_letter_queue_the_policy_names(
        client, rabbitmq, queue_name, s3_bucket, tmp_path):
    """``--expire-after``: the broker drops a request no handler took in time; a dead-letter
    *policy* (the queue's own declaration stays argument-free) keeps it for a look."""
    dead = f"{queue_name}.expired"
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq))
    channel = connection.channel()
    channel.queue_declare(dead, durable=True)
    policy = f"expired-{queue_name}"
    subprocess.run(["rabbitmqctl", "-q", "set_policy", policy, f"^{re.escape(queue_name)}$",
                    json.dumps({"dead-letter-exchange": "", "dead-letter-routing-key": dead}),
                    "--apply-to", "queues"], check=True, capture_output=True, timeout=60)
    try:
        (tmp_path / "in.txt").write_text("x")
        reply = client.submit("mstc/python-test:latest", "expiring", [tmp_path / "in.txt"], s3_bucket(),
                              wait=False, expire_after=0.3)
        deadline = time.monotonic() + 10
        while channel.queue_declare(dead, passive=True).method.message_count == 0 and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.1)
        _, props, body = channel.basic_get(dead, auto_ack=True)
        assert props.message_id == reply.request_id and props.expiration is None  # the broker took it off
        assert props.headers["x-death"][0]["reason"] == "expired"
        assert channel.queue_declare(queue_name, passive=True).method.message_count == 0
    finally:
        subprocess.run(["rabbitmqctl", "-q", "clear_policy", policy], check=False, capture_output=True, timeout=60)
        channel.queue_delete(dead)
        connection.close()
        delete_queues(rabbitmq, queue_name)


def test_cloud_worker_submit_with_a_profile_runs_with_it_straight_from_the_profiles_queue(
        rabbitmq, s3_endpoint, s3_bucket, tmp_path):
    (tmp_path / "images.toml").write_text(IMAGES)
    (tmp_path / "profiles.yaml").write_text("default: plain\nprofiles:\n  plain: {}\n  big:\n    maxInFlight: 1\n"
                                            "    resources: {limits: {memory: 1Gi}}\n")
    (tmp_path / "in.txt").write_text("x")
    queue = fresh_queue()
    env = {"PATH": os.environ["PATH"], **s3_endpoint.env, "CLOUD_WORKER_AMQP_URL": rabbitmq,
           "CLOUD_WORKER_QUEUE": queue}
    handler_env = {**env, "CLOUD_WORKER_HTTP_PORT": "0", "CLOUD_WORKER_LOG_FORMAT": "text",
                   "CLOUD_WORKER_LOCAL_IMAGES": str(tmp_path / "images.toml"),
                   "CLOUD_WORKER_LOCAL_STATE_DIR": str(tmp_path / "state"),
                   "CLOUD_WORKER_PROFILES_FILE": str(tmp_path / "profiles.yaml")}
    with open(tmp_path / "handler.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "handler.cli", "consume", "--backend", "local"], cwd=REPO,
                                   env=handler_env, stdout=log, stderr=subprocess.STDOUT)
    common = ["--image", "mstc/python-test", "--job-name", "t", "--input", str(tmp_path / "in.txt"), "--bucket-url",
              s3_bucket(), "--wait-seconds", "30"]
    try:
        # The handler declares the profile's queue when it connects; until then the client sends the request
        # to the work queue (and the handler forwards it): wait for the queue, to see the straight path.
        wait_until(lambda: queue_exists(rabbitmq, f"{queue}.profile.big"), "the handler declares the profile's queue",
                   timeout=30)
        big = submit(env, *common, "--profile", "big")
        assert big.returncode == 0, big.stderr
        assert (json.loads(big.stdout)["data"]["status"], json.loads(big.stdout)["data"]["profile"]) == (
            "succeeded", "big")
        plain = submit(env, *common, "--profile", "plain")  # no queue of its own: the work queue
        assert plain.returncode == 0 and json.loads(plain.stdout)["data"]["profile"] == "plain", plain.stderr
        unknown = submit(env, *common, "--profile", "huge")
        assert unknown.returncode == 7 and "'huge' is not a profile of this handler; it has plain, big" in \
            unknown.stdout, unknown.stdout
        malformed = submit(env, *common, "--profile", "Not A Name")
        assert malformed.returncode == 7 and "nothing was uploaded" in malformed.stderr, malformed.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0, (tmp_path / "handler.log").read_text()
        delete_queues(rabbitmq, queue, f"{queue}.profile.big")
    log = (tmp_path / "handler.log").read_text()
    assert "profile big: limits.memory 1Gi as RLIMIT_DATA" in log
    assert "forwarded to" not in log and "forwarded=0" in log  # the client published each where it runs: nothing took a detour


def queue_exists(amqp_url, queue):
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        connection.channel().queue_declare(queue, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if connection.is_open:
            connection.close()
