"""``cloud-worker demo`` (``make demo``): the whole loop on one machine, in seconds.

It starts what it needs and stops it again: an embedded S3 endpoint (or the configured
one), a handler in local mode on a work queue of its own (``mstc.demo.<random>.work``,
so it never takes real work from ``mstc.queue.work``, and deleted afterwards), then plays
the client: writes sample inputs, uploads them, submits the seed's example request
(``mstc/python-test:latest``, ``test-job``), shows its progress, prints the reply event
and lists the downloaded outputs. Only RabbitMQ must already run; when it does not, the
demo says how to start it and exits 4.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from handler.core.config import Settings, redact_url
from handler.core.errors import BrokerError
from handler.core.exitcodes import ExitCode

log = logging.getLogger(__name__)

IMAGE = "mstc/python-test:latest"
JOB_NAME = "test-job"
TIMEOUT_MINUTES = 5
BUCKET = "cloud-worker-demo"
#: Longest wait for the reply; the job itself takes about a second.
WAIT_SECONDS = 60.0
#: Lines of the job's log shown under the reply.
LOG_LINES_SHOWN = 8


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("demo", help="run the whole loop locally: S3, handler (local mode), client",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder for the sample inputs and the downloaded outputs (default: a new temporary one)")
    parser.add_argument("--verbose", action="store_true", help="show the handler's log")
    return parser


def run_from_args(args: argparse.Namespace, environ: Mapping[str, str], out: TextIO = sys.stdout,
                  err: TextIO = sys.stderr) -> int:
    from handler.service import logs

    logs.configure("INFO" if args.verbose else "WARNING", "text")
    if not args.verbose:  # the demo explains an unreachable broker itself
        logging.getLogger("pika").setLevel(logging.CRITICAL)
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="cloud-worker-demo-"))
    return Demo(environ, workdir, out, err).run()


class Demo:
    def __init__(self, environ: Mapping[str, str], workdir: Path, out: TextIO, err: TextIO) -> None:
        self.environ, self.workdir, self.out, self.err = environ, workdir, out, err
        self.settings = Settings.from_env(environ, {
            "backend": "local", "queue": f"mstc.demo.{uuid.uuid4().hex[:8]}.work", "http_port": 0,
            "concurrency": 2, "shutdown_grace_seconds": 5.0,
            "local_state_dir": str(workdir / "state"),  # its own: a handler on this machine keeps the default
        })
        self._cleanup: list[Any] = []

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def run(self) -> int:
        from handler.adapters.storage import StorageConfigError
        from handler.tools.client import Client

        started = time.monotonic()
        s = self.settings
        self.say("cloud-worker demo: client -> bucket -> RabbitMQ -> handler (local mode) -> job -> bucket -> reply")
        probe = Client(s.amqp_url, s.exchange, s.queue)
        try:
            probe.connect()
        except BrokerError as exc:
            self.err.write(broker_advice(s.amqp_url, exc))
            return ExitCode.BROKER_UNREACHABLE
        finally:
            probe.close()
        self._cleanup.append(self._delete_queue)
        try:
            try:
                s3_url, s3_env = self._start_s3()
                from handler.adapters.storage import S3Credentials

                credentials = S3Credentials.from_env(s3_env)
            except StorageConfigError as exc:
                self.err.write(f"cloud-worker demo: S3 is not usable: {exc}\n")
                return ExitCode.CONFIG
            # The handler gets the bucket credentials too: it writes the Job's log to the output bucket.
            self.settings = dataclasses.replace(
                self.settings, aws_endpoint_url_s3=s3_url, aws_access_key_id=s3_env.get("AWS_ACCESS_KEY_ID", ""),
                aws_secret_access_key=s3_env.get("AWS_SECRET_ACCESS_KEY", ""))
            self._start_handler(s3_env)
            inputs = self._write_inputs()
            with Client(s.amqp_url, s.exchange, s.queue, credentials=credentials) as client:
                code = self._submit(client, f"{s3_url}/{BUCKET}", inputs)
        finally:
            for step in reversed(self._cleanup):
                try:
                    step()
                except Exception:  # tidy up the rest whatever one step did
                    log.exception("demo clean-up step failed")
        self.say(f"done in {time.monotonic() - started:.1f} s")
        return code

    # --- the parts
    def _start_s3(self) -> tuple[str, dict[str, str]]:
        from handler.service.backends.local import s3_for_jobs

        env, embedded = s3_for_jobs(self.environ)
        if embedded is None:
            url = (env.get("AWS_ENDPOINT_URL_S3") or env["AWS_ENDPOINT_URL"]).rstrip("/")
            self.say(f"  S3        {url} (configured by AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)")
            return url, env
        self._cleanup.append(embedded.stop)
        self.say(f"  S3        embedded, in memory (moto) at {embedded.url}")
        return embedded.url, env

    def _start_handler(self, s3_env: dict[str, str]) -> None:
        from handler.adapters.amqp import Broker
        from handler.service.backends.local import open_local_backend
        from handler.service.consumer import Consumer
        from handler.service.runtime import Runtime

        s = self.settings
        backend = open_local_backend(s, self.environ, s3_env=s3_env)
        backend.start()
        self._cleanup.append(backend.close)
        consumer = Consumer(s, Runtime.open(s, self.environ, backend=backend).handler, Broker(s))
        thread = threading.Thread(target=consumer.run, name="demo-handler", daemon=True)
        thread.start()

        def stop() -> None:
            consumer.stop()
            thread.join(30)

        self._cleanup.append(stop)
        self.say(f"  broker    {redact_url(s.amqp_url)}, exchange {s.exchange}, queue {s.queue} (this demo's own)")
        self.say(f"  handler   local backend, images from {backend.images.source}")

    def _write_inputs(self) -> Path:
        inputs = self.workdir / "inputs"
        (inputs / "data").mkdir(parents=True, exist_ok=True)
        (inputs / "hello.txt").write_text("Hello from the cloud-worker demo.\n")
        (inputs / "data" / "numbers.csv").write_text("n,square\n" + "".join(f"{n},{n * n}\n" for n in range(1, 6)))
        self.say(f"  inputs    {inputs}: hello.txt, data/numbers.csv")
        return inputs

    def _submit(self, client: Any, bucket_url: str, inputs: Path) -> int:
        from handler.tools.client import NoReply
        from handler.tools.console import StatusDisplay, describe
        from handler.tools.submit import listing

        request = {"image": IMAGE, "jobName": JOB_NAME, "timeOut": TIMEOUT_MINUTES}
        self.say(f"submitting the seed's example request {json.dumps(request)}")
        outputs = self.workdir / "outputs"
        with StatusDisplay(self.out) as display:
            try:
                reply = client.submit(
                    IMAGE, JOB_NAME, [inputs], bucket_url, timeout_minutes=TIMEOUT_MINUTES, download_to=outputs,
                    on_event=lambda state, event: display.update(describe(state, event)),
                    wait_seconds=WAIT_SECONDS, create_buckets=True,
                )
            except NoReply as exc:
                display.line(f"no reply: {exc}")
                return ExitCode.NO_REPLY
            display.line(f"{reply.status} after {display.elapsed:.1f} s")
        event = dict(reply.event or {})
        data = dict(event.get("data") or {})
        log_tail = data.pop("logTail", "") or ""
        event["data"] = {**data, "logTail": f"<{len(log_tail.splitlines())} lines, the last ones below>"}
        self.say(f"reply event ({event.get('type')}):")
        self.say(json.dumps(event, indent=2))
        self.say("job log (last lines):")
        for line in log_tail.splitlines()[-LOG_LINES_SHOWN:]:
            self.say(f"  | {line}")
        self.say(listing(reply.downloaded, outputs).rstrip("\n"))
        result = outputs / "result.txt"
        if result.is_file():
            self.say("result.txt:")
            for line in result.read_text().splitlines():
                self.say(f"  {line}")
        return ExitCode.OK if reply.status == "succeeded" else ExitCode.FAILED

    def _delete_queue(self) -> None:
        from handler.adapters.amqp import delete_queue

        for queue in (self.settings.queue, self.settings.cancel_queue_name):
            delete_queue(self.settings.amqp_url, queue)


def broker_advice(amqp_url: str, error: Exception) -> str:
    return (
        f"cloud-worker demo: RabbitMQ is not answering at {redact_url(amqp_url)}\n"
        f"  ({error})\n"
        "The demo needs a running RabbitMQ. Start it with `rabbitmq-server -detached` (`make demo` does\n"
        "that through scripts/ensure-rabbitmq.sh when it is installed), or point CLOUD_WORKER_AMQP_URL\n"
        "at a running broker, then run the demo again.\n"
    )
