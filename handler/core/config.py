"""Settings: read once from the environment (and CLI flags), frozen, passed explicitly.

Every field names its environment variable, its unit and why its default is what it
is. Nothing else in the package reads ``os.environ``. A ``CLOUD_WORKER_*`` variable
that is not a known setting is an error, so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handler.core.errors import ConfigError

PREFIX = "CLOUD_WORKER_"
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: Namespace used outside a cluster: the one the seed's service account manifest created.
FALLBACK_NAMESPACE = "mstc-dev"
#: Values of CLOUD_WORKER_BACKEND (see ``handler.service.backends``).
BACKENDS = ("kubernetes", "local")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text) if text.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def _json_text(text: str) -> str:
    """Kept as text (settings stay hashable and frozen); validated here, read via a property."""
    _json_object(text)
    return text.strip()


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _setting(default: Any, help: str, parse: Callable[[str], Any] = str, env: str | None = None) -> Any:
    """A field whose environment variable is ``CLOUD_WORKER_<FIELD_NAME>`` unless named."""
    return field(default=default, metadata={"help": help, "parse": parse, "env": env})


@dataclass(frozen=True)
class Settings:
    # --- broker
    amqp_url: str = _setting(
        "amqp://guest:guest@localhost:5672/%2F",
        "AMQP URL of the broker (credentials belong in a Secret). Default: a local RabbitMQ.",
    )
    exchange: str = _setting(
        "mstc.exchange", "Direct exchange the seed's clients publish to; the work queue is bound to it."
    )
    queue: str = _setting(
        "mstc.queue.work",
        "Work queue, declared durable with no arguments exactly as the seed's client declares it; "
        "also the binding key.",
    )
    dead_letter_queue: str = _setting(
        "", "Durable queue that receives a copy of every rejected request. Empty: no copy is kept."
    )
    reply_exchange: str = _setting(
        "", "Exchange for replies to requests without reply_to. Empty: the default exchange."
    )
    reply_routing_key: str = _setting(
        "", "Routing key for replies to requests without reply_to. Empty: such replies are only logged."
    )
    concurrency: int = _setting(
        1, "Requests one process runs at once (also the prefetch count). 1 keeps a pod's work visible to KEDA.", int
    )
    once: bool = _setting(False, "Handle one request, then exit 0 (KEDA ScaledJob mode).", _bool)
    idle_exit_seconds: float = _setting(
        0.0, "Seconds without work after which idle mode exits 0. 0: never (KEDA ScaledObject scales down).", float
    )
    shutdown_grace_seconds: float = _setting(
        25.0,
        "Seconds in-flight requests get after SIGTERM before they are left unacked for redelivery; "
        "below Kubernetes' default terminationGracePeriodSeconds of 30.",
        float,
    )
    reconnect_max_seconds: float = _setting(
        30.0, "Upper bound of the exponential backoff between broker reconnection attempts, in seconds.", float
    )
    max_body_bytes: int = _setting(
        64 * 1024, "Largest request body accepted, in bytes. A request is five short fields; 64 KiB is generous.", int
    )
    # --- requests
    default_timeout_minutes: float = _setting(
        15.0, "Job timeout when a request gives none or 0, in minutes (the seed's default).", float
    )
    max_timeout_minutes: float = _setting(
        120.0, "Largest timeOut a request may ask for, in minutes. Larger ones are rejected.", float
    )
    allowed_images: tuple[str, ...] = _setting(
        (), "Comma-separated image prefixes a request may use. Empty: any image.", _csv
    )
    unknown_fields: str = _setting(
        "ignore",
        "What to do with request fields beyond the documented ones (namespace, env, command, ...): ignore "
        "(the default: the seed's clients may send extras, and they never reach the Job either way) or reject.",
    )
    event_source: str = _setting(
        "urn:mstc:cloud-worker", "CloudEvents `source` attribute of every reply."
    )
    # --- kubernetes
    namespace: str = _setting(
        "", "Namespace Jobs run in. Empty: the pod's own namespace in-cluster, else mstc-dev."
    )
    kubeconfig: str = _setting(
        "", "Kubeconfig file used outside a cluster. Empty: the standard KUBECONFIG / ~/.kube/config.",
        env="KUBECONFIG",
    )
    job_service_account: str = _setting("", "Service account of the Job's pods. Empty: the namespace default.")
    job_env_secret: str = _setting(
        "", "Secret injected into every Job with envFrom (bucket credentials never travel in messages)."
    )
    job_resources: str = _setting(
        "", 'Container resources of the Job as JSON, e.g. {"limits":{"memory":"512Mi"}}. Empty: none.',
        _json_text,
    )
    job_backoff_limit: int = _setting(0, "Pod retries before a Job fails. 0: a failed job is reported at once.", int)
    job_ttl_seconds: int = _setting(
        30, "ttlSecondsAfterFinished of each Job (the seed's 30 s): long enough to read the log, short enough to tidy.", int
    )
    job_run_as_user: int = _setting(
        1000, "UID the Job's container runs as; non-root so the restricted Pod Security Standard admits it.", int
    )
    image_pull_grace_seconds: float = _setting(
        60.0,
        "Seconds a pod may sit in ErrImagePull/ImagePullBackOff/CreateContainerConfigError before the Job is "
        "deleted and reported failed; long enough for a registry hiccup.",
        float,
    )
    deadline_slack_seconds: float = _setting(
        30.0,
        "Seconds past activeDeadlineSeconds the handler waits for the cluster's verdict before it deletes "
        "the Job itself and reports timedout.",
        float,
    )
    log_tail_lines: int = _setting(50, "Lines of the pod log included in the reply.", int)
    log_tail_bytes: int = _setting(8192, "Upper bound of the log tail in the reply, in bytes.", int)
    watch_timeout_seconds: int = _setting(
        240,
        "Server-side timeoutSeconds of each watch request; the client-side read timeout is 15 s more. "
        "Below the API server's 5-minute minimum request timeout so our side renews first.",
        int,
    )
    # --- where Jobs run
    backend: str = _setting(
        "kubernetes",
        "Where Jobs run: kubernetes (one batch/v1 Job per request) or local (one local process per request, "
        "for a single machine and the demo; one handler process only, as its registry of running jobs is "
        "in memory).",
    )
    local_images: str = _setting(
        "",
        "TOML file mapping images to local commands, for the local backend. Empty: examples/images.toml "
        "of the source checkout.",
    )
    # --- process
    http_port: int = _setting(
        8080, "Port of /healthz, /readyz and /metrics, and of `cloud-worker serve`. 0: no HTTP server (consume only).",
        int,
    )
    http_threads: int = _setting(
        32,
        "Threads of `cloud-worker serve` (gunicorn gthread, one process): each synchronous request holds one "
        "for its Job's whole run, and probes need a free one, so keep it above the synchronous calls expected "
        "at once.",
        int,
    )
    heartbeat_stale_seconds: float = _setting(
        30.0, "Age of the consume loop's heartbeat after which /healthz answers 503, in seconds.", float
    )
    log_level: str = _setting("INFO", "Python logging level.")
    log_format: str = _setting("auto", "Log format: json, text, or auto (text on a terminal, else json).")

    def __post_init__(self) -> None:
        problems = []
        if self.concurrency < 1:
            problems.append("CLOUD_WORKER_CONCURRENCY must be at least 1")
        if self.http_threads < 2:
            problems.append("CLOUD_WORKER_HTTP_THREADS must be at least 2 (one for the probes)")
        if self.default_timeout_minutes <= 0:
            problems.append("CLOUD_WORKER_DEFAULT_TIMEOUT_MINUTES must be positive")
        if self.max_timeout_minutes < self.default_timeout_minutes:
            problems.append("CLOUD_WORKER_MAX_TIMEOUT_MINUTES must be at least the default timeout")
        if self.max_body_bytes < 1:
            problems.append("CLOUD_WORKER_MAX_BODY_BYTES must be positive")
        if self.log_format not in {"auto", "json", "text"}:
            problems.append("CLOUD_WORKER_LOG_FORMAT must be auto, json or text")
        if self.unknown_fields not in {"ignore", "reject"}:
            problems.append("CLOUD_WORKER_UNKNOWN_FIELDS must be ignore or reject")
        if self.backend not in BACKENDS:
            problems.append(f"CLOUD_WORKER_BACKEND must be one of {', '.join(BACKENDS)}")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Settings:
        """Build settings from an environment mapping, then apply already-typed overrides (CLI flags)."""
        known = {env_name(f) for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in environ if k.startswith(PREFIX) and k not in known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)} (see the README's configuration table)")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = env_name(f)
            if name in environ:
                try:
                    values[f.name] = f.metadata["parse"](environ[name])
                except ValueError as exc:
                    raise ConfigError(f"{name}={environ[name]!r}: {exc}") from exc
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        if not values.get("namespace"):
            values["namespace"] = _default_namespace()
        return cls(**values)

    @property
    def job_resources_spec(self) -> dict[str, Any]:
        return _json_object(self.job_resources)

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict fit for a log line: no credentials."""
        out = dataclasses.asdict(self)
        out["amqp_url"] = redact_url(self.amqp_url)
        return out


def env_name(f: dataclasses.Field) -> str:
    return f.metadata.get("env") or PREFIX + f.name.upper()


def setting_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(Settings))


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/`` → ``amqp://user:***@host/`` (only the authority is looked at)."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or "@" not in authority:
        return url
    userinfo, _, host = authority.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


def _default_namespace() -> str:
    try:
        return IN_CLUSTER_NAMESPACE_FILE.read_text().strip() or FALLBACK_NAMESPACE
    except OSError:
        return FALLBACK_NAMESPACE
