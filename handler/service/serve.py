"""``cloud-worker serve``: the HTTP face under gunicorn, configured from ``Settings``.

The configuration, and why:

- one worker process, ``gthread`` with ``CLOUD_WORKER_HTTP_THREADS`` threads: the work
  is waiting on Jobs, not computing, and one process keeps one shared watch (two API
  server streams) and one metrics registry; scale with replicas, not processes.
- ``timeout`` above the longest synchronous call (the maximum job timeout plus the
  deadline slack and the image-pull grace). gthread workers heartbeat the arbiter from
  their main loop, so a long request never trips it; a sync worker class would need it.
- ``graceful_timeout`` = ``CLOUD_WORKER_SHUTDOWN_GRACE_SECONDS``: on SIGTERM in-flight
  synchronous calls get the same grace as the consumer's; a call cut short leaves its Job
  running, and the client's retry with the same event id adopts it.
- request line and header limits far below gunicorn's defaults' worst case: a request is
  one short path and a few dozen ``ce-*`` headers; the body limit is Flask's
  ``MAX_CONTENT_LENGTH`` (``CLOUD_WORKER_MAX_BODY_BYTES``), answered 413 ``rejected``.
- no preloading: the watch threads must start in the worker, after the fork.
- a bearer token on every route but the probes (``handler.service.auth``): ``serve``
  refuses to start without one unless ``CLOUD_WORKER_HTTP_AUTH=none`` says so.
- the probes also on a listener of their own (``CLOUD_WORKER_HTTP_PROBE_PORT``, a stdlib
  server thread in the worker), so a liveness probe never waits behind request threads;
  on the main port, synchronous calls are bounded to ``threads - 1`` (503 past it).
- an access log line per request on the main port (the probes' own listener logs none),
  and gunicorn's own lines, through the root logger: JSON in a pod like every other line.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from handler.core.config import Settings
from handler.core.errors import ConfigError
from handler.service.auth import BearerTokens

log = logging.getLogger(__name__)

#: Longest request line: ``GET /jobs/<request id>`` with a long, percent-encoded id.
LIMIT_REQUEST_LINE = 4096
#: Header fields per request: the CloudEvents attributes and extensions, tracing, proxies.
LIMIT_REQUEST_FIELDS = 64
LIMIT_REQUEST_FIELD_SIZE = 8190
#: Client address, request line, status, response bytes, duration in milliseconds.
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'



class RootLogger(glogging.Logger):
    """gunicorn's logger, writing through the root logger (``handler.service.logs`` formats it)."""

    def setup(self, cfg: Any) -> None:
        for logger in (self.error_log, self.access_log):
            logger.handlers.clear()
            logger.propagate = True
        self.error_log.setLevel(self.LOG_LEVELS.get(cfg.loglevel.lower(), logging.INFO))
        self.access_log.setLevel(logging.INFO)


def options(settings: Settings) -> dict[str, Any]:
    """gunicorn's settings for these handler settings (pure, so the tests can read them)."""
    if not settings.http_port:
        raise ConfigError("cloud-worker serve needs CLOUD_WORKER_HTTP_PORT (it is 0)")
    if settings.http_probe_port == settings.http_port:
        raise ConfigError("CLOUD_WORKER_HTTP_PROBE_PORT must differ from CLOUD_WORKER_HTTP_PORT (or be 0)")
    BearerTokens.from_settings(settings)  # refuse to start without a token, before gunicorn boots
    longest_call = settings.max_timeout_minutes * 60 + settings.deadline_slack_seconds \
        + settings.image_pull_grace_seconds
    return {
        "bind": [f"{bind_host(settings.http_host)}:{settings.http_port}"],
        "workers": 1,
        "worker_class": "gthread",
        "threads": settings.http_threads,
        "timeout": math.ceil(longest_call) + 60,
        "graceful_timeout": math.ceil(settings.shutdown_grace_seconds),
        "keepalive": 5,
        "limit_request_line": LIMIT_REQUEST_LINE,
        "limit_request_fields": LIMIT_REQUEST_FIELDS,
        "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
        "preload_app": False,
        "accesslog": "-",  # enables gunicorn's access log; RootLogger routes it through the root logger
        "access_log_format": ACCESS_LOG_FORMAT,
        "loglevel": settings.log_level.lower(),
        "logger_class": RootLogger,
        "proc_name": "cloud-worker-serve",
        "worker_exit": _worker_exit,
    }


def bind_host(host: str) -> str:
    """``host`` as gunicorn's bind takes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _worker_exit(_server: Any, worker: Any) -> None:
    """Stop following Jobs (they run on) and close the watch when a worker exits."""
    app = getattr(worker, "wsgi", None)
    extensions = app.extensions if app is not None else {}
    if extensions.get("cloud_worker_probes") is not None:
        extensions["cloud_worker_probes"].stop()
    if extensions.get("cloud_worker") is not None:
        extensions["cloud_worker"].close()


class Server(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.options = options(settings)
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from handler.service.health import HealthServer
        from handler.service.http import create_app

        app = create_app(self.settings)
        if self.settings.http_probe_port:
            probes = HealthServer.serving(app.extensions["cloud_worker"].probes, self.settings.http_probe_port,
                                          self.settings.http_host)
            app.extensions["cloud_worker_probes"] = probes.start()
        return app


def run(settings: Settings) -> int:
    """Serve until stopped (gunicorn exits the process with its own status)."""
    server = Server(settings)
    log.info("serving HTTP on %s:%d with %d threads (probes also on port %s, authentication: %s)",
             settings.http_host, settings.http_port, settings.http_threads, settings.http_probe_port or "-",
             settings.http_auth)
    if settings.http_auth == "none":
        log.warning("CLOUD_WORKER_HTTP_AUTH=none: anyone who reaches %s:%d can run jobs, read every request's reply "
                    "and cancel it; keep it behind a gateway that authenticates, or bind it to 127.0.0.1 with "
                    "CLOUD_WORKER_HTTP_HOST", settings.http_host, settings.http_port)
    server.run()
    return 0
