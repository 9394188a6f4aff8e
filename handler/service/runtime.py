"""One runtime: the pieces a handler process is made of, assembled in one place.

``consume``, ``serve`` and ``demo`` all need the same things: the backend the settings
name (started), the metrics registry it reports to, and the request handler over both.
They get them from ``Runtime.open`` and add only their transport, so none of them asks
which backend it has.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from handler.core.config import Settings
from handler.core.profiles import Profiles
from handler.service.backends import JobBackend
from handler.service.handling import RequestHandler
from handler.service.metrics import Metrics
from handler.service.profiles import load_profiles

log = logging.getLogger(__name__)


def open_backend(settings: Settings, environ: Mapping[str, str], profiles: Profiles | None = None) -> JobBackend:
    """The backend ``CLOUD_WORKER_BACKEND`` names, not yet started. Each is imported only
    when chosen: local mode never imports the Kubernetes client."""
    if settings.backend == "local":
        from handler.service.backends.local import open_local_backend

        return open_local_backend(settings, environ, profiles=profiles)
    from handler.service.backends.kubernetes import KubernetesBackend

    return KubernetesBackend(settings)


def reachable(settings: Settings) -> bool:
    """The backend's API answers (before a process forks workers that will need it)."""
    if settings.backend == "local":
        return True
    from handler.adapters.kube import Kube

    kube = Kube(settings)
    try:
        return kube.reachable()
    finally:
        kube.close()


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
        metrics = metrics or Metrics()
        backend.instrument(metrics)
        handler = RequestHandler(settings, backend, metrics=metrics, profiles=profiles)
        return cls(settings, backend, metrics, handler, {settings.backend: backend.ready}, owns_backend)

    def close(self) -> None:
        if self.owns_backend:
            self.backend.close()
