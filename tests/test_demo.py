"""``cloud-worker demo`` itself, as ``make demo`` runs it: a real subprocess, the real broker."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pika
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def run_demo(env, *args):
    # As on a fresh machine: none of our settings, no S3 endpoint, the broker's URL only.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUD_WORKER_", "AWS_", "MINIO_"))}
    return subprocess.run([sys.executable, "-m", "handler.cli", "demo", *args], cwd=REPO, env={**clean, **env},
                          capture_output=True, text=True, timeout=90)


def test_the_demo_runs_the_seeds_request_end_to_end_and_tidies_up(rabbitmq, tmp_path):
    started = time.monotonic()
    done = run_demo({"CLOUD_WORKER_AMQP_URL": rabbitmq}, "--dir", str(tmp_path))
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert took < 30
    out = done.stdout
    assert "embedded, in memory" in out
    assert '"image": "mstc/python-test:latest", "jobName": "test-job"' in out
    assert "accepted, job created (test-job-" in out and "running (test-job-" in out
    assert "reply event (mstc.cloud.worker.job.succeeded.v1):" in out
    assert '"status": "succeeded"' in out and '"exitCode": 0' in out
    assert "downloaded 2 file(s)" in out and "result.txt" in out
    assert (tmp_path / "outputs" / "result.txt").read_text().startswith("2 input files")
    # and the handler's copy of the Job's log, as the original service left it in the output bucket
    [log_object] = (tmp_path / "outputs").glob("test-job-*.log")
    assert "command exited with code 0" in log_object.read_text()
    # Its work queue was its own, and is gone.
    queue = re.search(r"queue (mstc\.demo\.[0-9a-f]+\.work)", out).group(1)
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
            connection.channel().queue_declare(queue, passive=True)
        assert gone.value.reply_code == 404
    finally:
        connection.close()


def test_without_rabbitmq_the_demo_says_how_to_start_it_and_fails():
    done = run_demo({"CLOUD_WORKER_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F"})
    assert done.returncode == 4
    assert "RabbitMQ is not answering at amqp://guest:***@127.0.0.1:1/%2F" in done.stderr
    assert "rabbitmq-server -detached" in done.stderr and "CLOUD_WORKER_AMQP_URL" in done.stderr
    assert "Traceback" not in done.stderr
