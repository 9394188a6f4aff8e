"""FakeKube: the fake API server assembled, served on a thread, driven from tests.

Wires one Store, one Scheduler running the kubelet, the Job controller, the
garbage collector and the TTL-after-finished controller, and the WSGI app into
a threaded werkzeug server on 127.0.0.1 (watches are long-lived, so every
connection gets its own thread). The Python methods read and poke the store
directly: they bypass HTTP, so faults and request counts never see them.
"""

import logging
import threading
from pathlib import Path

import yaml
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler, make_server

from .app import Api, RequestLog
from .controller import JobController
from .disruption import disrupt
from .events import EventRecorder
from .faults import Faults
from .gc import GarbageCollector
from .kubelet import Kubelet
from .objects import EVENTS, JOBS, PODS, RESOURCES
from .podadmission import PodAdmission, Sidecar
from .scenarios import Outcome
from .scheduler import Scheduler
from .store import Store
from .timings import Timings
from .ttl import TTLController

logger = logging.getLogger(__name__)

ISTIO_PROXY = Sidecar()


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to our logger at DEBUG instead of werkzeug's stderr handler."""

    timeout = 30  # seconds a connection may stall mid-request or mid-write

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logger.debug('"%s" %s %s', self.requestline, code, size)

    def log(self, type: str, message: str, *args) -> None:  # noqa: A002 - werkzeug's signature
        logger.debug("%s: " + message, type, *args)


class FakeKube:
    """A stateful fake Kubernetes API server for batch/v1 Jobs, their pods and events.

    ``sidecar`` injects that container into every pod (see :meth:`inject_sidecar`);
    ``pod_security="restricted"`` enforces that Pod Security level in every namespace (see
    :meth:`enforce_pod_security`).
    """

    def __init__(self, run_seconds: float = 0.05, *, timings: Timings | None = None,
                 history_limit: int = 1000, bookmark_interval: float = 60.0, host: str = "127.0.0.1",
                 port: int = 0, sidecar: Sidecar | None = None, pod_security: str | None = None):
        self.faults = Faults()
        self.timings = timings or Timings()
        self._host, self._port = host, port
        self._store = Store(history_limit)
        self._scheduler = Scheduler()
        self._admission = PodAdmission()
        if sidecar is not None:
            self._admission.sidecars[None] = sidecar
        if pod_security is not None:
            self._admission.pod_security[None] = pod_security
        self._kubelet = Kubelet(self._store, self._scheduler, self.timings, run_seconds)
        self._controller = JobController(self._store, self._scheduler, self._kubelet, self.timings,
                                         self._admission, EventRecorder(self._store))
        for listener in (self._kubelet, self._controller, GarbageCollector(self._store, self._scheduler),
                         TTLController(self._store, self._scheduler, self.timings)):
            self._store.subscribe(listener.on_event)
        self._requests = RequestLog()
        self._stopping = threading.Event()
        self._app = Api(self._store, self.faults, self._requests, self._stopping, bookmark_interval)
        self._server: ThreadedWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "FakeKube":
        if self._server is not None:
            raise RuntimeError("FakeKube already started")
        self._scheduler.start()
        self._server = make_server(self._host, self._port, self._app, threaded=True,
                                   request_handler=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fakekube-http", daemon=True)
        self._thread.start()
        logger.info("fake Kubernetes API serving at %s", self.url)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._store.close()  # ends every watch stream
        self._server.shutdown()
        self._server.server_close()  # joins the request threads
        self._thread.join(5)
        self._scheduler.stop()
        logger.info("fake Kubernetes API stopped: %d requests served, resourceVersion %d",
                    self._requests.count(), self._store.resource_version)
        self._server = None

    def __enter__(self) -> "FakeKube":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeKube is not started")
        return f"http://{self._host}:{self._server.socket.getsockname()[1]}"

    def write_kubeconfig(self, path: str | Path) -> Path:
        """Write a kubeconfig (no auth, one context, current) pointing at this server."""
        path = Path(path)
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "fakekube", "cluster": {"server": self.url}}],
            "users": [{"name": "fakekube", "user": {}}],
            "contexts": [{"name": "fakekube", "context": {"cluster": "fakekube", "user": "fakekube",
                                                          "namespace": "default"}}],
            "current-context": "fakekube",
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # -- inspection and control (bypass HTTP and faults) -----------------------

    def jobs(self, namespace: str) -> list[dict]:
        return self._store.list(JOBS, namespace)[0]

    def pods(self, namespace: str) -> list[dict]:
        return self._store.list(PODS, namespace)[0]

    def events(self, namespace: str, reason: str | None = None) -> list[dict]:
        """core/v1 Events recorded in ``namespace`` (those with ``reason``, if given)."""
        return self._store.list(EVENTS, namespace, lambda e: reason in (None, e.get("reason")))[0]

    def created_jobs(self, namespace: str) -> list[str]:
        """Names of every Job ever created (201) in ``namespace``, in order, deleted ones too."""
        return self._store.created_names(JOBS, namespace)

    def request_count(self, method: str | None = None, kind: str | None = None) -> int:
        """Requests served; ``kind`` in {"jobs", "pods", "events", "log", "eviction"}; a watch counts once."""
        return self._requests.count(method, kind)

    def reset_counts(self) -> None:
        self._requests.reset()

    def on_write(self, listener) -> None:
        """Call ``listener(plural, type, namespace, obj)`` at every write, as it is stored.

        The benchmarks time Job creation and completion with it (``bench/rig.py``). It runs
        under the store's lock: it must be quick and must not call back into the server.
        """
        self._store.subscribe(lambda event: listener(event.resource.plural, event.type, event.namespace,
                                                     event.object))

    def finish(self, namespace: str, job_name: str, succeeded: bool = True, exit_code: int = 0,
               reason: str | None = None) -> None:
        """End the Job's running pod now, e.g. a ``scenario/hold`` one.

        Raises LookupError for an unknown Job and ValueError for a finished one.
        A failure is retried like any other while the backoff limit allows.
        """
        self._scheduler.run_sync(self._controller.finish, namespace, job_name,
                                 Outcome.of(succeeded, exit_code, reason))

    def restore(self, plural: str, objects: list[dict]) -> None:
        """Add finished objects as if found in etcd at start-up: no watch event, no controller
        acting on them (``Store.restore``). The benchmarks seed a namespace with it."""
        self._store.restore(RESOURCES[plural], objects)

    def compact(self) -> None:
        """Drop all watch history: resuming from any older resourceVersion (or continuing a
        paginated LIST from an older snapshot) gets 410."""
        self._store.compact()

    def disrupt_pod(self, namespace: str, name: str, reason: str = "EvictionByEvictionAPI",
                    message: str | None = None, exit_code: int = 143) -> None:
        """Disrupt a running pod as ``reason`` names (see :mod:`tests.fakekube.disruption`):
        ``DisruptionTarget`` condition, then deletion (graceful; the container exits
        ``exit_code``), or for ``TerminationByKubelet`` node-pressure eviction (``Failed``,
        reason ``Evicted``). Raises LookupError for an unknown pod, ValueError for an
        ended one or an unknown reason."""
        self._scheduler.run_sync(disrupt, self._store, self._kubelet, namespace, name, reason, message, exit_code)

    def set_pod_quota(self, namespace: str, pods: int | None, name: str = "pod-quota") -> None:
        """A ResourceQuota ``name`` with ``hard: {pods: N}`` in ``namespace`` (None removes it):
        the Job controller's creates beyond it fail with FailedCreate Events and are retried."""
        if pods is None:
            self._admission.quotas.pop(namespace, None)
        else:
            self._admission.quotas[namespace] = (name, pods)

    def enforce_pod_security(self, level: str | None = "restricted", namespace: str | None = None) -> None:
        """Enforce a Pod Security level (``restricted``; ``privileged`` or None: none) on pods
        created from now on in ``namespace`` or (None) everywhere, as the namespace label
        ``pod-security.kubernetes.io/enforce`` does on a real cluster."""
        if level is None:
            self._admission.pod_security.pop(namespace, None)
        else:
            self._admission.pod_security[namespace] = level

    def inject_sidecar(self, sidecar: Sidecar | None = ISTIO_PROXY, namespace: str | None = None) -> None:
        """Have a webhook inject ``sidecar`` (default: Istio's ``istio-proxy``, running for
        ever) into pods created from now on, in ``namespace`` or (None) everywhere; pass
        ``sidecar=None`` to stop injecting there."""
        if sidecar is None:
            self._admission.sidecars.pop(namespace, None)
        else:
            self._admission.sidecars[namespace] = sidecar

