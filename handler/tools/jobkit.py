"""The in-Job toolkit behind ``cloud-worker job -- COMMAND ...``.

The seed promised that a Job downloads everything in its input bucket, does its work,
uploads everything to its output bucket, and puts its errors into files there too. Any
image that installs this package gets that contract by making this its entrypoint:

1. read ``INPUT_BUCKET_URL`` and ``OUTPUT_BUCKET_URL`` (the input URL when unset, as in
   the seed) and the S3 credentials from the environment;
2. download every object under the input URL into ``WORKDIR/input/``;
3. run COMMAND with cwd ``WORKDIR`` and ``INPUT_DIR`` / ``OUTPUT_DIR`` added to its
   environment, passing its stdout and stderr straight through (``kubectl logs`` shows
   them) while keeping the last ``STDERR_TAIL_BYTES`` of stderr;
4. upload every regular file under ``WORKDIR/output/`` to the output URL, and when
   anything failed also ``errors/exit-code.txt``, ``errors/stderr.txt`` (the tail) and,
   when the toolkit itself failed, ``errors/traceback.txt``.

With ``FILE_PREFIX`` set (a request in the original client's form, whose files are
``<prefix>-<file>``), only the inputs named ``<prefix>-...`` are downloaded, saved
without the prefix, and every upload is named ``<prefix>-...`` in turn (errors under
``<prefix>-errors/``), so the client finds the outputs by listing with its prefix.

When the toolkit itself fails (the environment is unusable, the inputs cannot be
downloaded, the outputs cannot be uploaded, the command cannot be run) it also says why
in one line in the container's termination message (``/dev/termination-log``, Kubernetes'
default ``terminationMessagePath``; ``MSTC_TERMINATION_LOG`` names the file in local mode),
which the reply's ``message`` carries: ``cannot download the inputs: ... NoSuchBucket ...``
rather than only an exit code.

Exit codes: COMMAND's own (128+N when signal N killed it); ``EX_CONFIG`` (78) when the
environment is unusable (no or bad bucket URL, no credentials; nothing is uploaded);
``EX_SOFTWARE`` (70) when downloading inputs or uploading outputs failed; 126 / 127
when COMMAND cannot be executed / is not found (as a shell reports them).

``handler.adapters.storage`` (and with it minio, from the ``s3`` extra) is imported only when a
job runs, so the ``cloud-worker`` command and its other subcommands work without it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from handler.core.bucketurl import BucketUrl, InvalidBucketUrl, parse_bucket_url
from handler.core.manifest import TERMINATION_LOG, TERMINATION_LOG_VARIABLE, TERMINATION_MESSAGE_BYTES

if TYPE_CHECKING:
    from handler.adapters.storage import Bucket, S3Credentials

log = logging.getLogger(__name__)

EX_USAGE = 64  # sysexits.h: no command given
EX_SOFTWARE = 70  # sysexits.h: the toolkit failed (download, upload, unexpected error)
EX_CONFIG = 78  # sysexits.h: bad or missing bucket URLs or credentials
EX_CANNOT_EXECUTE = 126  # shell convention: COMMAND exists but cannot be executed
EX_NOT_FOUND = 127  # shell convention: COMMAND not found

#: Bytes of the command's stderr kept for ``errors/stderr.txt``: enough for a Python
#: traceback or a few hundred log lines, small enough to read in a reply or a browser.
STDERR_TAIL_BYTES = 64 * 1024
#: Folder, under the output URL, that receives the error files.
ERRORS_PREFIX = "errors"


@dataclass(frozen=True)
class JobEnvironment:
    """What a Job learns from its environment: where to read, where to write, as whom."""

    input_url: BucketUrl
    output_url: BucketUrl
    credentials: S3Credentials
    #: ``<FILE_PREFIX>-`` when FILE_PREFIX is set, else "": what starts every file's name.
    name_prefix: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> JobEnvironment:
        """Raise ``InvalidBucketUrl`` or ``StorageConfigError`` when unusable."""
        from handler.adapters.storage import S3Credentials, StorageConfigError

        input_text = environ.get("INPUT_BUCKET_URL", "")
        if not input_text:
            raise StorageConfigError("INPUT_BUCKET_URL is not set: the Job does not know where its inputs are")
        output_text = environ.get("OUTPUT_BUCKET_URL") or input_text
        return cls(
            input_url=_parse(input_text, "INPUT_BUCKET_URL"),
            output_url=_parse(output_text, "OUTPUT_BUCKET_URL"),
            credentials=S3Credentials.from_env(environ),
            name_prefix=f"{environ['FILE_PREFIX']}-" if environ.get("FILE_PREFIX") else "",
        )


@dataclass(frozen=True)
class _Outcome:
    exit_code: int
    stderr_tail: bytes | None = None  # None: the command never ran
    traceback: str | None = None  # set when the toolkit itself failed
    reason: str | None = None  # why the toolkit failed, in one line (the termination message)


def report_failure(environ: Mapping[str, str], reason: str) -> None:
    """Write ``reason`` as the container's termination message, where there is one to write
    (only to a file that exists: the kubelet's, or the local backend's)."""
    path = Path(environ.get(TERMINATION_LOG_VARIABLE) or TERMINATION_LOG)
    if not path.is_file():
        return  # not in a container (or a local job): the log says it all
    try:
        path.write_bytes(reason.encode("utf-8", "replace")[:TERMINATION_MESSAGE_BYTES])
    except OSError as exc:
        log.warning("cannot write the termination message to %s: %s", path, exc)


def _why(exc: BaseException) -> str:
    """An exception in one line: our own errors say it all; others need their kind."""
    from handler.core.errors import WorkerError

    return str(exc) if isinstance(exc, WorkerError) else f"{type(exc).__name__}: {exc}"


def run_job(command: list[str], environ: Mapping[str, str], workdir: Path | None = None) -> int:
    """Download inputs, run ``command``, upload outputs (and errors); return the exit code.

    ``workdir`` should be empty: files already in ``workdir/output`` are uploaded too.
    None: a temporary directory, removed afterwards.
    """
    if not command:
        raise ValueError("run_job needs a command to run")
    try:
        from handler.adapters.storage import StorageConfigError, open_bucket
    except ImportError as exc:
        log.error("cloud-worker job needs the S3 client: install mstc-cloud-worker[s3] (%s)", exc)
        return EX_CONFIG
    try:
        job = JobEnvironment.from_env(environ)
        inputs, outputs = (open_bucket(url, job.credentials) for url in (job.input_url, job.output_url))
    except (InvalidBucketUrl, StorageConfigError) as exc:
        log.error("job cannot start: %s", exc)
        report_failure(environ, f"the job cannot start: {exc}")
        return EX_CONFIG
    log.info("job starting: %s; inputs from %s, outputs to %s", command, job.input_url, job.output_url)
    if workdir is not None:
        return _run_in(Path(workdir).resolve(), command, environ, inputs, outputs, job.name_prefix)
    with tempfile.TemporaryDirectory(prefix="cloud-worker-job-") as tmp:
        return _run_in(Path(tmp), command, environ, inputs, outputs, job.name_prefix)


def _run_in(workdir: Path, command: list[str], environ: Mapping[str, str], inputs: Bucket, outputs: Bucket,
            name_prefix: str = "") -> int:
    started = time.monotonic()
    input_dir, output_dir = workdir / "input", workdir / "output"
    output_dir.mkdir(parents=True, exist_ok=True)
    downloaded: list[Path] = []
    try:
        downloaded = inputs.download_all(input_dir, name_prefix)
    except Exception as exc:
        log.exception("downloading inputs from %s failed", inputs.url)
        outcome = _Outcome(EX_SOFTWARE, None, traceback.format_exc(), f"cannot download the inputs: {_why(exc)}")
    else:
        env = {**environ, "INPUT_DIR": str(input_dir), "OUTPUT_DIR": str(output_dir)}
        outcome = _run_command(command, env, workdir)
    outcome, uploaded = _upload_outputs(outputs, output_dir, outcome, name_prefix)
    if outcome.exit_code != 0:
        _upload_errors(outputs, workdir / ".errors", outcome, name_prefix)
    if outcome.reason is not None:
        report_failure(environ, outcome.reason)
    log.info(
        "job finished: exit code %d, %d inputs, %d outputs, %.1f s",
        outcome.exit_code,
        len(downloaded),
        len(uploaded),
        time.monotonic() - started,
    )
    return outcome.exit_code


def _run_command(command: list[str], env: Mapping[str, str], cwd: Path) -> _Outcome:
    """Run ``command``, streaming its output through; never raises for the command's sake."""
    sys.stdout.flush()  # the child writes to the same stdout; keep our lines in order
    sys.stderr.flush()
    try:
        child = subprocess.Popen(command, cwd=cwd, env=dict(env), stderr=subprocess.PIPE)
    except FileNotFoundError:
        log.error("command not found: %s", command[0])
        return _Outcome(EX_NOT_FOUND, f"command not found: {command[0]}\n".encode(), traceback.format_exc(),
                        f"command not found: {command[0]}")
    except PermissionError:
        log.error("command cannot be executed: %s", command[0])
        return _Outcome(EX_CANNOT_EXECUTE, f"permission denied: {command[0]}\n".encode(), traceback.format_exc(),
                        f"command cannot be executed: {command[0]}")
    except OSError as exc:
        log.exception("starting %s failed", command[0])
        return _Outcome(EX_SOFTWARE, b"", traceback.format_exc(), f"cannot start {command[0]}: {exc}")
    tail = bytearray()
    with child, _forwarding_sigterm(child):
        assert child.stderr is not None
        while chunk := os.read(child.stderr.fileno(), 65536):
            _write_stderr(chunk)
            tail += chunk
            del tail[:-STDERR_TAIL_BYTES]
        returncode = child.wait()
    exit_code = returncode if returncode >= 0 else 128 - returncode
    log.log(logging.INFO if exit_code == 0 else logging.WARNING, "command exited with code %d", exit_code)
    return _Outcome(exit_code, bytes(tail))


def _upload_outputs(outputs: Bucket, output_dir: Path, outcome: _Outcome,
                    name_prefix: str = "") -> tuple[_Outcome, list[str]]:
    """Upload what the command wrote, even after a failure: partial results help."""
    try:
        return outcome, outputs.upload_dir(output_dir, name_prefix=name_prefix)
    except Exception as exc:
        log.exception("uploading outputs to %s failed", outputs.url)
        # A command that succeeded but whose outputs are lost has not succeeded.
        reason = outcome.reason or f"cannot upload the outputs: {_why(exc)}"
        return _Outcome(outcome.exit_code or EX_SOFTWARE, outcome.stderr_tail, traceback.format_exc(), reason), []


def _upload_errors(outputs: Bucket, local_dir: Path, outcome: _Outcome, name_prefix: str = "") -> None:
    """Best effort: the exit code is already decided, and the logs hold the same story."""
    try:
        local_dir.mkdir(parents=True, exist_ok=True)
        (local_dir / "exit-code.txt").write_text(f"{outcome.exit_code}\n")
        if outcome.stderr_tail is not None:
            (local_dir / "stderr.txt").write_bytes(outcome.stderr_tail)
        if outcome.traceback is not None:
            (local_dir / "traceback.txt").write_text(outcome.traceback)
        outputs.upload_dir(local_dir, under_prefix=ERRORS_PREFIX, name_prefix=name_prefix)
    except Exception:
        log.exception("uploading error files to %s failed", outputs.url)


def _write_stderr(chunk: bytes) -> None:
    sink = getattr(sys.stderr, "buffer", None)
    if sink is not None:
        sink.write(chunk)
        sink.flush()
    else:  # a text-only stream (some test harnesses, IDE consoles)
        sys.stderr.write(chunk.decode(errors="replace"))
        sys.stderr.flush()


@contextlib.contextmanager
def _forwarding_sigterm(child: subprocess.Popen[bytes]) -> Iterator[None]:
    """Pass SIGTERM on to the child while it runs.

    As a container's PID 1 the toolkit would otherwise ignore the kubelet's SIGTERM, the
    child would never hear it, and the pod would be killed at the end of its grace
    period with nothing uploaded. Signal handlers can only be set from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _parse(text: str, variable: str) -> BucketUrl:
    try:
        return parse_bucket_url(text)
    except InvalidBucketUrl as exc:
        raise InvalidBucketUrl(f"{variable}: {exc}") from exc


# --- command line: ``cloud-worker job [--workdir DIR] -- COMMAND ...``


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``job`` subcommand; run the parsed arguments with ``run_from_args``."""
    parser = subparsers.add_parser(
        "job",
        help="run a command inside a Job: download inputs, run, upload outputs and errors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    return parser


def run_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        log.error("no command given: usage is cloud-worker job [--workdir DIR] -- COMMAND [ARG ...]")
        return EX_USAGE
    return run_job(command, environ, args.workdir)


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """``argv`` is what follows ``job``; ``environ`` is the process environment."""
    parser = argparse.ArgumentParser(prog="cloud-worker job", description=__doc__)
    _add_arguments(parser)
    return run_from_args(parser.parse_args(list(argv)), environ)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="empty directory to work in (input/ and output/ are made inside). Default: a temporary one.",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
