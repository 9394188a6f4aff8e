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

import dataclasses
import json
import logging
import os
import socket
import threading
import time
import uuid
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
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from handler.core.config import Settings
from handler.core.errors import Interrupted, Rejected, Transient
from handler.core.events import reply_event
from handler.core.messages import Message
from handler.core.request import (
    PROGRESS_HEADER,
    REQUIRED_ATTRIBUTES,
    STRUCTURED_CONTENT_TYPE,
    is_cancel,
    parse_request,
)
from handler.service.auth import OPEN_PATHS, BearerTokens, bearer, challenge
from handler.service.backends import JobBackend
from handler.service.handling import Result
from handler.service.health import Heartbeat, Probes
from handler.service.metrics import Metrics
from handler.service.runtime import Runtime

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
#: Media types of a request body: JSON (plain, or a binary-mode event's data) and
#: structured CloudEvents; any other ``+json`` type is JSON too. Batches are not served.
JSON_TYPES = ("application/json", "text/json")
UNSUPPORTED_TYPES = ("application/cloudevents-batch+json",)


class Busy(Exception):
    """Every thread this process may spend on the request is taken: answer 503 at once."""


def is_supported_media_type(content_type: str | None) -> bool:
    """A body of this ``Content-Type`` can be a request (no type at all: read as JSON)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not media:
        return True
    return media not in UNSUPPORTED_TYPES and (media in JSON_TYPES or media.endswith("+json"))


def read_body(stream: Any, limit: int) -> bytes | None:
    """The body, or None when it is longer than ``limit`` bytes: at most ``limit + 1``
    bytes are read whatever ``Content-Length`` says, so a chunked body without a length
    is cut at the limit rather than read to its end."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(64 * 1024, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > limit else b"".join(chunks)


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
    if any(f"{cehttp.CE_PREFIX}{name}" not in lowered for name in REQUIRED_ATTRIBUTES):
        # As it came: decoding would make up the missing id, and parse_request names what is missing.
        return Message(body, content_type, {**ce, **passed}, message_id=message_id)
    try:
        event = cehttp.from_binary(cehttp.HTTPMessage(ce, body), FORMAT)
        amqp = rabbitmq.to_binary(event, FORMAT)
    except (BaseCloudEventException, ValueError, TypeError, KeyError, RecursionError):
        # Not a valid event: pass it on as it came, and parse_request rejects it saying why.
        return Message(body, content_type, {**ce, **passed}, message_id=message_id)
    return Message(amqp.body, amqp.content_type, {**amqp.headers, **passed}, message_id=message_id)


def unread_message(headers: Mapping[str, str]) -> Message:
    """A request whose body is not read (over the limit, or not JSON), for its rejection:
    named by its ``Idempotency-Key`` or event id when it has one, else by an id of its own,
    since nothing tells two such requests apart and a client drops answers it takes for
    duplicates."""
    message = message_from_http(headers, b"")
    lowered = {k.lower() for k in headers}
    if message.message_id is None and f"{cehttp.CE_PREFIX}id" not in lowered:
        message = dataclasses.replace(message, message_id=uuid.uuid4().hex)
    return message


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

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.worker = runtime.handler
        self.metrics = runtime.metrics
        self.backend: JobBackend = runtime.backend
        self.heartbeat = Heartbeat()
        self.probes = Probes(self.heartbeat, self.settings.heartbeat_stale_seconds, runtime.checks,
                             {"/metrics": self.metrics.render})
        self._lock = threading.Lock()
        self._stops: set[threading.Event] = set()
        # Synchronous calls hold a request thread for a Job's whole run: one thread is
        # always left for polls, cancels and probes, and the call past the bound is
        # answered 503 at once rather than queued behind the others.
        self._sync_slots = threading.BoundedSemaphore(max(1, self.settings.http_threads - 1))
        # A profile's maxInFlight holds here too: its Jobs past that are answered 503 (post
        # again later), while other profiles' requests go on.
        self._profile_slots = {p.name: threading.BoundedSemaphore(p.max_in_flight)
                               for p in self.worker.profiles.limited if p.max_in_flight is not None}
        # Asynchronous requests being followed, by identity (a CloudEvent's source and id:
        # two producers reusing an id are two requests), each with its request id.
        self._running: dict[str, tuple[str, threading.Thread]] = {}
        self._followed: OrderedDict[str, None] = OrderedDict()
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
        self.runtime.close()

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

    def run_now(self, message: Message) -> Result:
        """``run`` on a request thread: ``Busy`` when every thread but the reserved one waits,
        or when its profile's ``maxInFlight`` Jobs are followed here already."""
        if not self._sync_slots.acquire(blocking=False):
            raise Busy(f"{self.settings.http_threads - 1} synchronous requests are running (CLOUD_WORKER_HTTP_THREADS "
                       f"is {self.settings.http_threads}); post again later or with Prefer: respond-async")
        try:
            slot = self._profile_slot(message)
            try:
                return self.run(message)
            finally:
                if slot is not None:
                    slot.release()
        finally:
            self._sync_slots.release()

    def _profile_slot(self, message: Message) -> threading.BoundedSemaphore | None:
        """A slot of the request's profile, taken (None: its profile has no maxInFlight);
        ``Busy`` when they are all taken."""
        profile = self.worker.lane_of(message)
        if profile is None or profile not in self._profile_slots:
            return None
        slot = self._profile_slots[profile]
        if not slot.acquire(blocking=False):
            raise Busy(f"profile {profile} runs at most {self.worker.profiles.by_name[profile].max_in_flight} Jobs at "
                       "once in this process (maxInFlight), and does; post again later")
        return slot

    # --- asynchronous
    def submit(self, message: Message) -> Result | str:
        """Start the request in the background: its request id, or the ``rejected`` result.
        ``Busy`` when ``http_async_limit`` requests are followed already."""
        try:
            parsed = parse_request(message, self.settings, self.worker.profiles)
        except Rejected as error:
            return self.worker.reject(message, error)
        request_id, identity = parsed.request_id, parsed.identity
        with self._lock:
            known = identity in self._running or identity in self._followed
            if not known:
                if len(self._running) >= self.settings.http_async_limit:
                    raise Busy(f"{len(self._running)} asynchronous requests are followed already "
                               "(CLOUD_WORKER_HTTP_ASYNC_LIMIT); post again later")
                slot = self._profile_slot(message)
                follower = threading.Thread(target=self._follow, args=(identity, request_id, message, slot),
                                            daemon=True, name=f"async-{request_id[:24]}")
                self._running[identity] = (request_id, follower)
                self._followed[identity] = None
                while len(self._followed) > REMEMBERED:
                    self._followed.popitem(last=False)
                follower.start()
            thread = self._running[identity][1] if identity in self._running else None
        deadline = time.monotonic() + ACCEPT_WAIT
        while thread is not None and thread.is_alive() and self.backend.lookup(request_id) is None \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        return request_id

    def _follow(self, identity: str, request_id: str, message: Message,
                slot: threading.BoundedSemaphore | None = None) -> None:
        try:
            result = self.run(message)
            self._remember(request_id, self._result_doc(result))
            self.worker.replied(result)  # GET /jobs/<id> answers from memory from now on
        except Interrupted:
            log.info("request %s: stopped following its job; it runs on and GET reads it from the Job", request_id)
        except Exception:
            log.exception("request %s: following its job failed; GET reads it from the Job", request_id)
            with self._lock:
                self._followed.pop(identity, None)  # so that posting it again follows it again
        finally:
            if slot is not None:
                slot.release()
            with self._lock:
                self._running.pop(identity, None)

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
            following = any(rid == request_id for rid, _ in self._running.values())
        if done is not None:
            return 200, done
        view = self.backend.lookup(request_id)
        if view is None:
            if following:
                return 200, {"requestId": request_id, "status": "accepted"}
            return 404, {"requestId": request_id, "status": "unknown",
                         "message": "no Job for this request id: never posted, or finished and since deleted"}
        work, outcome = view.request, view.outcome
        doc: dict[str, Any] = {"requestId": work.request_id, "jobName": work.job_name, "status": view.status}
        if outcome is None:
            return 200, doc
        if following:  # this process is about to reply with the log tail: report it then
            return 200, dict(doc, status="running")
        event = reply_event(work, outcome, source=self.settings.event_source, namespace=self.backend.namespace,
                            now=outcome.completion_time or datetime.now(UTC))
        doc["reply"] = _event_json(event)
        self._remember(request_id, doc)
        return 200, doc


def _headers() -> dict[str, str]:
    """The current request's headers as a plain mapping (the last of repeated ones)."""
    return dict(request.headers.items())


def _stop_reading(sock: socket.socket) -> None:
    """End the connection from our side once its response is out: gunicorn reads EOF next."""
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass  # the client went first


def create_app(settings: Settings | None = None, backend: JobBackend | None = None,
               metrics: Metrics | None = None) -> Flask:
    """The Flask app. Without settings they come from the environment (the gunicorn
    factory form); without a backend, the one ``CLOUD_WORKER_BACKEND`` names is started
    (and closed with the app)."""
    if settings is None:
        from handler.service import logs

        settings = Settings.from_env(os.environ)
        logs.configure(settings.log_level, settings.log_format)
    tokens = BearerTokens.from_settings(settings)  # before anything opens: no token, no start
    face = HttpFace(Runtime.open(settings, os.environ, backend=backend, metrics=metrics))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["cloud_worker"] = face

    def reply(result: Result, binary: bool, status: int | None = None) -> Response:
        assert result.reply is not None
        response = event_response(result.reply, status or (400 if result.status == "rejected" else 200), binary)
        face.metrics.replied(result.outcome)
        # Once the response is out, record it on the Job (which releases the Job's finalizer).
        response.call_on_close(lambda: face.worker.replied(result))
        return response


    @app.before_request
    def authenticate() -> Response | None:
        if tokens is None or request.path in OPEN_PATHS or tokens.accepts(_headers()):
            return None
        given = bearer(_headers()) is not None
        return _json({"status": "unauthorized", "message": "this route needs an Authorization: Bearer <token> header"
                      + (" with a token this handler accepts" if given else "")},
                     401, {"WWW-Authenticate": challenge(invalid=given)})

    @app.after_request
    def no_keep_alive_after_an_error(response: Response) -> Response:
        """An error may leave the request's body unread (a 401, 404, 405, 413, 415 answer
        before it): gunicorn's gthread worker would then read the leftover on a request
        thread and wait there, without a timeout, for the client's next request, so a few
        clients holding their connections open would hold every thread. The connection of
        an error is closed once the response is out."""
        sock = request.environ.get("gunicorn.socket")
        if response.status_code >= 400 and sock is not None:
            response.call_on_close(lambda: _stop_reading(sock))
        return response

    @app.post("/")
    def post() -> Response:
        binary = is_binary(_headers())
        if not is_supported_media_type(request.content_type):
            error = Rejected("content-type", "UnsupportedMediaType",
                             f"Content-Type {request.content_type[:100]!r} is not JSON: send application/json, or a "
                             "CloudEvent (application/cloudevents+json, or binary mode with JSON data)")
            return reply(face.worker.reject(unread_message(_headers()), error), binary, 415)
        body = read_body(request.stream, settings.max_body_bytes)
        if body is None:
            raise RequestEntityTooLarge()
        message = message_from_http(_headers(), body)
        try:
            # A cancel is answered at once whatever the Prefer header says: it follows no Job.
            if wants_async(_headers()) and not is_cancel(message):
                submitted = face.submit(message)
                if isinstance(submitted, Result):
                    return reply(submitted, binary)
                code, doc = face.state(submitted)
                if code == 404:  # the background run ended before its Job existed (API server trouble)
                    return _json({"requestId": submitted, "status": "unavailable", "message": "the Job could not "
                                  "be created; post again"}, 503, {"Retry-After": RETRY_AFTER})
                location = f"/jobs/{quote(submitted, safe='')}"
                return _json(doc, 202, {"Location": location, "Preference-Applied": "respond-async"})
            return reply(face.run_now(message), binary)
        except Busy as exc:
            return _json({"status": "busy", "message": str(exc)}, 503, {"Retry-After": RETRY_AFTER})
        except Interrupted:
            return _json({"status": "interrupted", "message": "the handler is shutting down; post again to adopt "
                          "the Job"}, 503, {"Retry-After": RETRY_AFTER})
        except Transient as exc:
            log.warning("transient failure answering a request: %s", exc)
            return _json({"status": "unavailable", "message": str(exc)}, 503, {"Retry-After": RETRY_AFTER})

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_exc: RequestEntityTooLarge) -> Response:
        message = unread_message(_headers())
        size = f"{request.content_length} bytes" if request.content_length is not None else "the body"
        error = Rejected("body", "BodyTooLarge", f"{size} is over the limit of {settings.max_body_bytes}")
        return reply(face.worker.reject(message, error), is_binary(_headers()), 413)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        # Flask's default is an HTML page; every answer of this face is JSON.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return _json({"status": "error", "error": exc.name, "message": exc.description}, exc.code or 500, headers)

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
