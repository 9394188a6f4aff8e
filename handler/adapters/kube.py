"""The Kubernetes adapter: the only module that imports the ``kubernetes`` client.

It speaks plain JSON dicts (``_preload_content=False``) rather than the client's
models: the handler reads a handful of fields, and skipping model deserialisation
keeps each call cheap. Every ``ApiException`` and urllib3 error is translated here into
the package's errors, split by what the caller does next, with the cause kept.
"""

from __future__ import annotations

import builtins
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from handler.core.config import Settings
from handler.core.errors import ConfigError, JobExists, JobFailedToStart, NotFound, ResourceGone, Transient
from handler.core.manifest import pointer
from handler.core.retry import Backoff, retrying

log = logging.getLogger(__name__)

#: Connect and read timeouts of ordinary (non-watch) calls, in seconds.
CALL_TIMEOUT = (5.0, 30.0)
#: Statuses worth retrying: throttling and server-side trouble.
RETRYABLE = {429, 500, 502, 503, 504}
#: Objects per LIST page: a namespace with thousands of finished Jobs is read in chunks
#: the API server serves cheaply, not in one response it must build whole.
LIST_PAGE = 500
Json = dict[str, Any]
#: Longest time between two refreshes of the bearer token from its source (``_ThrottledRefresh``).
TOKEN_REFRESH_SECONDS = 5.0


def api_client(settings: Settings) -> client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (an ``http://``
    server without auth works, as the fake API server in the tests uses)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        try:
            config.load_kube_config(config_file=settings.kubeconfig or None, client_configuration=configuration)
        except (config.ConfigException, OSError, TypeError) as exc:
            raise ConfigError(f"no usable Kubernetes configuration (in-cluster or kubeconfig): {exc}") from exc
    if configuration.refresh_api_key_hook is not None:
        _ThrottledRefresh(configuration, TOKEN_REFRESH_SECONDS)
    return client.ApiClient(configuration)


class _ThrottledRefresh:
    """The configuration's token refresh, at most once every ``every`` seconds.

    Both config loaders install a hook the client calls before every request to bring the
    bearer token up to date, and both hooks also set ``configuration.host`` again, whose
    setter reads every environment variable for a proxy (``urllib.request.getproxies``):
    0.1-0.3 ms per API call, a quarter of the CPU of the handler's request threads on the
    real control plane. The loaders renew a token long before it is due (kubeconfig
    tokens 5 minutes before their expiry, the in-cluster token file every minute), so
    asking at most every few seconds changes nothing but the cost. Each call of the
    loaders' hook installs a fresh one: this keeps the newest and stays in front of it.
    """

    def __init__(self, configuration: Any, every: float,  # the client types the hook as None
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.hook = configuration.refresh_api_key_hook
        self.every = every
        self.clock = clock
        self.due = float("-inf")
        self.lock = threading.Lock()
        configuration.refresh_api_key_hook = self

    def __call__(self, configuration: Any) -> None:
        if self.clock() < self.due:
            return
        with self.lock:
            if self.clock() < self.due:
                return
            self.hook(configuration)
            if configuration.refresh_api_key_hook is not self:
                self.hook = configuration.refresh_api_key_hook
                configuration.refresh_api_key_hook = self
            self.due = self.clock() + self.every


def translate(exc: BaseException, what: str) -> Exception:
    """An ``ApiException`` or transport error as the package error the caller acts on."""
    if isinstance(exc, ApiException):
        status, body = exc.status or 0, _status_body(exc.body)
        message = body.get("message") or exc.reason or str(exc)
        reason = body.get("reason") or exc.reason or str(status)
        if status == 404:
            return NotFound(f"{what}: {message}")
        if status == 409:
            return JobExists(f"{what}: {message}")
        if status == 410:
            return ResourceGone(f"{what}: {message}")
        if status in RETRYABLE or status == 0:
            return Transient(f"{what}: {status} {message}", retry_after=_retry_after(exc))
        return JobFailedToStart(reason, f"{what}: {status} {message}")
    return Transient(f"{what}: {type(exc).__name__}: {exc}")


def _status_body(body: Any) -> Json:
    try:
        parsed = json.loads(body) if body else {}
    except (TypeError, ValueError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _retry_after(exc: ApiException) -> float | None:
    value = (exc.headers or {}).get("Retry-After") if exc.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


TRANSPORT_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


class _Endpoints:
    """The few batch/v1 and core/v1 calls the handler makes, under the generated client's
    method names and arguments, through the shared ``ApiClient`` (its configuration,
    auth and token refresh, TLS, and ``ApiException``).

    Why not ``client.BatchV1Api``/``CoreV1Api``: importing them builds some 300 pydantic
    models (0.6 s and 25 MB on the benchmark machine, more than the rest of the handler's
    start-up) and validates every call's arguments, for responses this adapter never
    deserialises. Every call here returns the raw urllib3 response, as
    ``_preload_content=False`` does with the generated classes.
    """

    def __init__(self, api: client.ApiClient, prefix: str) -> None:
        self.api = api
        self.prefix = prefix

    def _request(self, method: str, path: str, path_params: dict[str, str], body: Any = None, *,
                 _content_type: str = "application/json", _request_timeout: Any = None,
                 _preload_content: bool = False, **query: Any) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = _content_type
        params = [(_camel(k), v) for k, v in query.items() if v is not None]
        # The body is plain JSON already: it skips the client's model sanitising (a deep copy
        # of the whole manifest) and goes straight to the REST layer's json.dumps.
        method, url, headers, _, post = self.api.param_serialize(
            method, self.prefix + path, path_params=path_params, query_params=params, header_params=headers,
            auth_settings=["BearerToken"])
        response = self.api.call_api(method, url, headers, body, post, _request_timeout=_request_timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response


class _BatchV1(_Endpoints):
    def create_namespaced_job(self, namespace: str, body: Json, **kw: Any) -> Any:
        return self._request("POST", "/namespaces/{namespace}/jobs", {"namespace": namespace}, body, **kw)

    def read_namespaced_job(self, name: str, namespace: str, **kw: Any) -> Any:
        return self._request("GET", "/namespaces/{namespace}/jobs/{name}", {"namespace": namespace, "name": name}, **kw)

    def delete_namespaced_job(self, name: str, namespace: str, body: Json | None = None, **kw: Any) -> Any:
        return self._request("DELETE", "/namespaces/{namespace}/jobs/{name}", {"namespace": namespace, "name": name},
                             body, **kw)

    def patch_namespaced_job(self, name: str, namespace: str, body: Json, **kw: Any) -> Any:
        return self._request("PATCH", "/namespaces/{namespace}/jobs/{name}", {"namespace": namespace, "name": name},
                             body, **kw)

    # The list methods carry no return annotation on purpose: ``kubernetes.watch.Watch``
    # then finds no model to build and yields each event as the parsed JSON, once.
    def list_namespaced_job(self, namespace: str, **kw: Any):  # noqa: ANN201
        return self._request("GET", "/namespaces/{namespace}/jobs", {"namespace": namespace}, **kw)


class _CoreV1(_Endpoints):
    def list_namespaced_event(self, namespace: str, **kw: Any):  # noqa: ANN201 - see list_namespaced_job
        return self._request("GET", "/namespaces/{namespace}/events", {"namespace": namespace}, **kw)

    def list_namespaced_pod(self, namespace: str, **kw: Any):  # noqa: ANN201 - see list_namespaced_job
        return self._request("GET", "/namespaces/{namespace}/pods", {"namespace": namespace}, **kw)

    def read_namespaced_pod_log(self, name: str, namespace: str, **kw: Any) -> Any:
        return self._request("GET", "/namespaces/{namespace}/pods/{name}/log", {"namespace": namespace, "name": name},
                             **kw)


def _camel(name: str) -> str:
    """``label_selector`` → ``labelSelector``, as the API's query parameters are spelled."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class _Stream:
    """One ``kubernetes.watch.Watch`` that another thread may stop at any moment, even
    while it connects (``Watch.stream`` clears the Watch's own stop flag as it starts)."""

    def __init__(self, lister: Any) -> None:
        self.watch = watch.Watch()
        self.lister = lister
        self.response: Any = None
        self.stopped = False

    def open(self, *args: Any, **kwargs: Any):  # noqa: ANN201 - no annotation: see _BatchV1.list_namespaced_job
        """What ``Watch.stream`` calls to connect: keep the response so ``stop`` can reach it."""
        self.response = self.lister(*args, **kwargs)
        if self.stopped:
            self._shutdown()
        return self.response

    def stop(self) -> None:
        """End the stream now: a read blocked on its socket returns at once (a Kubernetes
        API server may send nothing for minutes on a quiet watch)."""
        self.stopped = True
        self.watch.stop()
        self._shutdown()

    def _shutdown(self) -> None:
        # The Watch's own stop reaches the socket through the connection, which http.client
        # has already handed to the response: shut the response's socket down instead.
        try:
            if self.response is not None:
                self.response.shutdown()  # urllib3 >= 2.3
        except (AttributeError, ValueError, RuntimeError, OSError):
            pass  # already closed or released: the stream ends on its own


class Kube:
    """Calls the handler makes, in one namespace, through one shared ``ApiClient``."""

    def __init__(self, settings: Settings, backoff: Backoff | None = None) -> None:
        self.namespace = settings.namespace
        self.api = api_client(settings)
        self.batch = _BatchV1(self.api, "/apis/batch/v1")
        self.core = _CoreV1(self.api, "/api/v1")
        self.backoff = backoff or Backoff()
        self.watch_timeout = settings.watch_timeout_seconds

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        def once() -> Any:
            try:
                response = fn(*args, _preload_content=False, _request_timeout=CALL_TIMEOUT, **kwargs)
                return response.data
            except TRANSPORT_ERRORS as exc:
                raise translate(exc, what) from exc

        return retrying(once, self.backoff, what)

    def create_job(self, manifest: Json) -> Json:
        """Create the Job; ``JobExists`` when a Job of that name exists already."""
        name = manifest["metadata"]["name"]
        return json.loads(self._call(f"create job {name}", self.batch.create_namespaced_job, self.namespace, manifest))

    def read_job(self, name: str) -> Json | None:
        try:
            return json.loads(self._call(f"read job {name}", self.batch.read_namespaced_job, name, self.namespace))
        except NotFound:
            return None

    def delete_job(self, name: str, uid: str | None = None) -> None:
        """Delete with foreground propagation: the pods stop now, while the Job itself, held
        by the handler's reply finalizer, keeps its status until its reply is confirmed (a
        background deletion would leave the pods running until then). A missing Job is fine.
        With ``uid``, only that very Job: a namesake made since is left alone, and the
        answer is ``NotFound`` (the Job meant is gone)."""
        options: Json = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Foreground"}
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        try:
            self._call(f"delete job {name}", self.batch.delete_namespaced_job, name, self.namespace, options)
        except NotFound:
            if uid is not None:
                raise
        except JobExists as exc:  # 409: the precondition failed
            raise NotFound(f"job {name} is not the one meant (uid {uid}): {exc}") from exc

    def patch_job(self, name: str, operations: list[Json]) -> Json:
        """Apply a JSON patch (RFC 6902); its ``test`` operations make it conditional. A failed
        test is refused with 422 (``JobFailedToStart``): read the Job again and rebuild it."""
        return json.loads(self._call(
            f"patch job {name}", self.batch.patch_namespaced_job, name, self.namespace, operations,
            _content_type="application/json-patch+json",
        ))

    def patch_job_annotations(self, name: str, annotations: Mapping[str, str | None], uid: str | None = None) -> Json:
        """Set (or, with None, remove) annotations with one JSON merge patch: no read, no
        resourceVersion, so it cannot conflict. The client would otherwise send a dict as
        a JSON patch (its first content type), which the API server refuses. With ``uid``,
        only that very Job (a JSON patch that tests it): ``NotFound`` for a namesake."""
        if uid is None:
            return json.loads(self._call(
                f"annotate job {name}", self.batch.patch_namespaced_job, name, self.namespace,
                {"metadata": {"annotations": annotations}}, _content_type="application/merge-patch+json",
            ))
        operations: list[Json] = [{"op": "test", "path": "/metadata/uid", "value": uid}]
        for key, value in annotations.items():
            path = f"/metadata/annotations/{pointer(key)}"
            operations.append({"op": "remove", "path": path} if value is None
                              else {"op": "add", "path": path, "value": value})
        try:
            return self.patch_job(name, operations)
        except JobFailedToStart as exc:  # 422: the test failed
            raise NotFound(f"job {name} is not the one meant (uid {uid}): {exc}") from exc

    def pod_log_tail(self, pod: str, container: str, lines: int, limit_bytes: int) -> str:
        raw = self._call(
            f"read log of pod {pod}", self.core.read_namespaced_pod_log, pod, self.namespace,
            container=container, tail_lines=lines, limit_bytes=limit_bytes,
        )
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    def pod_log(self, pod: str, container: str, limit_bytes: int) -> bytes:
        """The pod's log from its start, at most ``limit_bytes`` bytes (the API server's
        ``limitBytes`` keeps the head), as bytes: the caller decides how to cut and decode."""
        raw = self._call(
            f"read log of pod {pod}", self.core.read_namespaced_pod_log, pod, self.namespace,
            container=container, limit_bytes=limit_bytes,
        )
        return raw if isinstance(raw, bytes) else str(raw).encode("utf-8")

    def follow_pod_log(self, pod: str, container: str, idle_seconds: float = 300.0) -> Iterator[bytes]:
        """The pod's log as it is written (``follow=true``), chunk by chunk, until the
        container ends or the stream does (a silence of ``idle_seconds``, a dropped
        connection): the caller decides whether to ask again. ``NotFound``, ``Transient``."""
        what = f"follow log of pod {pod}"
        try:
            response = self.core.read_namespaced_pod_log(pod, self.namespace, container=container, follow=True,
                                                         _request_timeout=(CALL_TIMEOUT[0], idle_seconds))
        except TRANSPORT_ERRORS as exc:
            raise translate(exc, what) from exc
        try:
            yield from response.stream(4096, decode_content=True)
        except TRANSPORT_ERRORS as exc:
            raise translate(exc, what) from exc
        finally:
            response.release_conn()

    def _lister(self, kind: str) -> Any:
        return {"jobs": self.batch.list_namespaced_job, "pods": self.core.list_namespaced_pod,
                "events": self.core.list_namespaced_event}[kind]

    @staticmethod
    def _selecting(kind: str, selector: str) -> dict[str, str]:
        """Jobs and pods are selected by label; events (which carry no labels of ours) by field."""
        return {"field_selector" if kind == "events" else "label_selector": selector}

    def list(self, kind: str, selector: str, transform: Any = None) -> tuple[builtins.list[Json], str]:
        """Every object of ``kind`` ("jobs", "pods" or "events") matching the selector (a field
        selector for events), read page by page, and the list's resourceVersion. Given
        ``transform`` (e.g. ``core.trim``), each page's objects pass through it as the page
        arrives, and those it returns None for are left out, so a long list is never held
        whole."""
        for attempt in range(3):
            items: builtins.list[Json] = []
            token = None
            try:
                while True:
                    body = json.loads(self._call(f"list {kind}", self._lister(kind), self.namespace,
                                                 limit=LIST_PAGE, continue_=token, **self._selecting(kind, selector)))
                    page = body.get("items") or []
                    if transform is not None:
                        page = [kept for kept in map(transform, page) if kept is not None]
                    items += page
                    token = body["metadata"].get("continue")
                    if not token:
                        return items, body["metadata"]["resourceVersion"]
            except ResourceGone:
                # The continue token expired (the snapshot was compacted): start over.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def watch(self, kind: str, selector: str, resource_version: str, stopper: builtins.list[Any]) -> Iterator[Json]:
        """Watch events (plain dicts) from ``resource_version`` until the server ends the stream.

        ``kubernetes.watch.Watch`` does the streaming; with both timeouts set it makes no
        retries of its own, so an ``ERROR`` event of 410 comes out as ``ResourceGone`` (re-list,
        then watch again) and a broken stream as ``Transient`` (resume). ``stopper`` receives a
        handle whose ``stop()`` ends the stream from another thread.
        """
        stream = _Stream(self._lister(kind))
        stopper.append(stream)
        try:
            events = stream.watch.stream(
                stream.open, self.namespace, resource_version=resource_version, **self._selecting(kind, selector),
                allow_watch_bookmarks=True, timeout_seconds=self.watch_timeout,
                _request_timeout=(CALL_TIMEOUT[0], self.watch_timeout + 15),
            )
            for event in events:
                if stream.stopped:
                    return
                if event is not None:
                    yield event
        except TRANSPORT_ERRORS as exc:
            if stream.stopped:
                return
            raise translate(exc, f"watch {kind}") from exc
        except ValueError as exc:  # a line cut mid-JSON by a dropped connection
            raise Transient(f"watch {kind}: broken stream: {exc}") from exc
        finally:
            stopper.remove(stream)

    def reachable(self) -> bool:
        """A cheap call for /readyz: the API server answers."""
        try:
            response: Any = client.VersionApi(self.api).get_code(_preload_content=False, _request_timeout=(2.0, 2.0))
            response.read()
            return True
        except TRANSPORT_ERRORS:
            return False

    def close(self) -> None:
        self.api.close()
