"""The WSGI application: the API server's paths, verbs and error bodies.

Routing, request parsing and fault injection live here; what the requests do
is the store's business (and the controllers', through the store's events).
Every error leaves as a JSON ``Status`` with the real server's code and
reason, because the handler under test branches on them.
"""

import json
import logging
import threading
import uuid
from collections import Counter

from werkzeug.exceptions import NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from . import discovery, patch, watch
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
    success_body,
    too_many_requests,
    unsupported_media_type,
)
from .store import Store

logger = logging.getLogger(__name__)

DEFAULT_WATCH_TIMEOUT = 1800
ORPHAN_WARNING = ('299 - "child pods are preserved by default when jobs are deleted; set '
                  'propagationPolicy=Background to remove them or set propagationPolicy=Orphan to '
                  'suppress this warning"')


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
    Rule("/api/v1/namespaces/<namespace>/pods/<name>/log", endpoint="log"),
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
                 bookmark_interval: float = 1.0):
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
        kind = "log" if endpoint == "log" else values.get("plural")
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
        try:
            predicate = combined(request.args.get("labelSelector"), request.args.get("fieldSelector"))
        except ValueError as exc:
            raise bad_request(str(exc)) from exc
        if _flag(request, "watch"):
            return self._watch(request, resource, namespace, predicate)
        items, version = self._store.list(resource, namespace, predicate)
        return _json({"kind": resource.list_kind, "apiVersion": resource.api_version,
                      "metadata": {"resourceVersion": str(version)}, "items": items})

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
        return Response(_headers_first(lines), mimetype="application/json")

    def _item(self, request: Request, plural: str, namespace: str, name: str) -> Response:
        resource = RESOURCES[plural]
        if request.method == "GET":
            return self._read(resource, namespace, name)
        if request.method == "DELETE":
            return self._delete(request, resource, namespace, name)
        if request.method == "PATCH":
            return _json(self._patch(request, resource, namespace, name))
        raise method_not_allowed(request.method)

    def _status(self, request: Request, plural: str, namespace: str, name: str) -> Response:
        if request.method != "GET":
            raise method_not_allowed(request.method)
        return self._read(RESOURCES[plural], namespace, name)

    def _read(self, resource, namespace: str, name: str) -> Response:
        obj = self._store.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource, name)
        return _json(obj)

    def _delete(self, request: Request, resource, namespace: str, name: str) -> Response:
        options = _body(request) or {}
        policy = request.args.get("propagationPolicy") or options.get("propagationPolicy")
        orphan = options.get("orphanDependents", request.args.get("orphanDependents"))
        if policy is None and orphan is not None:
            policy = "Orphan" if str(orphan).lower() == "true" else "Background"
        # batch/v1 Jobs default to orphaning their pods, for backwards compatibility.
        headers = {"Warning": ORPHAN_WARNING} if policy is None and resource is JOBS else {}
        policy = policy or ("Orphan" if resource is JOBS else "Background")
        if policy not in ("Background", "Foreground", "Orphan"):
            raise bad_request(f'propagationPolicy: Unsupported value: "{policy}"')
        uid = ((options.get("preconditions") or {}).get("uid"))
        current = self._store.get(resource, namespace, name)
        if current is None:
            raise not_found(resource, name)
        if uid is not None and uid != current["metadata"]["uid"]:
            raise ApiError(409, "Conflict", f"Precondition failed: UID in precondition: {uid}, "
                           f"UID in object meta: {current['metadata']['uid']}")
        removed = self._store.delete(resource, namespace, name, policy, uid=current["metadata"]["uid"])
        if removed is None:
            raise not_found(resource, name)
        if resource is PODS:
            return _json(removed, headers=headers)
        return _json(success_body(resource, name, removed["metadata"]["uid"]), headers=headers)

    def _patch(self, request: Request, resource, namespace: str, name: str) -> dict:
        content_type = (request.content_type or "").split(";")[0].strip()
        if content_type not in patch.CONTENT_TYPES:
            raise unsupported_media_type(content_type)
        body = _body(request)

        def patched(obj: dict) -> None:
            try:
                result = patch.apply(content_type, obj, body)
            except (patch.PatchError, TypeError, KeyError, IndexError, AttributeError) as exc:
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in "
                                               f"our request: {exc}") from exc
            meta, new_meta = obj["metadata"], result.get("metadata") or {}
            if new_meta.get("resourceVersion", meta["resourceVersion"]) != meta["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource.qualified} '
                               f'"{name}": the object has been modified; please apply your changes '
                               f'to the latest version and try again')
            for key in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion", "generation"):
                if key in meta:
                    new_meta[key] = meta[key]
            result.update(apiVersion=obj["apiVersion"], kind=obj["kind"], metadata=new_meta,
                          status=obj.get("status", {}))
            if "generation" in meta and result.get("spec") != obj.get("spec"):
                new_meta["generation"] = meta["generation"] + 1
            obj.clear()
            obj.update(result)

        updated = self._store.update(resource, namespace, name, patched)
        if updated is None:
            raise not_found(resource, name)
        return updated

    def _log(self, request: Request, namespace: str, name: str) -> Response:
        if request.method != "GET":
            raise method_not_allowed(request.method)
        pod = self._store.get(PODS, namespace, name)
        if pod is None:
            raise not_found(PODS, name)
        check_container(pod, request.args.get("container"))
        data = render(self._store.read_log(namespace, name), _int_arg(request, "tailLines"),
                      _int_arg(request, "limitBytes"), _flag(request, "timestamps"))
        return Response(data, mimetype="text/plain")
