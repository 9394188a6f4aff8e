"""The ``cloud-worker`` command. Each subcommand is a thin edge: it loads settings once,
builds the pieces, and maps failures to distinct exit codes.

Exit codes: 0 done; 2 usage; 3 configuration error; 4 broker unreachable at start-up;
5 Kubernetes API unreachable at start-up; 130 forced by a second signal. ``submit`` adds
1 failed, 6 timed out, 7 rejected, 8 no reply, 9 S3 failed (see ``handler.tools.submit``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence

from handler.core.config import Settings, env_name, setting_fields
from handler.core.errors import ConfigError, Transient
from handler.core.exitcodes import ExitCode

log = logging.getLogger("handler.cli")



def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting (``--queue`` for CLOUD_WORKER_QUEUE); a flag beats the variable."""
    group = parser.add_argument_group("settings (each also an environment variable)")
    for f in setting_fields():
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} [{env_name(f)}]"
        if f.type in ("bool", bool):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=f.metadata["parse"], default=None, metavar=f.name.upper(),
                               help=help_text)


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(Settings)}
    return Settings.from_env(os.environ, overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloud-worker", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    consume = sub.add_parser("consume", help="consume work requests from RabbitMQ and run them as Kubernetes Jobs")
    _add_setting_flags(consume)
    consume.set_defaults(func=cmd_consume)
    serve = sub.add_parser("serve", help="serve work requests as CloudEvents over HTTP (gunicorn), running them as Jobs")
    _add_setting_flags(serve)
    serve.set_defaults(func=cmd_serve)
    from handler.tools import jobkit

    jobkit.add_parser(sub).set_defaults(func=cmd_job)
    from handler.tools import demo, submit

    submit.add_parser(sub).set_defaults(func=cmd_submit)
    demo.add_parser(sub).set_defaults(func=cmd_demo)
    return parser


def cmd_consume(args: argparse.Namespace) -> int:
    from handler.service import logs

    settings = _settings(args)
    logs.configure(settings.log_level, settings.log_format)
    from handler.adapters.broker import Broker
    from handler.service.consumer import Consumer
    from handler.service.health import Heartbeat, HealthServer
    from handler.service.metrics import Metrics
    from handler.service.handling import RequestHandler

    log.info("settings: %s", settings.redacted())
    if settings.backend == "local":  # no kubernetes import in local mode
        from handler.service.backends.local import open_local_backend

        backend = open_local_backend(settings, os.environ)
    else:
        from handler.service.backends.kubernetes import KubernetesBackend

        backend = KubernetesBackend(settings)
    try:
        backend.start()
    except Transient as exc:
        log.error("Kubernetes API unreachable: %s", exc)
        return ExitCode.KUBE_UNREACHABLE
    metrics = Metrics()
    if settings.backend == "kubernetes":
        metrics.watch(backend.tracker)
    broker = Broker(settings)
    heartbeat = Heartbeat()
    health = None
    if settings.http_port:
        health = HealthServer(
            settings.http_port, heartbeat, settings.heartbeat_stale_seconds,
            checks={"broker": lambda: broker.is_open, settings.backend: backend.ready},
            extra={"/metrics": metrics.render},
        ).start()
    consumer = Consumer(settings, RequestHandler(settings, backend, metrics=metrics), broker, heartbeat)
    consumer.install_signal_handlers()
    try:
        return consumer.run()
    finally:
        backend.close()
        if health is not None:
            health.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    """The HTTP face under gunicorn (see ``handler.service.serve`` for its configuration)."""
    from handler.service import logs, serve

    settings = _settings(args)
    logs.configure(settings.log_level, settings.log_format)
    log.info("settings: %s", settings.redacted())
    if settings.backend == "kubernetes":
        from handler.adapters.kube import Kube

        kube = Kube(settings)
        reachable = kube.reachable()
        kube.close()
        if not reachable:
            log.error("Kubernetes API unreachable")
            return ExitCode.KUBE_UNREACHABLE
    return serve.run(settings)


def cmd_job(args: argparse.Namespace) -> int:
    """Inside a Job: download inputs, run the command, upload outputs (and error files)."""
    from handler.tools import jobkit
    from handler.service import logs

    logs.configure("INFO", "auto")
    return jobkit.run_from_args(args, os.environ)


def cmd_submit(args: argparse.Namespace) -> int:
    """Upload inputs, submit a request, wait for the reply, download outputs."""
    from handler.service import logs
    from handler.tools import submit

    logs.configure("WARNING", "text")
    return submit.run_from_args(args, os.environ)


def cmd_demo(args: argparse.Namespace) -> int:
    """The whole loop on this machine: embedded S3, a local-mode handler, the client."""
    from handler.tools import demo

    return demo.run_from_args(args, os.environ)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"cloud-worker: configuration error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG


if __name__ == "__main__":
    sys.exit(main())
