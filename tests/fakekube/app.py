"""The WSGI application: the API server's paths, verbs and error bodies.

Routing, request parsing, reads (GET, LIST with ``limit``/``continue`` — see
:mod:`tests.fakekube.paging` —, WATCH) and fault injection live here; the write
verbs are :mod:`tests.fakekube.writes`, and what the requests then cause is the
store's business (and the controllers', through the store's events). Every
error leaves as a JSON ``Status`` with the real server's code and reason,
because the handler under test branches on them.

Served: batch/v1 ``jobs`` (create, get, list, watch, patch, update, delete),
core/v1 ``pods`` (get, list, watch, patch, update, delete, ``log``,
``eviction``) and core/v1 ``events`` (get, list, watch), each namespaced and
across all namespaces, plus ``/status`` reads.
"""

import json
import logging
import threading
import uuid
from collections import Counter

from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import discovery, paging, watch, writes
from .admission import admit_job
from .faults import Faults
from .logs import check_container, render
from .objects import JOBS, PODS, RESOURCES
from .selector import combined
from .status import (
    ApiError,
    bad_request,
    internal_error,
    method_not_allowed,
    not_found,
    path_not_found,
    too_many_requests,
)
from .store import Expired, Store, storage_key

logger = logging.getLogger(__name__)

DEFAULT_WATCH_TIMEOUT = 1800


def _resource_rules(prefix: str, plural: str) -> list[Rule]:
    defaults = {"plural": plural}
    return [
        Rule(f"{prefix}/{plural}", endpoint="all_namespaces", defaults=defaults),
        Rule(f"{prefix}/namespaces/<namespace>/{plural}", endpoint="collection", defaults=defaults),
        Rule(f"{prefix}/namespaces/<namespace>/{plural}/<name>", endpoint="item", defaults=defaults),
        Rule(f"{prefix}/namespaces/<namespace>/{plural}/<name>/status", endpoint="status", defaults=defaults),
    ]


URLS = Map([
    *(Rule(path, endpoint="healthz") for path in ("/healthz", "/livez", "/readyz")),
    *(Rule(path, endpoint="discovery") for path in discovery.DOCUMENTS),
    *_resource_rules("/apis/batch/v1", "jobs"),
    *_resource_rules("/api/v1", "pods"),
    *_resource_rules("/api/v1", "events"),
    Rule("/api/v1/namespaces/<namespace>/pods/<name>/log", endpoint="log"),
    Rule("/api/v1/namespaces/<namespace>/pods/<name>/eviction", endpoint="eviction"),
], strict_slashes=False, redirect_defaults=False)


def _json(body: object, code: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), code, headers=headers, mimetype="application/json")


def _int_arg(request: Request, name: str) -> int | None:
    value = request.args.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"invalid {name} {value!r}: must be an integer") from None


def _flag(request: Request, name: str) -> bool:
    return request.args.get(name, "").lower() in ("true", "1")


def _body(request: Request) -> object:
    data = request.get_data()
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from exc


def _headers_first(lines):
    """Send the status line and headers before the first event, as the real API server
    does: a client then holds the response (and can close it) while the watch is quiet."""
    yield b""  # werkzeug writes the headers on the first chunk, even an empty one
    yield from lines


def _refused(code: int, namespace: str) -> ApiError:
    """A permanent refusal of a Job create, worded as the real API server words it."""
    if code == 403:
        return ApiError(403, "Forbidden", f'jobs.batch is forbidden: User "system:serviceaccount:{namespace}:'
                                          f'cloud-worker" cannot create resource "jobs" in API group "batch" in '
                                          f'the namespace "{namespace}" (fault)')
    return ApiError(code, "Invalid", 'Job.batch "job" is invalid: spec.template.spec.containers[0].image: '
                                     'Required value (fault)')


class RequestLog:
    """Counts served requests by (method, kind, is-watch); thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str | None, bool]] = Counter()

    def record(self, method: str, kind: str | None, is_watch: bool) -> None:
        with self._lock:
            self._counts[(method, kind, is_watch)] += 1

    def count(self, method: str | None = None, kind: str | None = None) -> int:
        """``method="WATCH"`` counts only watch streams; ``"GET"`` counts them too."""
        with self._lock:
            return sum(n for (m, k, w), n in self._counts.items()
                       if (method is None or m == method or (method == "WATCH" and w))
                       and (kind is None or k == kind))

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


class Api:
    """WSGI callable serving the store; see the module docstring."""

    def __init__(self, store: Store, faults: Faults, requests: RequestLog, stopping: threading.Event,
                 bookmark_interval: float = 60.0):
        self._store, self._faults, self._requests = store, faults, requests
        self._stopping, self._bookmark_interval = stopping, bookmark_interval

    def __call__(self, environ, start_response):
        return self._respond(Request(environ))(environ, start_response)

    def _respond(self, request: Request) -> Response:
        try:
            endpoint, values = URLS.bind_to_environ(request.environ).match()
        except NotFound:
            endpoint, values = None, {}
        is_watch = endpoint in ("collection", "all_namespaces") and _flag(request, "watch")
        kind = endpoint if endpoint in ("log", "eviction") else values.get("plural")
        self._requests.record(request.method, kind, is_watch)
        if self._faults.latency > 0:
            self._stopping.wait(self._faults.latency)
        try:
            if endpoint is None:
                raise path_not_found()
            if kind is not None and not is_watch:
                self._inject(self._faults.roll())
            return getattr(self, f"_{endpoint}")(request, **values)
        except ApiError as exc:
            return _json(exc.body, exc.code, exc.headers)
        except Exception as exc:  # a bug in the fake: answer like a server would, and say so
            logger.exception("fake API server failed on %s %s", request.method, request.full_path)
            error = internal_error(f"fakekube bug: {exc!r}")
            return _json(error.body, error.code)

    @staticmethod
    def _inject(fault: str | None) -> None:
        if fault == "error":
            raise internal_error("injected fault")
        if fault == "throttle":
            raise too_many_requests(1)

    def _healthz(self, request: Request) -> Response:
        return Response("ok", mimetype="text/plain")

    def _discovery(self, request: Request) -> Response:
        return _json(discovery.DOCUMENTS[request.path.rstrip("/") or "/"])

    def _all_namespaces(self, request: Request, plural: str) -> Response:
        if request.method != "GET":
            raise method_not_allowed(request.method)
        return self._list_or_watch(request, plural, None)

    def _collection(self, request: Request, plural: str, namespace: str) -> Response:
        if request.method == "GET":
            return self._list_or_watch(request, plural, namespace)
        if request.method == "POST" and plural == "jobs":
            if self._faults.reject_create_status is not None:
                raise _refused(self._faults.reject_create_status, namespace)
            job = admit_job(_body(request), namespace, str(uuid.uuid4()))
            return _json(self._store.create(JOBS, job), 201)
        raise method_not_allowed(request.method)

    def _list_or_watch(self, request: Request, plural: str, namespace: str | None) -> Response:
        resource = RESOURCES[plural]
        labels, fields = request.args.get("labelSelector"), request.args.get("fieldSelector")
        try:
            predicate = combined(labels, fields)
        except ValueError as exc:
            raise bad_request(str(exc)) from exc
        if _flag(request, "watch"):
            return self._watch(request, resource, namespace, predicate)
        limit, token = _int_arg(request, "limit"), request.args.get("continue") or None
        start, version = None, None
        if token is not None:
            version, start = paging.decode(token)
        if version is None or version < 0:
            items, version = self._store.list(resource, namespace, predicate, copies=False)
            pairs = [(storage_key((o["metadata"]["namespace"], o["metadata"]["name"])), o) for o in items]
        else:
            try:
                snapshot = self._store.snapshot(resource, version, copies=False)
            except Expired:
                raise paging.expired(start) from None
            pairs = sorted((storage_key(key), obj) for key, obj in snapshot.items()
                           if namespace in (None, key[0]) and predicate(obj))
        items, extra = paging.page(pairs, limit, start, count_remaining=not labels and not fields)
        meta = {"resourceVersion": str(version)}
        if "continue" in extra:
            meta["continue"] = paging.encode(version, extra["continue"])
        if "remainingItemCount" in extra:
            meta["remainingItemCount"] = extra["remainingItemCount"]
        return _json({"kind": resource.list_kind, "apiVersion": resource.api_version, "metadata": meta,
                      "items": items})

    def _watch(self, request: Request, resource, namespace: str | None, predicate) -> Response:
        version = request.args.get("resourceVersion", "")
        sock = request.environ.get("werkzeug.socket")
        if version not in ("", "0") and self._faults.gone_on_resume:
            return Response([watch.gone_line(f"too old resource version: {version} (fault)")],
                            mimetype="application/json")
        if version not in ("", "0") and not version.isdigit():
            raise bad_request(f"invalid resourceVersion {version!r}")
        since = int(version) if version not in ("", "0") else None
        timeout = _int_arg(request, "timeoutSeconds")
        timeout = DEFAULT_WATCH_TIMEOUT if timeout is None else timeout
        spec = watch.WatchRequest(resource, namespace, predicate, since, float(timeout),
                                  _flag(request, "allowWatchBookmarks"), self._bookmark_interval)
        lines = watch.cut_after(watch.events(self._store, spec, sock), self._faults.cut_watch_after, sock)
        if self._faults.silent_watch_after is not None:
            lines = watch.fall_silent(lines, self._faults.silent_watch_after, sock,
                                      lambda: self._stopping.is_set() or self._store.closed)
        return Response(_headers_first(lines), mimetype="application/json")

    def _item(self, request: Request, plural: str, namespace: str, name: str) -> Response:
        resource = RESOURCES[plural]
        if request.method == "GET":
            return self._read(resource, namespace, name)
        if resource is not JOBS and resource is not PODS:
            raise method_not_allowed(request.method)
        if request.method == "DELETE":
            reply = writes.delete(self._store, resource, namespace, name, _body(request) or {}, request.args)
        elif request.method == "PATCH":
            content_type = (request.content_type or "").split(";")[0].strip()
            reply = writes.patch_object(self._store, resource, namespace, name, content_type, _body(request))
        elif request.method == "PUT":
            reply = writes.replace_object(self._store, resource, namespace, name, _body(request))
        else:
            raise method_not_allowed(request.method)
        return _json(*reply)

    def _status(self, request: Request, plural: str, namespace: str, name: str) -> Response:
        if request.method != "GET":
            raise method_not_allowed(request.method)
        return self._read(RESOURCES[plural], namespace, name)

    def _read(self, resource, namespace: str, name: str) -> Response:
        obj = self._store.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource, name)
        return _json(obj)

    def _eviction(self, request: Request, namespace: str, name: str) -> Response:
        if request.method != "POST":
            raise method_not_allowed(request.method)
        return _json(*writes.evict(self._store, namespace, name, _body(request)))

    def _log(self, request: Request, namespace: str, name: str) -> Response:
        if request.method != "GET":
            raise method_not_allowed(request.method)
        pod = self._store.get(PODS, namespace, name)
        if pod is None:
            raise not_found(PODS, name)
        container = check_container(pod, request.args.get("container"))
        data = render(self._store.read_log(namespace, name, container), _int_arg(request, "tailLines"),
                      _int_arg(request, "limitBytes"), _flag(request, "timestamps"))
        return Response(data, mimetype="text/plain")
