"""The ``cloud-worker`` command as a user meets it: run as a real subprocess, each failure
a user can fix is one line naming what to change, with the documented exit code and no
traceback; help texts written for users; and ``status``, ``logs`` and ``cancel`` over the
real RabbitMQ, against the local backend and against the fake Kubernetes API server."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pika
import pytest

from handler.core.exitcodes import ExitCode
from tests.support.rabbit import delete_queues, fresh_queue
from tests.support.waiting import job_request, wait_until

REPO = Path(__file__).resolve().parents[1]
MAIN = REPO / "examples" / "python-test" / "main.py"
IMAGES = f"""
[images."test/talk"]
command = ["python", "-u", "-c", "import time\\nfor i in range(400):\\n    print('line', i, flush=True)\\n    time.sleep(0.05)"]
[images."mstc/python-test"]
command = ["cloud-worker", "job", "--", "python", "{MAIN}"]
env = {{ SLEEP_SECONDS = "0.1" }}
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUD_WORKER_", "AWS_", "MINIO_"))}
    env.update(extra)
    return env


def cloud_worker(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "handler.cli", *args], cwd=REPO, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(r"ERROR|error", line)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- help, version, flags


def test_the_version_is_the_installed_packages():
    from importlib.metadata import version

    done = cloud_worker("--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"cloud-worker {version('mstc-cloud-worker')}")


@pytest.mark.parametrize("command", ["", "consume", "serve", "submit", "status", "logs", "cancel", "job", "demo"])
def test_every_help_text_is_written_for_users_not_developers(command):
    done = cloud_worker(*([command] if command else []), "--help")
    assert done.returncode == 0, done.stderr
    for developer_word in ("``", "the seed", "thin edge", ":class:", ":func:"):
        assert developer_word not in done.stdout, (command, developer_word)


def test_the_choices_of_a_setting_are_shown_and_enforced():
    text = cloud_worker("consume", "--help").stdout
    for choices in ("--backend {kubernetes,local}", "--log-format {auto,json,text}", "--unknown-fields {ignore,reject}"):
        assert choices in text
    done = cloud_worker("consume", "--backend", "docker")
    assert done.returncode == ExitCode.USAGE and "invalid choice: 'docker'" in done.stderr


@pytest.mark.parametrize("command, foreign", [
    ("consume", "--http-threads=4"), ("consume", "--http-auth=none"),
    ("serve", "--once"), ("serve", "--concurrency=2"), ("serve", "--idle-exit-seconds=5"),
    ("status", "--amqp-url=amqp://x"), ("cancel", "--namespace=x"),
])
def test_a_flag_of_another_command_is_refused(command, foreign):
    done = cloud_worker(command, foreign, *(["some-id"] if command in ("status", "cancel") else []))
    assert done.returncode == ExitCode.USAGE
    assert f"unrecognized arguments: {foreign}" in done.stderr


def test_a_flag_of_another_command_is_refused_with_this_commands_usage_naming_whose_flag_it_is():
    done = cloud_worker("serve", "--once")
    assert done.returncode == ExitCode.USAGE
    assert done.stderr.startswith("usage: cloud-worker serve ")
    assert done.stderr.rstrip().endswith("cloud-worker serve: error: unrecognized arguments: --once (--once is a "
                                         "flag of consume, not of serve)")


@pytest.mark.parametrize("given", [["--http-token", "s3cr3t"], ["--http-token=s3cr3t"]])
def test_a_secret_is_never_a_flag_and_is_not_echoed_back(given):
    done = cloud_worker("serve", *given)
    assert done.returncode == ExitCode.USAGE
    assert "s3cr3t" not in done.stderr  # not taken for --http-token-file either
    assert "set CLOUD_WORKER_HTTP_TOKEN in the environment" in done.stderr


def test_a_flag_of_its_own_command_is_accepted():
    text = cloud_worker("serve", "--help").stdout
    assert "--http-threads" in text and "--once" not in text and "--concurrency" not in text
    text = cloud_worker("consume", "--help").stdout
    assert "--once" in text and "--idle-exit-seconds" in text and "--http-threads" not in text


# --- one line and the documented exit code


def consume(tmp_path, *args: str, timeout: float = 60, **settings: str) -> subprocess.CompletedProcess:
    env = clean_env(CLOUD_WORKER_BACKEND="local", CLOUD_WORKER_LOCAL_STATE_DIR=str(tmp_path / "state"),
                    CLOUD_WORKER_LOG_FORMAT="text", AWS_ENDPOINT_URL_S3="http://127.0.0.1:9",
                    CLOUD_WORKER_QUEUE=fresh_queue(),
                    **{f"CLOUD_WORKER_{k.upper()}": v for k, v in settings.items()})
    return cloud_worker("consume", *args, env=env, timeout=timeout)


def test_a_health_port_in_use_is_one_line_naming_the_port_and_its_setting_and_exit_3(tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = consume(tmp_path, "--http-port", str(port), amqp_url="amqp://guest:guest@127.0.0.1:9/%2F")
    assert done.returncode == ExitCode.CONFIG, done.stderr
    assert "Traceback" not in done.stderr
    [line] = error_lines(done.stderr)
    assert f"port {port}" in line and "CLOUD_WORKER_HTTP_PORT" in line and "in use" in line


def test_serve_on_a_port_in_use_is_one_line_and_exit_3(tmp_path):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(CLOUD_WORKER_BACKEND="local", CLOUD_WORKER_LOCAL_STATE_DIR=str(tmp_path / "state"),
                        CLOUD_WORKER_LOG_FORMAT="text", CLOUD_WORKER_HTTP_AUTH="none")
        done = cloud_worker("serve", "--http-port", str(port), env=env)
    assert done.returncode == ExitCode.CONFIG, done.stderr
    assert "Traceback" not in done.stderr
    [line] = error_lines(done.stderr)
    assert f"port {port}" in line and "CLOUD_WORKER_HTTP_PORT" in line


def test_a_broker_that_is_down_is_one_line_per_attempt_without_pika_noise_and_exit_4(tmp_path):
    done = consume(tmp_path, "--http-port", "0", amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
                   reconnect_max_seconds="0.2")
    assert done.returncode == ExitCode.BROKER_UNREACHABLE, done.stderr
    assert "Traceback" not in done.stderr
    assert " pika" not in done.stderr  # no line from pika's own loggers
    attempts = [line for line in done.stderr.splitlines() if "cannot connect to the broker" in line]
    assert 1 <= len(attempts) <= 6  # the consumer's attempts at start-up (handler.service.consumer), one line each
    assert "broker unreachable" in error_lines(done.stderr)[-1]


def test_a_second_local_handler_on_the_same_state_folder_is_refused_in_one_line_with_exit_3(tmp_path, rabbitmq):
    env = clean_env(CLOUD_WORKER_BACKEND="local", CLOUD_WORKER_LOCAL_STATE_DIR=str(tmp_path / "state"),
                    CLOUD_WORKER_LOG_FORMAT="text", CLOUD_WORKER_AMQP_URL=rabbitmq, CLOUD_WORKER_HTTP_PORT="0",
                    CLOUD_WORKER_QUEUE=fresh_queue())
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen([sys.executable, "-m", "handler.cli", "consume"], cwd=REPO, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (tmp_path / "state" / "handler.lock").exists(), "the first handler holds the folder")
        time.sleep(0.5)
        second = cloud_worker("consume", env=env)
        assert second.returncode == ExitCode.CONFIG, second.stderr
        assert "Traceback" not in second.stderr
        assert "embedded S3" not in second.stderr  # refused before it starts one of its own
        [line] = [x for x in second.stderr.splitlines() if "error" in x]
        assert f"pid {first.pid}" in line and str(tmp_path / "state") in line and "CLOUD_WORKER_CONCURRENCY" in line
        assert first.poll() is None  # the first one runs on
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(20) == 0, (tmp_path / "first.log").read_text()
        delete_queues(rabbitmq, env["CLOUD_WORKER_QUEUE"])


def test_the_start_up_settings_are_a_json_object_in_a_json_log_line(tmp_path):
    done = consume(tmp_path, "--http-port", "0", "--log-format", "json",
                   amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F", reconnect_max_seconds="0.1",
                   max_attempts="1")
    first = json.loads(done.stderr.splitlines()[0])
    assert isinstance(first["settings"], dict)
    assert first["settings"]["backend"] == "local" and first["settings"]["amqp_url"].startswith("amqp://guest:***@")
    assert not {"http_threads", "http_auth", "http_token", "http_probe_port"} & set(first["settings"])  # serve's
    for line in done.stderr.splitlines():
        json.loads(line)  # every line is one JSON object


def test_a_returned_reply_is_reported_once_by_us_and_not_again_by_pika(tmp_path, rabbitmq):
    queue = fresh_queue()
    env = clean_env(CLOUD_WORKER_BACKEND="local", CLOUD_WORKER_LOCAL_STATE_DIR=str(tmp_path / "state"),
                    CLOUD_WORKER_LOG_FORMAT="text", CLOUD_WORKER_AMQP_URL=rabbitmq, CLOUD_WORKER_HTTP_PORT="0",
                    CLOUD_WORKER_QUEUE=queue, AWS_ENDPOINT_URL_S3="http://127.0.0.1:9")
    with open(tmp_path / "handler.log", "wb") as log:
        handler = subprocess.Popen([sys.executable, "-m", "handler.cli", "consume"], cwd=REPO, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq))
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        channel.basic_publish("", queue, b"not json", pika.BasicProperties(reply_to="no.such.queue." + queue,
                                                                           correlation_id="c-1"))
        connection.close()
        time.sleep(3)
    finally:
        handler.send_signal(signal.SIGTERM)
        handler.wait(20)
        delete_queues(rabbitmq, queue)
    log = (tmp_path / "handler.log").read_text()
    assert "reply to no.such.queue." in log  # ours: the requester is gone
    assert "Published message was returned" not in log


# --- the client refuses early, and says what to do


@pytest.fixture
def work_queue(rabbitmq):
    """A work queue of the test's own, deleted afterwards (a client declares it as it connects)."""
    queue = fresh_queue()
    yield queue
    delete_queues(rabbitmq, queue)


def test_submit_to_an_s3_endpoint_that_is_down_is_one_line_and_exit_9(tmp_path, rabbitmq, work_queue):
    (tmp_path / "in.txt").write_text("x")
    env = clean_env(AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", CLOUD_WORKER_AMQP_URL=rabbitmq)
    done = cloud_worker("submit", "--image", "mstc/python-test", "--job-name", "s3-down", "--input",
                        str(tmp_path / "in.txt"), "--bucket-url", f"http://127.0.0.1:{free_port()}/bucket",
                        "--routing-key", work_queue, env=env)
    assert done.returncode == ExitCode.STORAGE, done.stderr
    assert "Traceback" not in done.stderr and "Retrying" not in done.stderr and "urllib3" not in done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("cloud-worker submit:")]
    assert "is unreachable (connection refused)" in line


def test_a_missing_bucket_suggests_create_buckets(tmp_path, rabbitmq, s3_endpoint, work_queue):
    (tmp_path / "in.txt").write_text("x")
    env = clean_env(**s3_endpoint.env, CLOUD_WORKER_AMQP_URL=rabbitmq)
    done = cloud_worker("submit", "--image", "mstc/python-test", "--job-name", "no-bucket", "--input",
                        str(tmp_path / "in.txt"), "--bucket-url", s3_endpoint.bucket_url(f"nb-{uuid.uuid4().hex[:8]}"),
                        "--routing-key", work_queue, env=env)
    assert done.returncode == ExitCode.STORAGE, done.stderr
    assert "--create-buckets" in done.stderr and "Traceback" not in done.stderr


# --- status, logs and cancel over RabbitMQ: the local backend


@pytest.fixture
def local_consumer(rabbitmq, s3_endpoint, tmp_path):
    """``cloud-worker consume --backend local`` as a subprocess; yields the environment
    the tools need to reach it (broker, queue, state folder)."""
    (tmp_path / "images.toml").write_text(IMAGES)
    queue = fresh_queue()
    env = clean_env(**s3_endpoint.env, CLOUD_WORKER_AMQP_URL=rabbitmq, CLOUD_WORKER_QUEUE=queue,
                    CLOUD_WORKER_BACKEND="local", CLOUD_WORKER_LOCAL_STATE_DIR=str(tmp_path / "state"),
                    CLOUD_WORKER_LOCAL_IMAGES=str(tmp_path / "images.toml"), CLOUD_WORKER_HTTP_PORT="0",
                    CLOUD_WORKER_LOG_FORMAT="text", CLOUD_WORKER_CONCURRENCY="2")
    with open(tmp_path / "handler.log", "wb") as log:
        handler = subprocess.Popen([sys.executable, "-m", "handler.cli", "consume"], cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    yield env
    handler.send_signal(signal.SIGTERM)
    assert handler.wait(30) == 0, (tmp_path / "handler.log").read_text()
    delete_queues(rabbitmq, queue)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """Wait for a background command; its exit code, stdout and stderr (pipes closed)."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def start_submit(env, tmp_path, *args: str) -> tuple[subprocess.Popen, str]:
    """``cloud-worker submit`` in the background; returns it and the request id it printed once it was sent."""
    (tmp_path / "in.txt").write_text("x")
    proc = subprocess.Popen([sys.executable, "-m", "handler.cli", "submit", "--input", str(tmp_path / "in.txt"),
                             "--create-buckets", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = [proc.stderr.readline() for _ in range(3)]  # "uploading inputs", "inputs uploaded", then the id
    match = re.search(r"^request ([0-9a-f]{32}) \(cancel it with: cloud-worker cancel \1\)$", "".join(seen), re.M)
    if not match:
        proc.kill()
        proc.communicate()
    assert match, seen
    return proc, match.group(1)


@pytest.mark.integration
def test_status_logs_and_cancel_reach_a_local_job_and_submit_exits_cancelled(local_consumer, s3_endpoint, tmp_path):
    env = local_consumer
    bucket = s3_endpoint.bucket_url(f"cli-{uuid.uuid4().hex[:8]}")
    submitting, request_id = start_submit(env, tmp_path, "--image", "test/talk", "--job-name", "talk",
                                          "--bucket-url", bucket)
    wait_until(lambda: json.loads(cloud_worker("status", request_id, env=env).stdout)["status"] == "running",
               "the job runs", timeout=20)
    status = cloud_worker("status", request_id, env=env)
    assert status.returncode == 0
    doc = json.loads(status.stdout)
    assert doc["requestId"] == request_id and re.fullmatch(r"talk-[0-9a-f]{10}", doc["jobName"])
    wait_until(lambda: "line 3\n" in cloud_worker("logs", request_id, env=env).stdout, "the log grows")
    assert cloud_worker("logs", doc["jobName"], env=env).stdout.startswith("line 0\nline 1\n")  # by job name too
    unsaid = {k: v for k, v in env.items() if k != "CLOUD_WORKER_BACKEND"}  # found by the handler running here
    assert json.loads(cloud_worker("status", request_id, env=unsaid).stdout)["jobName"] == doc["jobName"]
    assert cloud_worker("logs", request_id, env=unsaid).stdout.startswith("line 0\n")

    follower = subprocess.Popen([sys.executable, "-m", "handler.cli", "logs", "-f", request_id], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    cancel = cloud_worker("cancel", request_id, "--reason", "enough talk", env=env)
    assert cancel.returncode == 0, cancel.stderr
    assert json.loads(cancel.stdout)["data"]["status"] == "cancelled"

    code, followed, _ = finish(follower, 20)
    assert code == 0  # -f ends with the job
    assert followed.startswith("line 0\n") and "line 399" not in followed
    code, out, err = finish(submitting, 30)
    assert code == ExitCode.CANCELLED, err
    reply = json.loads(out)
    assert reply["data"]["status"] == "cancelled" and "enough talk" in reply["data"]["message"]

    after = cloud_worker("status", request_id, env=env)
    assert after.returncode == ExitCode.CANCELLED
    assert json.loads(after.stdout)["reply"]["data"]["status"] == "cancelled"
    again = cloud_worker("cancel", request_id, env=env)
    assert again.returncode == ExitCode.FAILED and "finished" in again.stderr


@pytest.mark.integration
def test_the_tools_say_when_there_is_no_such_request(local_consumer):
    env = local_consumer
    status = cloud_worker("status", "no-such-request", env=env)
    assert status.returncode == ExitCode.NOT_FOUND and "no job for this request id" in status.stderr
    assert cloud_worker("logs", "no-such-request", env=env).returncode == ExitCode.NOT_FOUND
    cancel = cloud_worker("cancel", "no-such-request", env=env)
    assert cancel.returncode == ExitCode.NOT_FOUND and cancel.stderr.startswith("notFound")


@pytest.mark.integration
def test_submit_follow_finds_the_local_handler_and_streams_the_log_while_it_waits(local_consumer, s3_endpoint,
                                                                                  tmp_path):
    bucket = s3_endpoint.bucket_url(f"cli-{uuid.uuid4().hex[:8]}")
    unsaid = {k: v for k, v in local_consumer.items() if k != "CLOUD_WORKER_BACKEND"}
    submitting, _ = start_submit(unsaid, tmp_path, "--image", "mstc/python-test", "--job-name", "followed",
                                 "--bucket-url", bucket, "--follow")
    code, _, err = finish(submitting, 60)
    assert code == 0, err
    assert "Downloading" in err or "input" in err.lower(), err  # the job toolkit's own lines, as the job wrote them
    assert "succeeded after" in err


@pytest.mark.integration
def test_cancel_with_no_handler_listening_gives_up_with_exit_8(rabbitmq):
    queue = fresh_queue()
    env = clean_env(CLOUD_WORKER_AMQP_URL=rabbitmq, CLOUD_WORKER_QUEUE=queue)
    try:
        done = cloud_worker("cancel", "some-request", "--wait-seconds", "1", env=env)
        assert done.returncode == ExitCode.NO_REPLY and "no answer" in done.stderr and "Traceback" not in done.stderr
    finally:
        delete_queues(rabbitmq, queue)


def test_cancel_with_the_broker_down_is_one_line_and_exit_4():
    env = clean_env(CLOUD_WORKER_AMQP_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    done = cloud_worker("cancel", "some-request", env=env)
    assert done.returncode == ExitCode.BROKER_UNREACHABLE
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


# --- status, logs and cancel over RabbitMQ: the Kubernetes backend (the fake API server)


@pytest.mark.integration
def test_status_logs_and_cancel_reach_a_kubernetes_job(handlers, requester, fakekube, namespace):
    handlers.start(concurrency=2)
    env = clean_env(**handlers.env())
    request_id = requester.submit(job_request("scenario/hold"))
    wait_until(lambda: fakekube.pods(namespace), "the job's pod runs")
    wait_until(lambda: json.loads(cloud_worker("status", request_id, env=env).stdout)["status"] == "running",
               "status sees the job running")
    doc = json.loads(cloud_worker("status", request_id, env=env).stdout)
    assert doc["jobName"] == fakekube.jobs(namespace)[0]["metadata"]["name"]
    logs = cloud_worker("logs", request_id, env=env)
    assert logs.returncode == 0 and "starting scenario/hold" in logs.stdout
    follower = subprocess.Popen([sys.executable, "-m", "handler.cli", "logs", "-f", doc["jobName"]], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    assert follower.poll() is None  # following a pod that still runs

    cancel = cloud_worker("cancel", request_id, env=env)
    assert cancel.returncode == 0, cancel.stderr
    assert json.loads(cancel.stdout)["data"]["status"] == "cancelled"
    assert requester.wait_reply(request_id)["data"]["status"] == "cancelled"
    code, followed, _ = finish(follower, 20)
    assert code == 0
    assert followed.count("starting scenario/hold") == 1  # asked again, printed once
    wait_until(lambda: cloud_worker("status", request_id, env=env).returncode in (ExitCode.CANCELLED,
                                                                               ExitCode.NOT_FOUND),
               "status reports the cancelled job (or its deletion)")


def test_serve_writes_an_access_log_line_per_request_in_the_json_format(tmp_path):
    import urllib.request

    port = free_port()
    env = clean_env(CLOUD_WORKER_BACKEND="local", CLOUD_WORKER_LOCAL_STATE_DIR=str(tmp_path / "state"),
                    CLOUD_WORKER_LOG_FORMAT="json", CLOUD_WORKER_HTTP_AUTH="none", CLOUD_WORKER_HTTP_HOST="127.0.0.1",
                    CLOUD_WORKER_HTTP_PROBE_PORT=str(free_port()), AWS_ENDPOINT_URL_S3="http://127.0.0.1:9")
    with open(tmp_path / "serve.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "handler.cli", "serve", "--http-port", str(port)], cwd=REPO,
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def answers() -> bool:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/jobs/no-such-id", timeout=2).status > 0
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False
        wait_until(answers, "serve answers", timeout=30)
        time.sleep(0.5)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    lines = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    assert access and '"GET /jobs/no-such-id HTTP/1.1" 404' in access[-1]["message"]
    assert not {"amqp_url", "queue", "concurrency"} & set(lines[0]["settings"])  # consume's, not serve's
    [warning] = [line for line in lines if "CLOUD_WORKER_HTTP_AUTH=none" in line["message"]]
    assert warning["level"] == "WARNING" and f"127.0.0.1:{port}" in warning["message"]
