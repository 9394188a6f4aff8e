"""``cloud-worker submit``: the seed's client loop from a shell, built on ``handler.tools.client``.

Progress goes to stderr (a live status line on a terminal, plain lines otherwise); the
terminal reply event goes to stdout as JSON, so ``cloud-worker submit ... | jq .data``
works. Exit codes say how the request ended:

====  ==========================================================================
0     succeeded (or, with ``--no-wait``, published)
1     failed: the Job failed or could not start
2     usage: bad arguments, an input path that does not exist
3     configuration: a bad bucket URL, missing S3 credentials, bad settings
4     the broker is unreachable
6     timedout: the Job ran past its timeout
7     rejected: the handler refused the request (the reply names the field)
8     no reply within ``--wait-seconds``, or the broker connection was lost
9     S3 failed: uploading the inputs or downloading the outputs
10    cancelled (``cloud-worker cancel``)
130   interrupted (Ctrl-C): the request id and how to cancel it are printed
====  ==========================================================================

The request id is chosen here and printed once the request is published, with the
command that cancels it, so a user can always name it to ``status``, ``logs`` and
``cancel``; nothing is printed for what did not happen (no "uploading" before the
inputs, the credentials and the bucket are known to be there). ``--follow`` streams the
job's log (``handler.tools.control``) to stderr while waiting for the reply.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from handler.core.bucketurl import InvalidBucketUrl
from handler.core.config import Settings
from handler.core.errors import BrokerError, NoSuchBucket, Rejected
from handler.core.exitcodes import ExitCode

EXIT_FOR_STATUS = {"succeeded": ExitCode.OK, "failed": ExitCode.FAILED, "timedout": ExitCode.TIMEDOUT,
                   "rejected": ExitCode.REJECTED, "cancelled": ExitCode.CANCELLED, "submitted": ExitCode.OK}


def exit_code_for(status: str) -> int:
    return EXIT_FOR_STATUS.get(status, ExitCode.FAILED)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "submit", help="upload inputs, submit a work request, wait for its reply, download the outputs",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", required=True, help="container image of the Job, e.g. mstc/python-test:latest")
    parser.add_argument("--job-name", required=True, help="the request's jobName (the Job name's prefix)")
    parser.add_argument("--timeout", type=float, default=None, metavar="MIN",
                        help="the request's timeOut in minutes (default: the handler's)")
    parser.add_argument("--profile", default=None, metavar="NAME",
                        help="the Job profile to run it with, one the handler's operator defined (default: the "
                             "handler's default profile); an unknown one is rejected, naming the valid ones")
    parser.add_argument("--input", dest="inputs", required=True, nargs="+", action="extend", metavar="PATH",
                        help="files (uploaded by name) and directories (their contents) to upload as inputs")
    parser.add_argument("--bucket-url", required=True,
                        help="http(s)://host:port/bucket[/prefix] or s3://bucket[/prefix]; inputs go to "
                             "<prefix>/<request-id>/input/, outputs to <prefix>/<request-id>/output/")
    parser.add_argument("--output-bucket-url", default=None, help="where the Job writes its outputs instead")
    parser.add_argument("--download", type=Path, default=None, metavar="DIR",
                        help="download the outputs (and error files) into DIR once the reply came")
    parser.add_argument("--follow", "-f", action="store_true",
                        help="print the job's log to stderr while it runs (reads the cluster with your kubeconfig, "
                             "or in local mode the handler's state folder on this machine)")
    parser.add_argument("--no-wait", action="store_true",
                        help="publish and exit: no reply is awaited (none is sent back to this client)")
    parser.add_argument("--wait-seconds", type=float, default=None, metavar="S",
                        help="give up waiting for the reply after S seconds, exit 8 (default: the request's "
                             "timeout plus 5 minutes; 20 minutes when it gives none)")
    parser.add_argument("--create-buckets", action="store_true", help="create the buckets if they do not exist")
    parser.add_argument("--expire-after", type=float, default=None, metavar="S",
                        help="the broker drops the request if no handler has taken it within S seconds (the AMQP "
                             "expiration; with a dead-letter policy on the queue it lands there instead)")
    parser.add_argument("--amqp-url", default=None, help="broker URL [CLOUD_WORKER_AMQP_URL, else local RabbitMQ]")
    parser.add_argument("--exchange", default=None, help="exchange [CLOUD_WORKER_EXCHANGE, else mstc.exchange]")
    parser.add_argument("--routing-key", default=None,
                        help="work queue and routing key [CLOUD_WORKER_QUEUE, else mstc.queue.work]")
    return parser


def run_from_args(args: argparse.Namespace, environ: Mapping[str, str], stdout: TextIO = sys.stdout,
                  stderr: TextIO = sys.stderr) -> int:
    try:
        from handler.adapters.storage import StorageConfigError, StorageError
        from handler.tools.client import Client, NoReply
    except ImportError as exc:
        return _fail(stderr, ExitCode.CONFIG, f"the client needs the S3 library: install mstc-cloud-worker[s3] ({exc})")
    from handler.tools.console import StatusDisplay, describe

    # The broker's and S3's failures are reported below, once, with advice (see service.logs).
    logging.getLogger("handler.adapters.amqp").setLevel(logging.ERROR)
    settings = Settings.from_env(environ)
    wait_seconds = args.wait_seconds
    if wait_seconds is None:
        wait_seconds = 60.0 * ((args.timeout or 15.0) + 5.0)
    client = Client(args.amqp_url or settings.amqp_url, args.exchange or settings.exchange,
                    args.routing_key or settings.queue, environ=environ, settings=settings)
    request_id = uuid.uuid4().hex
    display = StatusDisplay(stderr)
    follower = LogFollower(settings, environ, request_id, display) if args.follow else None

    published = threading.Event()

    def on_event(state: str, event: dict | None) -> None:
        if state == "checked":  # valid, but nothing is uploaded or sent yet: nothing to say
            return
        if state == "published":  # from now on there is a request to name and to cancel
            published.set()
            display.line(f"request {request_id} (cancel it with: cloud-worker cancel {request_id})")
        display.update(describe(state, event))
        if follower is not None and state in ("accepted", "started"):
            follower.start()

    try:
        with client, display:
            reply = client.submit(
                args.image, args.job_name, args.inputs, args.bucket_url, args.output_bucket_url, args.timeout,
                wait=not args.no_wait, on_event=on_event, download_to=args.download, wait_seconds=wait_seconds,
                create_buckets=args.create_buckets, expire_after=args.expire_after, request_id=request_id,
                profile=args.profile,
            )
            if follower is not None:
                follower.finish()
            status = reply.status
            display.line(summary(reply.status, reply.data, display.elapsed))
    except FileNotFoundError as exc:
        return _fail(stderr, ExitCode.USAGE, str(exc))
    except Rejected as exc:
        return _fail(stderr, ExitCode.REJECTED, f"the handler would reject this request, so nothing was uploaded: "
                                                f"{exc}")
    except (InvalidBucketUrl, StorageConfigError) as exc:
        return _fail(stderr, ExitCode.CONFIG, str(exc))
    except NoSuchBucket as exc:
        return _fail(stderr, ExitCode.STORAGE, f"{exc} (create the bucket, or pass --create-buckets)")
    except BrokerError as exc:
        return _fail(stderr, ExitCode.BROKER_UNREACHABLE, f"{exc} (is RabbitMQ running? set --amqp-url or "
                                                      "CLOUD_WORKER_AMQP_URL)")
    except NoReply as exc:
        return _fail(stderr, ExitCode.NO_REPLY, str(exc))
    except StorageError as exc:
        return _fail(stderr, ExitCode.STORAGE, str(exc))
    except KeyboardInterrupt:
        if not published.is_set():
            return _fail(stderr, ExitCode.INTERRUPTED, "interrupted before the request was sent: nothing runs")
        return _fail(stderr, ExitCode.INTERRUPTED, f"interrupted: request {request_id} may still run; cancel it "
                                                   f"with: cloud-worker cancel {request_id}")
    if reply.event is None:
        json.dump({"requestId": reply.request_id, "inputBucketUrl": reply.input_url,
                   "outputBucketUrl": reply.output_url}, stdout, indent=2)
    else:
        json.dump(reply.event, stdout, indent=2)
    stdout.write("\n")
    if args.download is not None and reply.event is not None:
        stderr.write(listing(reply.downloaded, args.download))
    return exit_code_for(status)


class LogFollower:
    """``--follow``: the job's log, printed line by line above the status line, from a
    thread started once the handler has accepted the request."""

    def __init__(self, settings: Settings, environ: Mapping[str, str], request_id: str, display: Any) -> None:
        self.settings, self.environ, self.request_id, self.display = settings, environ, request_id, display
        self._thread: threading.Thread | None = None
        self._partial = ""

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="follow-log", daemon=True)
            self._thread.start()

    def finish(self, timeout: float = 5.0) -> None:
        """Let the last lines of a job that has ended come out."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self._partial:
            self.display.line(self._partial)
            self._partial = ""

    def write(self, text: str) -> None:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.display.line(line)

    def flush(self) -> None:
        pass

    def _run(self) -> None:
        from handler.core.errors import WorkerError
        from handler.service.runtime import open_for_inspection
        from handler.tools import control

        try:
            backend = open_for_inspection(self.settings, self.environ, self.request_id,
                                          chosen="CLOUD_WORKER_BACKEND" in self.environ)
            try:
                for _ in range(60):  # the handler says "accepted" just before the job is written down
                    if backend.lookup(self.request_id) is not None:
                        break
                    threading.Event().wait(0.5)
                if control.print_log(backend, self.request_id, self, follow=True) == ExitCode.NOT_FOUND:
                    self.display.line(f"cannot follow the job's log: request {self.request_id} has no job in "
                                      f"{backend.namespace!r} (CLOUD_WORKER_BACKEND, CLOUD_WORKER_NAMESPACE and "
                                      "CLOUD_WORKER_LOCAL_STATE_DIR say where to look)")
            finally:
                backend.close()
        except (WorkerError, OSError) as exc:
            self.display.line(f"cannot follow the job's log: {exc}")


def summary(status: str, data: Mapping[str, Any], elapsed: float) -> str:
    if status == "submitted":
        return f"submitted in {elapsed:.1f} s (not waiting for the reply)"
    return f"{status} after {elapsed:.1f} s: {data.get('result') or data.get('message') or ''}".rstrip(": ")


def listing(paths: tuple[Path, ...], root: Path) -> str:
    lines = [f"downloaded {len(paths)} file(s) to {root}:"]
    for path in paths:
        lines.append(f"  {path.relative_to(root.resolve()).as_posix()}  ({path.stat().st_size} bytes)")
    return "\n".join(lines) + "\n"


def _fail(stderr: TextIO, code: int, message: str) -> int:
    stderr.write(f"cloud-worker submit: {message}\n")
    return code
