"""The HTTP face: CloudEvents over HTTP into the same ``RequestHandler.process`` as the queue.

``POST /`` takes a work request as a binary-mode CloudEvent (``ce-*`` headers), a
structured-mode one (``application/cloudevents+json``) or the seed's plain JSON, maps it
onto the transport-neutral ``Message`` and runs it through the consumer's ``RequestHandler``: the
same validation, the same deterministic Job name (the same event ``id`` posted twice runs
one Job), the same reply event. Synchronous by default, answering with the reply in the
request's content mode. With ``Prefer: respond-async`` the Job is followed on a
background thread and ``GET /jobs/<request id>`` reads its state back from the Job
itself (the watch cache), so any replica can answer and a restart loses nothing while
the Job exists. ``/healthz``, ``/readyz`` and ``/metrics`` are the consumer's ``Probes``.

Served by gunicorn (``cloud-worker serve``, see ``handler.service.serve``); ``gunicorn
handler.service.http:app`` and ``gunicorn 'handler.service.http:create_app()'`` also work and read the
settings from the environment when gunicorn loads the app, never at import.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import http as cehttp
from cloudevents.core.bindings import rabbitmq
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from handler.service.backends import JobBackend
from handler.core.config import Settings
from handler.core.errors import Interrupted, Rejected, Transient
from handler.core.events import reply_event
from handler.service.health import Heartbeat, Probes
from handler.core.manifest import request_from_job
from handler.service.metrics import Metrics
from handler.core.outcome import current_state
from handler.core.messages import Message
from handler.core.request import PROGRESS_HEADER, STRUCTURED_CONTENT_TYPE, is_cancel, parse_request
from handler.service.handling import Result, RequestHandler

log = logging.getLogger(__name__)

#: HTTP headers carried into the ``Message`` besides the CloudEvent's own.
PASSED_HEADERS = ("traceparent", "tracestate", PROGRESS_HEADER)
#: Seconds an asynchronous POST waits for its Job to exist before answering 202, so
#: that the Location it returns can be read at once.
ACCEPT_WAIT = 5.0
#: Finished asynchronous results this process remembers (the Job may be gone by the
#: time a client asks: deleted on timeout, or past ttlSecondsAfterFinished).
REMEMBERED = 1024
#: Seconds between the web worker's heartbeat stamps.
TICK = 1.0
#: Retry-After of a 503 (API server trouble) and of a status that is not final yet.
RETRY_AFTER = "1"
FORMAT = JSONFormat()


def is_binary(headers: Mapping[str, str]) -> bool:
    lowered = {k.lower(): v for k, v in headers.items()}
    structured = (lowered.get("content-type") or "").lower().startswith(STRUCTURED_CONTENT_TYPE)
    return not structured and any(k.startswith(cehttp.CE_PREFIX) for k in lowered)


def wants_async(headers: Mapping[str, str]) -> bool:
    """``Prefer: respond-async`` (RFC 7240), among any other preferences."""
    prefer = next((v for k, v in headers.items() if k.lower() == "prefer"), "")
    return any(p.split(";")[0].split("=")[0].strip().lower() == "respond-async" for p in prefer.split(","))


def message_from_http(headers: Mapping[str, str], body: bytes) -> Message:
    """An HTTP request as the transport-neutral ``Message`` the worker parses.

    A binary-mode event is decoded with the CloudEvents HTTP binding (percent-decoded
    ``ce-*`` headers, ``Content-Type`` as ``datacontenttype``) and handed on as the same
    event in AMQP binary form, so ``parse_request`` treats both transports alike. An
    ``Idempotency-Key`` header names a plain-JSON request (else its body does).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type") or None
    passed = {k: lowered[k] for k in PASSED_HEADERS if k in lowered}
    message_id = lowered.get("idempotency-key") or None
    if not is_binary(lowered):
        return Message(body, content_type, passed, message_id=message_id)
    ce = {k: v for k, v in lowered.items() if k.startswith(cehttp.CE_PREFIX) or k == "content-type"}
    try:
        event = cehttp.from_binary(cehttp.HTTPMessage(ce, body), FORMAT)
        amqp = rabbitmq.to_binary(event, FORMAT)
    except (BaseCloudEventException, ValueError, TypeError, KeyError, RecursionError):
        # Not a valid event: pass it on as it came, and parse_request rejects it saying why.
        return Message(body, content_type, {**ce, **passed}, message_id=message_id)
    return Message(amqp.body, amqp.content_type, {**amqp.headers, **passed}, message_id=message_id)


def event_response(event: BaseCloudEvent, status: int, binary: bool) -> Response:
    """The event as the response: binary mode for a binary request, else structured."""
    message = cehttp.to_binary(event, FORMAT) if binary else cehttp.to_structured(event, FORMAT)
    return Response(message.body, status=status, headers=message.headers)


def _event_json(event: BaseCloudEvent) -> Any:
    return json.loads(FORMAT.write(event))


def _json(doc: Mapping[str, Any], status: int, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(doc), status=status, mimetype="application/json", headers=dict(headers or {}))


class HttpFace:
    """What the routes call: run a request now or in the background, describe a request."""

    def __init__(self, settings: Settings, worker: RequestHandler, owns_backend: bool = False) -> None:
        self.settings = settings
        self.worker = worker
        self.metrics = worker.metrics
        self.backend: JobBackend = worker.backend
        self.owns_backend = owns_backend
        self.heartbeat = Heartbeat()
        self.probes = Probes(self.heartbeat, settings.heartbeat_stale_seconds, {settings.backend: self.backend.ready},
                             {"/metrics": self.metrics.render})
        # Only Kubernetes Jobs outlive this process and can be read back by any replica.
        self._lookup = self.backend.lookup if settings.backend == "kubernetes" else None
        self._lock = threading.Lock()
        self._stops: set[threading.Event] = set()
        self._running: dict[str, threading.Thread] = {}
        self._finished: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._closed = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="heartbeat", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        # The web worker's sign of life: a process wedged hard enough to starve this
        # thread (a deadlock holding the GIL, a runaway loop) goes stale and is restarted.
        while not self._closed.wait(TICK):
            self.heartbeat.beat()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            stops = list(self._stops)
        for stop in stops:
            stop.set()
        self.backend.wake()
        if self.owns_backend:
            self.backend.close()

    # --- synchronous
    def run(self, message: Message) -> Result:
        """Run the request to its end on this thread (raises ``Interrupted`` on close)."""
        stop = threading.Event()
        with self._lock:
            self._stops.add(stop)
        try:
            return self.worker.process(message, stop)
        finally:
            with self._lock:
                self._stops.discard(stop)

    # --- asynchronous
    def submit(self, message: Message) -> Result | str:
        """Start the request in the background: its request id, or the ``rejected`` result."""
        try:
            request_id = parse_request(message, self.settings).request_id
        except Rejected as error:
            return self.worker.reject(message, error)
        with self._lock:
            known = request_id in self._running or request_id in self._finished
            if not known:
                thread = threading.Thread(target=self._follow, args=(request_id, message), daemon=True,
                                          name=f"async-{request_id[:24]}")
                self._running[request_id] = thread
                thread.start()
            thread = self._running.get(request_id)
        deadline = time.monotonic() + ACCEPT_WAIT
        while thread is not None and thread.is_alive() and self._lookup is not None \
                and self._lookup(request_id) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return request_id

    def _follow(self, request_id: str, message: Message) -> None:
        try:
            result = self.run(message)
            self._remember(request_id, self._result_doc(result))
        except Interrupted:
            log.info("request %s: stopped following its job; it runs on and GET reads it from the Job", request_id)
        except Exception:
            log.exception("request %s: following its job failed; GET reads it from the Job", request_id)
        finally:
            with self._lock:
                self._running.pop(request_id, None)

    def _remember(self, request_id: str, doc: dict[str, Any]) -> None:
        with self._lock:
            self._finished[request_id] = doc
            while len(self._finished) > REMEMBERED:
                self._finished.popitem(last=False)

    @staticmethod
    def _result_doc(result: Result) -> dict[str, Any]:
        assert result.reply is not None
        reply = _event_json(result.reply)
        return {"requestId": reply["data"]["requestId"], "jobName": reply["data"].get("jobName"),
                "status": result.status, "reply": reply}

    # --- state
    def state(self, request_id: str) -> tuple[int, dict[str, Any]]:
        """What is known of a request: from this process's memory, else from its Job."""
        with self._lock:
            done = self._finished.get(request_id)
            following = request_id in self._running
        if done is not None:
            return 200, done
        snap = self._lookup(request_id) if self._lookup is not None else None
        if snap is None or snap.job is None:
            if following:
                return 200, {"requestId": request_id, "status": "accepted"}
            return 404, {"requestId": request_id, "status": "unknown",
                         "message": "no Job for this request id: never posted, or finished and since deleted"}
        now = datetime.now(UTC)
        status, outcome = current_state(snap.job, snap.pods, now, self.settings.image_pull_grace_seconds)
        work = request_from_job(snap.job)
        doc: dict[str, Any] = {"requestId": work.request_id, "jobName": work.job_name, "status": status}
        if outcome is None:
            return 200, doc
        if following:  # this process is about to reply with the log tail: report it then
            return 200, dict(doc, status="running")
        outcome = outcome.with_log(self.backend.log_tail(outcome))
        event = reply_event(work, outcome, source=self.settings.event_source, namespace=self.backend.namespace,
                            now=outcome.completion_time or now)
        doc["reply"] = _event_json(event)
        self._remember(request_id, doc)
        return 200, doc


def create_app(settings: Settings | None = None, backend: JobBackend | None = None,
               metrics: Metrics | None = None) -> Flask:
    """The Flask app. Without settings they come from the environment (the gunicorn
    factory form); without a backend, the one ``CLOUD_WORKER_BACKEND`` names is started
    (and closed with the app)."""
    if settings is None:
        from handler.service import logs

        settings = Settings.from_env(os.environ)
        logs.configure(settings.log_level, settings.log_format)
    metrics = metrics or Metrics()
    owns_backend = backend is None
    if backend is None:
        backend = _open_backend(settings)
        backend.start()
    if settings.backend == "kubernetes":
        metrics.watch(backend.tracker)
    face = HttpFace(settings, RequestHandler(settings, backend, metrics=metrics), owns_backend=owns_backend)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["cloud_worker"] = face

    def reply(result: Result, binary: bool, status: int | None = None) -> Response:
        assert result.reply is not None
        response = event_response(result.reply, status or (400 if result.status == "rejected" else 200), binary)
        face.metrics.replied(result.outcome)
        return response

    @app.post("/")
    def post() -> Response:
        binary = is_binary(request.headers)
        message = message_from_http(request.headers, request.get_data(cache=False))
        try:
            # A cancel is answered at once whatever the Prefer header says: it follows no Job.
            if wants_async(request.headers) and not is_cancel(message):
                submitted = face.submit(message)
                if isinstance(submitted, Result):
                    return reply(submitted, binary)
                code, doc = face.state(submitted)
                if code == 404:  # the background run ended before its Job existed (API server trouble)
                    return _json({"requestId": submitted, "status": "unavailable", "message": "the Job could not "
                                  "be created; post again"}, 503, {"Retry-After": RETRY_AFTER})
                location = f"/jobs/{quote(submitted, safe='')}"
                return _json(doc, 202, {"Location": location, "Preference-Applied": "respond-async"})
            return reply(face.run(message), binary)
        except Interrupted:
            return _json({"status": "interrupted", "message": "the handler is shutting down; post again to adopt "
                          "the Job"}, 503, {"Retry-After": RETRY_AFTER})
        except Transient as exc:
            log.warning("transient failure answering a request: %s", exc)
            return _json({"status": "unavailable", "message": str(exc)}, 503, {"Retry-After": RETRY_AFTER})

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge) -> Response:
        message = message_from_http(request.headers, b"")
        size = f"{request.content_length} bytes" if request.content_length is not None else "the body"
        error = Rejected("body", "BodyTooLarge", f"{size} is over the limit of {settings.max_body_bytes}")
        return reply(face.worker.reject(message, error), is_binary(request.headers), 413)

    @app.get("/jobs/<path:request_id>")
    def job(request_id: str) -> Response:
        code, doc = face.state(request_id)
        final = "reply" in doc
        return _json(doc, code, None if final or code != 200 else {"Retry-After": RETRY_AFTER})

    def probe(path: str) -> Response:
        code, content_type, body = face.probes.status(path)
        return Response(body, status=code, content_type=content_type)

    for path in ("/healthz", "/readyz", "/metrics"):
        app.add_url_rule(path, path.strip("/"), lambda path=path: probe(path))
    return app


def _open_backend(settings: Settings) -> JobBackend:
    if settings.backend == "local":  # no kubernetes import in local mode
        from handler.service.backends.local import open_local_backend

        return open_local_backend(settings, os.environ)
    from handler.service.backends.kubernetes import KubernetesBackend

    return KubernetesBackend(settings)


_app: Flask | None = None


def __getattr__(name: str) -> Any:
    """``handler.service.http:app`` for plain gunicorn: built on first access (in the gunicorn
    worker, after the fork), never at import."""
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        _app = create_app()
    return _app
