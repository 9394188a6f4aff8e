"""One runtime: the pieces a handler process is made of, assembled in one place.

``consume``, ``serve`` and ``demo`` all need the same things: the backend the settings
name (started), the metrics registry it reports to, and the request handler over both.
They get them from ``Runtime.open`` and add only their transport, so none of them asks
which backend it has. The tools that look at a request after it was sent (``status``,
``logs``, ``submit --follow``) get theirs from ``open_for_inspection``. These openers are
the only place that names a kind of backend; everything else asks the backend itself.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from handler.core.config import Settings
from handler.core.errors import ConfigError
from handler.core.profiles import Profiles
from handler.service.backends import JobBackend
from handler.service.handling import RequestHandler
from handler.service.metrics import Metrics
from handler.service.profiles import load_profiles

log = logging.getLogger(__name__)


def open_backend(settings: Settings, environ: Mapping[str, str], profiles: Profiles | None = None, *,
                 inspecting: bool = False) -> JobBackend:
    """The backend ``CLOUD_WORKER_BACKEND`` names, not yet started (``start`` to run jobs,
    ``inspect`` to look). ``inspecting``: for another process than the handler's, so the
    local backend neither claims its state folder nor starts an S3 endpoint. Each is
    imported only when chosen: local mode never imports the Kubernetes client."""
    if settings.backend == "local":
        from handler.service.backends.local import open_local_backend

        return open_local_backend(settings, environ, profiles=profiles, s3_env={} if inspecting else None)
    from handler.service.backends.kubernetes import KubernetesBackend

    return KubernetesBackend(settings)


def open_for_inspection(settings: Settings, environ: Mapping[str, str], target: str | None = None, *,
                        chosen: bool = True) -> JobBackend:
    """The backend that runs (or ran) ``target`` (a request id or Job name), opened to look.

    ``chosen``: the settings name the backend (a flag, or CLOUD_WORKER_BACKEND). When they
    do not, the local backend is taken if its state folder on this machine knows
    ``target`` or a local-mode handler is running on it, else the cluster; and a cluster
    that cannot be configured says that ``--backend local`` is the other way.
    """
    if not chosen and settings.backend != "local" and local_jobs_here(settings, target):
        settings = dataclasses.replace(settings, backend="local")
    try:
        backend = open_backend(settings, environ, inspecting=True)
    except ConfigError as exc:
        if chosen:
            raise
        raise ConfigError(f"{str(exc).rstrip('.')}. For a cluster, set KUBECONFIG (or --kubeconfig); for the jobs of a local-mode "
                          "handler on this machine, pass --backend local (and its --local-state-dir, if it has "
                          "one of its own)") from exc
    backend.inspect()
    return backend


def local_jobs_here(settings: Settings, target: str | None) -> bool:
    """The local state folder the settings name knows ``target``, or a local-mode handler runs on it."""
    from handler.service.backends.localstate import LocalState

    state = LocalState.for_settings(settings)
    return (target is not None and state.knows(target)) or state.holder() is not None


def reachable(settings: Settings, environ: Mapping[str, str]) -> bool:
    """The backend's API answers (before a process forks workers that will need it)."""
    backend = open_backend(settings, environ, inspecting=True)
    try:
        return backend.reachable()
    finally:
        backend.close()


@dataclass
class Runtime:
    settings: Settings
    backend: JobBackend
    metrics: Metrics
    handler: RequestHandler
    #: Readiness checks by name (for /readyz); transports add their own.
    checks: dict[str, Callable[[], bool]] = field(default_factory=dict)
    owns_backend: bool = True

    @classmethod
    def open(cls, settings: Settings, environ: Mapping[str, str], backend: JobBackend | None = None,
             metrics: Metrics | None = None) -> Runtime:
        """Prove the Job profiles (``ConfigError`` for a bad one: before anything starts),
        start the backend (``Transient`` when its API cannot be reached) and assemble the
        rest around it. A backend passed in is used as it is and not closed."""
        profiles = load_profiles(settings)
        owns_backend = backend is None
        if backend is None:
            backend = open_backend(settings, environ, profiles)
            backend.start()
        if settings.s3_keys(named_buckets=False) is None:
            log.warning("no bucket credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or MINIO_ROOT_USER/"
                        "MINIO_ROOT_PASSWORD): the Job's log object is written only for requests that name their "
                        "buckets (with the original's minioadmin keys); the replies to the others say so "
                        "(logUploadError)")
        metrics = metrics or Metrics()
        backend.instrument(metrics)
        handler = RequestHandler(settings, backend, metrics=metrics, profiles=profiles)
        return cls(settings, backend, metrics, handler, {settings.backend: backend.ready}, owns_backend)

    def close(self) -> None:
        if self.owns_backend:
            self.backend.close()
