"""The ``cloud-worker`` command: the handler's two faces, the client, and the tools.

Each subcommand loads settings once (a flag beats its environment variable), builds what
it needs, and turns every failure a user can fix into one line on stderr that names
the setting to change, and a documented exit code (``handler.core.exitcodes``): no
tracebacks for a port in use, a broker that is down or a bad setting. A setting is a flag
only of the subcommands it means something to (``metadata["commands"]`` in
``handler.core.config``); every subcommand reads every variable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from handler.core.config import Settings, env_name, setting_fields
from handler.core.errors import BrokerError, ConfigError, JobFailedToStart, NotFound, Transient
from handler.core.exitcodes import ExitCode

log = logging.getLogger("handler.cli")

DESCRIPTION = """\
MSTC Cloud Worker: runs each work request from RabbitMQ (or HTTP) as a Kubernetes Job, or
as a local process, and replies with how it ended. Send requests with `cloud-worker submit`,
then follow them with `status`, `logs` and `cancel`."""

EPILOG = """\
exit codes:
  0    done (submit: the job succeeded)
  1    submit/status: the job failed; cancel: the job had already finished
  2    usage: bad arguments
  3    configuration: a bad setting, a port in use, a state folder in use
  4    the broker (RabbitMQ) cannot be reached
  5    the Kubernetes API server cannot be reached
  6    submit/status: the job ran past its timeout
  7    submit: the request was rejected (the message names the field)
  8    submit/cancel: no answer in time
  9    submit: S3 upload or download failed
  10   submit/status: the request was cancelled
  11   status/logs/cancel: no job for that request id or job name
  130  interrupted (Ctrl-C, or a second signal)

Run `cloud-worker COMMAND --help` for a command's options. Every setting is also an
environment variable, shown in [brackets]."""

COMMANDS = {
    "consume": ("run the handler: take work requests from RabbitMQ and run each as a job",
                "Take work requests from the RabbitMQ work queue and run each one as a Kubernetes Job (or, with "
                "--backend local, a local process), following it to its end and replying to the requester. "
                "/healthz, /readyz and /metrics are served on --http-port."),
    "serve": ("run the handler over HTTP: work requests as CloudEvents, each run as a job",
              "Serve work requests posted as CloudEvents over HTTP (POST /, GET /jobs/<request id>), each run as a "
              "Kubernetes Job or local process; the reply is the response, or with Prefer: respond-async a "
              "location to poll."),
    "status": ("show where a request stands: pending, running, or how it ended",
               "Print what is known of a request, as GET /jobs/<request id> answers: its job's name and status, and "
               "once it ended the reply (status, reason, exit code, log tail). Reads the cluster (with your "
               "kubeconfig) or, in local mode, the state folder of the handler on this machine. The exit code "
               "says how the request ended, as submit's does; 0 while it runs."),
    "logs": ("print a request's job log; -f follows it while the job runs",
             "Print the log of a request's job (its pod's container in a cluster, its process's output in local "
             "mode); with -f, keep printing what the job writes until it ends."),
    "cancel": ("cancel a request: stop its job, and tell its requester 'cancelled'",
               "Cancel a request by its request id or its job's name: the handler stops the job and replies "
               "'cancelled' to whoever sent the request. Sent over RabbitMQ like the requests, so it works in both "
               "backends without access to the cluster. Prints the handler's answer; exit 0 cancelled, 1 it had "
               "already finished, 11 no such job, 8 no answer in time."),
}
SUBMIT_DESCRIPTION = """\
Upload the inputs, send a work request, wait for the reply and download the outputs.

The request id is printed once the request is sent (cancel with `cloud-worker cancel <request id>`).
Progress goes to stderr (a live status line on a terminal, plain lines otherwise);
the reply event goes to stdout as JSON, so `cloud-worker submit ... | jq .data` works.
The request is checked as the handler checks it before anything is uploaded."""
JOB_DESCRIPTION = """\
Run a command inside a job's container: download everything under INPUT_BUCKET_URL into
input/, run the command there (with INPUT_DIR and OUTPUT_DIR set), upload everything in
output/ to OUTPUT_BUCKET_URL, and when anything failed also errors/exit-code.txt and
errors/stderr.txt. Use it as your image's entrypoint:
  cloud-worker job -- python main.py

Exit codes: the command's own; 78 when the environment is unusable (no bucket URL or
credentials); 70 when downloading or uploading failed; 126/127 when the command cannot
be run / is not found."""
DEMO_DESCRIPTION = """\
Run the whole loop on this machine in seconds: an S3 endpoint (embedded, in memory, unless
AWS_ENDPOINT_URL_S3 names one), a local-mode handler on a queue of its own, and the
client, which uploads sample inputs, submits the example request, shows its progress,
prints the reply and lists the downloaded outputs. Only RabbitMQ must already run; when
it does not, the demo says how to start it and exits 4."""


def version() -> str:
    try:
        return metadata.version("mstc-cloud-worker")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _add_setting_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """One flag per setting of ``command`` (``--queue`` for CLOUD_WORKER_QUEUE); a flag beats the variable."""
    group = parser.add_argument_group("settings (each also an environment variable, in [brackets])")
    for f in setting_fields():
        if f.metadata.get("secret") or command not in f.metadata["commands"]:
            continue  # credentials come from the environment (a Secret), never a command line others can read
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} [{env_name(f)}]".replace("%", "%%")
        if f.type in ("bool", bool):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.metadata.get("choices"):
            group.add_argument(flag, dest=f.name, choices=f.metadata["choices"], default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=f.metadata["parse"], default=None, metavar=f.name.upper(),
                               help=help_text)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Settings)}
    return Settings.from_env(os.environ, overrides)


def _command(sub: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    short, long = COMMANDS[name]
    parser = sub.add_parser(name, help=short, description=long)
    _add_setting_flags(parser, name)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloud-worker", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"cloud-worker {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _command(sub, "consume").set_defaults(func=cmd_consume)
    _command(sub, "serve").set_defaults(func=cmd_serve)
    from handler.tools import demo, jobkit, submit

    submitting = submit.add_parser(sub)
    submitting.description = SUBMIT_DESCRIPTION
    submitting.epilog = EPILOG.split("\n\n")[0]
    submitting.set_defaults(func=cmd_submit)

    status = _command(sub, "status")
    status.add_argument("request_id", metavar="REQUEST_ID", help="the request id submit printed")
    status.set_defaults(func=cmd_status)
    logs = _command(sub, "logs")
    logs.add_argument("target", metavar="REQUEST_ID|JOB_NAME", help="the request id submit printed, or the job's name")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing the log until the job ends")
    logs.set_defaults(func=cmd_logs)
    cancel = _command(sub, "cancel")
    cancel.add_argument("target", metavar="REQUEST_ID|JOB_NAME", help="the request id submit printed, or the job's "
                        "name")
    cancel.add_argument("--reason", default=None, help="why, for the requester's reply (default: cancelled on "
                        "request)")
    cancel.add_argument("--wait-seconds", type=float, default=60.0, metavar="S",
                        help="give up waiting for the handler's answer after S seconds, exit 8 (default: 60)")
    cancel.set_defaults(func=cmd_cancel)

    job = jobkit.add_parser(sub)
    job.description = JOB_DESCRIPTION
    job.set_defaults(func=cmd_job)
    running_demo = demo.add_parser(sub)
    running_demo.description = DEMO_DESCRIPTION
    running_demo.set_defaults(func=cmd_demo)
    for command in sub.choices.values():
        # No abbreviations: `--http-token SECRET` must be refused, not taken for `--http-token-file`.
        command.allow_abbrev = False
    parser._cloud_worker_commands = dict(sub.choices)  # type: ignore[attr-defined]
    return parser


def _log_settings(settings: Settings, command: str) -> None:
    """The settings ``command`` uses (those it has a flag for), as the first log line: not
    the ``http_*`` settings of ``serve`` in ``consume``'s log, nor the broker's in ``serve``'s."""
    applying = {f.name for f in setting_fields() if command in f.metadata["commands"]}
    shown = {name: value for name, value in settings.redacted().items() if name in applying}
    log.info("cloud-worker %s %s starting with these settings", version(), command, extra={"settings": shown})


def cmd_consume(args: argparse.Namespace) -> int:
    from handler.service import logs

    settings = _settings(args)
    logs.configure(settings.log_level, settings.log_format)
    from handler.adapters.amqp import Broker
    from handler.service.consumer import Consumer
    from handler.service.health import HealthServer, Heartbeat
    from handler.service.runtime import Runtime

    _log_settings(settings, "consume")
    try:
        runtime = Runtime.open(settings, os.environ)
    except Transient as exc:
        log.error("the Kubernetes API server cannot be reached: %s (check KUBECONFIG or the in-cluster service "
                  "account)", exc)
        return ExitCode.KUBE_UNREACHABLE
    except (JobFailedToStart, NotFound) as exc:
        log.error("the Kubernetes API server refused to list the handler's Jobs in namespace %s: %s (check "
                  "CLOUD_WORKER_NAMESPACE and that the handler's Role there grants what the chart's role.yaml "
                  "lists)", settings.namespace, exc)
        return ExitCode.CONFIG
    runtime.metrics.broker_consumer_timeout(settings.broker_consumer_timeout_minutes * 60)
    broker = Broker(settings, runtime.handler.profiles)
    heartbeat = Heartbeat()
    health = None
    try:
        if settings.http_port:
            try:
                health = HealthServer(
                    settings.http_port, heartbeat, settings.heartbeat_stale_seconds,
                    checks={"broker": lambda: broker.is_open, **runtime.checks},
                    extra={"/metrics": runtime.metrics.render}, host=settings.http_host,
                ).start()
            except OSError as exc:
                log.error("cannot serve /healthz, /readyz and /metrics on port %d: %s (choose another port with "
                          "CLOUD_WORKER_HTTP_PORT or --http-port, or 0 for none)", settings.http_port,
                          exc.strerror or exc)
                return ExitCode.CONFIG
        consumer = Consumer(settings, runtime.handler, broker, heartbeat)
        consumer.install_signal_handlers()
        return consumer.run()
    finally:
        runtime.close()
        if health is not None:
            health.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    """The HTTP face under gunicorn (see ``handler.service.serve`` for its configuration)."""
    from handler.service import logs, serve
    from handler.service.runtime import reachable

    settings = _settings(args)
    logs.configure(settings.log_level, settings.log_format)
    _log_settings(settings, "serve")
    from handler.service.profiles import load_profiles

    load_profiles(settings)  # a bad profile stops serve here (exit 3), not in a forked web worker
    if not reachable(settings, os.environ):
        log.error("the Kubernetes API server cannot be reached (check KUBECONFIG or the in-cluster service account)")
        return ExitCode.KUBE_UNREACHABLE
    busy = _port_in_use(settings.http_host, settings.http_port)
    if busy:
        log.error("cannot serve HTTP on %s port %d: %s (choose another port with CLOUD_WORKER_HTTP_PORT or "
                  "--http-port, or another address with CLOUD_WORKER_HTTP_HOST)", settings.http_host,
                  settings.http_port, busy)
        return ExitCode.CONFIG
    return serve.run(settings)


def _port_in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound ("Address already in use"), or None: checked before
    gunicorn, which would retry for five seconds and then exit with its own words."""
    import socket

    if not port:
        return None
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host.strip("[]"), port))
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def cmd_job(args: argparse.Namespace) -> int:
    """Inside a Job: download inputs, run the command, upload outputs (and error files)."""
    from handler.service import logs
    from handler.tools import jobkit

    logs.configure("INFO", "auto")
    return jobkit.run_from_args(args, os.environ)


def cmd_submit(args: argparse.Namespace) -> int:
    """Upload inputs, submit a request, wait for the reply, download outputs."""
    from handler.service import logs
    from handler.tools import submit

    logs.configure("WARNING", "text")
    return submit.run_from_args(args, os.environ)


def _tool_settings(args: argparse.Namespace) -> Settings:
    from handler.service import logs

    logs.configure("WARNING", "text")
    return _settings(args)


def _backend_chosen(args: argparse.Namespace) -> bool:
    """The user named the backend (``--backend`` or CLOUD_WORKER_BACKEND); else the tools find it."""
    return getattr(args, "backend", None) is not None or "CLOUD_WORKER_BACKEND" in os.environ


def cmd_status(args: argparse.Namespace) -> int:
    from handler.service.runtime import open_for_inspection
    from handler.tools import control

    settings = _tool_settings(args)
    try:
        backend = open_for_inspection(settings, os.environ, args.request_id, chosen=_backend_chosen(args))
    except Transient as exc:
        return _fail(args, ExitCode.KUBE_UNREACHABLE, f"the Kubernetes API server cannot be reached: {exc} (check "
                     "KUBECONFIG or --kubeconfig)")
    try:
        code, doc = control.status(backend, settings, args.request_id)
    finally:
        backend.close()
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if code == ExitCode.NOT_FOUND:
        _fail(args, code, doc["message"])
    return code


def cmd_logs(args: argparse.Namespace) -> int:
    from handler.service.runtime import open_for_inspection
    from handler.tools import control

    settings = _tool_settings(args)
    try:
        backend = open_for_inspection(settings, os.environ, args.target, chosen=_backend_chosen(args))
        try:
            code = control.print_log(backend, args.target, sys.stdout, follow=args.follow)
        finally:
            backend.close()
    except Transient as exc:
        return _fail(args, ExitCode.KUBE_UNREACHABLE, f"the Kubernetes API server cannot be reached: {exc} (check "
                     "KUBECONFIG or --kubeconfig)")
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    if code == ExitCode.NOT_FOUND:
        _fail(args, code, f"no job for {args.target} (not taken by a handler yet, or finished and since deleted)")
    return code


def cmd_cancel(args: argparse.Namespace) -> int:
    from handler.tools import control
    from handler.tools.client import Client, NoReply

    settings = _tool_settings(args)
    logging.getLogger("handler.adapters.amqp").setLevel(logging.ERROR)  # its "connection lost" is ours to say
    try:
        with Client(settings.amqp_url, settings.exchange, settings.queue,
                    cancel_routing_key=settings.cancel_queue_name) as client:
            answer = client.cancel(args.target, args.reason, by_job_name=control.is_job_name(args.target),
                                   wait_seconds=args.wait_seconds)
    except BrokerError as exc:
        return _fail(args, ExitCode.BROKER_UNREACHABLE, f"{exc} (is RabbitMQ running? set --amqp-url or "
                     "CLOUD_WORKER_AMQP_URL)")
    except NoReply as exc:
        return _fail(args, ExitCode.NO_REPLY, str(exc))
    except KeyboardInterrupt:
        return _fail(args, ExitCode.INTERRUPTED, "interrupted: the cancel may still be carried out")
    json.dump(answer, sys.stdout, indent=2)
    sys.stdout.write("\n")
    data = answer.get("data") or {}
    status = data.get("status")
    sys.stderr.write(f"{status}: {data.get('message', '')}\n")
    return {"cancelled": ExitCode.OK, "finished": ExitCode.FAILED, "notFound": ExitCode.NOT_FOUND}.get(
        str(status), ExitCode.FAILED)


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole loop on this machine: embedded S3, a local-mode handler, the client."""
    from handler.tools import demo

    return demo.run_from_args(args, os.environ)


def _fail(args: argparse.Namespace, code: int, message: str) -> int:
    sys.stderr.write(f"cloud-worker {args.command}: {message}\n")
    return code


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``; a flag the command does not have is refused with that command's
    usage, naming the commands that do have it (``--once`` is ``consume``'s, not ``serve``'s)."""
    args, unknown = parser.parse_known_args(argv)
    if not unknown:
        return args
    commands: dict[str, argparse.ArgumentParser] = parser._cloud_worker_commands  # type: ignore[attr-defined]
    secrets = {"--" + f.name.replace("_", "-"): env_name(f) for f in setting_fields() if f.metadata.get("secret")}
    hints, shown, hide_next = [], [], False
    for flag in unknown:
        name = flag.split("=", 1)[0]
        owners = [command for command, sub in commands.items() if name in sub._option_string_actions]
        if name in secrets:
            hints.append(f"{name}: secrets are never flags, since ps shows flags to everyone on the machine: "
                         f"set {secrets[name]} in the environment")
            shown.append(name + ("=***" if "=" in flag else ""))
            hide_next = "=" not in flag
            continue
        shown.append("***" if hide_next else flag)
        hide_next = False
        if name.startswith("-") and owners:
            hints.append(f"{name} is a flag of {' and '.join(owners)}, not of {args.command}")
    message = f"unrecognized arguments: {' '.join(shown)}"
    if hints:
        message += f" ({'; '.join(hints)})"
    commands[args.command].error(message)  # exits 2 with the command's own usage


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(build_parser(), argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"cloud-worker {args.command}: configuration error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG


if __name__ == "__main__":
    sys.exit(main())
