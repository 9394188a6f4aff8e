"""Liveness and readiness over HTTP, served beside the consume loop.

Health means the loop is alive: the loop stamps a heartbeat every tick, and
``/healthz`` fails once the stamp is older than the configured staleness (arq's health
key, kopf's probes). ``/readyz`` asks the broker and the Kubernetes cache. The server
is the standard library's: the consumer needs three tiny endpoints, not a framework;
the HTTP mode serves the same ``Probes`` through Flask.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self) -> None:
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def age(self) -> float:
        return time.monotonic() - self._last


Check = Callable[[], bool]


class Probes:
    """``/healthz`` (heartbeat fresh), ``/readyz`` (every check passes), and any extra
    routes (``/metrics``) given as path → callable returning (content type, body).
    The answers, whoever serves them: the stdlib server below beside the consume loop,
    Flask in HTTP mode."""

    def __init__(self, heartbeat: Heartbeat, stale_after: float, checks: dict[str, Check],
                 extra: dict[str, Callable[[], tuple[str, bytes]]] | None = None) -> None:
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.checks = checks
        self.extra = extra or {}

    def status(self, path: str) -> tuple[int, str, bytes]:
        if path == "/healthz":
            age = self.heartbeat.age()
            ok = age < self.stale_after
            return (200 if ok else 503), "application/json", json.dumps({"alive": ok, "heartbeatAge": round(age, 3)}).encode()
        if path == "/readyz":
            results = {name: _safe(check) for name, check in self.checks.items()}
            ok = all(results.values())
            return (200 if ok else 503), "application/json", json.dumps({"ready": ok, **results}).encode()
        if path in self.extra:
            content_type, body = self.extra[path]()
            return 200, content_type, body
        return 404, "text/plain", b"not found\n"


class HealthServer:
    """The probes on their own small HTTP server: the consumer has no web framework, and
    ``cloud-worker serve`` answers its probes here too, on a listener of their own, so a
    liveness probe is answered within a second however many request threads are busy."""

    def __init__(self, port: int, heartbeat: Heartbeat, stale_after: float, checks: dict[str, Check],
                 extra: dict[str, Callable[[], tuple[str, bytes]]] | None = None, host: str = "0.0.0.0") -> None:
        self._bind(Probes(heartbeat, stale_after, checks, extra), port, host)

    @classmethod
    def serving(cls, probes: Probes, port: int, host: str = "0.0.0.0") -> HealthServer:
        """A server for probes someone else already answers (the HTTP face's)."""
        server = cls.__new__(cls)
        server._bind(probes, port, host)
        return server

    def _bind(self, probes: Probes, port: int, host: str) -> None:
        self.probes = probes
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        # serve_forever looks at shutdown() between polls: 0.1 s, not its default 0.5 s, so
        # stopping (every process exit) does not wait half a second.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="health", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("health endpoints on port %d", self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def status(self, path: str) -> tuple[int, str, bytes]:
        return self.probes.status(path)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # seconds a probe connection may take to send its request line

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                code, content_type, body = owner.status(self.path.split("?", 1)[0])
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: keep quiet
                log.debug("health: " + format, *args)

        return Handler


def _safe(check: Check) -> bool:
    try:
        return bool(check())
    except Exception:  # noqa: BLE001 - a failing check means "not ready"
        log.debug("readiness check failed", exc_info=True)
        return False
