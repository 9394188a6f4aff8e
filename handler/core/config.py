"""Settings: read once from the environment (and CLI flags), frozen, passed explicitly.

Every field names its environment variable, its unit and why its default is what it
is. Nothing else in the package reads ``os.environ``. A ``CLOUD_WORKER_*`` variable
that is not a known setting is an error, so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handler.core.errors import ConfigError

PREFIX = "CLOUD_WORKER_"
#: The variables Kubernetes' service links give a pod for a Service whose name starts
#: with ``cloud-worker`` (``CLOUD_WORKER_X_SERVICE_HOST``, ``..._PORT_8080_TCP_ADDR``): not
#: settings, and not typos either, so they are left alone.
SERVICE_LINK = re.compile(r"[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_\d+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)")
#: ``<SERVICE>_PORT`` itself is told from a misspelt ``..._PORT`` setting by its value.
SERVICE_LINK_URL = re.compile(r"(tcp|udp|sctp)://\S+")


def _is_service_link(name: str, value: str) -> bool:
    return bool(SERVICE_LINK.fullmatch(name) or (name.endswith("_PORT") and SERVICE_LINK_URL.fullmatch(value)))
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
#: Namespace used outside a cluster: the one the development manifests create.
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


def _int_csv(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in _csv(text))


#: The commands a setting is a flag of (every command reads every variable): the handler's
#: two faces, and the tools that look at a request after it was sent.
CONSUME, SERVE, HANDLERS = ("consume",), ("serve",), ("consume", "serve")
STATUS_LOGS = ("status", "logs")
CANCEL = ("cancel",)


def _setting(default: Any, help: str, parse: Callable[[str], Any] = str, env: str | None = None,
             secret: bool = False, choices: tuple[str, ...] | None = None,
             commands: tuple[str, ...] = HANDLERS) -> Any:
    """A field whose environment variable is ``CLOUD_WORKER_<FIELD_NAME>`` unless named.
    A ``secret`` one is left out of ``repr`` and shown as ``***`` by ``redacted``;
    ``choices`` are its only values; ``commands`` are the subcommands with a flag for it."""
    return field(default=default, repr=not secret, metadata={"help": help, "parse": parse, "env": env,
                                                              "secret": secret, "choices": choices,
                                                              "commands": commands})


@dataclass(frozen=True)
class Settings:
    # --- broker
    amqp_url: str = _setting(
        "amqp://guest:guest@localhost:5672/%2F",
        "AMQP URL of the broker (credentials belong in a Secret). Default: a local RabbitMQ.",
        commands=CONSUME + CANCEL,
    )
    exchange: str = _setting(
        "mstc.exchange", "Direct exchange clients publish requests to; the work queue is bound to it.",
        commands=CONSUME + CANCEL,
    )
    queue: str = _setting(
        "mstc.queue.work",
        "Work queue (also its binding key), declared durable with no arguments, exactly as the original "
        "clients declare it.",
        commands=CONSUME + CANCEL,
    )
    cancel_queue: str = _setting(
        "",
        "Queue of cancel events, bound to the exchange by its own name and consumed beside the work queue on a "
        "lane of its own, so that a cancel is answered however busy the handler is. Empty: the work queue's name "
        "followed by .cancel.",
        commands=CONSUME + CANCEL,
    )
    dead_letter_queue: str = _setting(
        "", "Durable queue that receives a copy of every rejected request. Empty: no copy is kept.", commands=CONSUME
    )
    queue_type: str = _setting(
        "classic",
        "Type of the queues the handler creates (the work queue and the dead-letter queue, when missing): classic "
        "(declared with no arguments, exactly as the original clients declare it) or quorum (RabbitMQ's replicated "
        "type for data safety, with x-delivery-limit). Queues that exist are used as they are, whatever their type.",
        choices=("classic", "quorum"), commands=CONSUME,
    )
    delivery_limit: int = _setting(
        20,
        "x-delivery-limit of a quorum work queue the handler creates: deliveries of one message (redeliveries after "
        "a lost connection, a crash, a shutdown) before the broker dead-letters it to the dead-letter queue (or drops "
        "it without one). Retries are fresh copies and do not count. 20 rides out any run of restarts yet stops a "
        "message that kills every handler it reaches.",
        int, commands=CONSUME,
    )
    publish_timeout_seconds: float = _setting(
        10.0,
        "Seconds one publish (a reply, a dead-letter or retry copy) waits for the broker's confirm before the "
        "publishing connection is given up and the publish tried again on a new one. A healthy broker confirms in "
        "milliseconds; a silent connection would otherwise hold the reply until the kernel gives up (~15 min).",
        float,
    )
    reply_exchange: str = _setting(
        "", "Exchange for replies to requests without reply_to. Empty: the default exchange.", commands=CONSUME
    )
    reply_routing_key: str = _setting(
        "", "Routing key for replies to requests without reply_to. Empty: such replies are only logged.",
        commands=CONSUME,
    )
    concurrency: int = _setting(
        1, "Requests one process runs at once (also the prefetch count). 1 keeps a pod's work visible to KEDA.", int,
        commands=CONSUME,
    )
    once: bool = _setting(False, "Handle one request, then exit 0 (KEDA ScaledJob mode).", _bool, commands=CONSUME)
    idle_exit_seconds: float = _setting(
        0.0, "Seconds without work after which idle mode exits 0. 0: never (KEDA ScaledObject scales down).", float,
        commands=CONSUME,
    )
    shutdown_grace_seconds: float = _setting(
        25.0,
        "Seconds in-flight requests get after SIGTERM before they are left unacked for redelivery; "
        "below Kubernetes' default terminationGracePeriodSeconds of 30.",
        float,
    )
    reconnect_max_seconds: float = _setting(
        30.0, "Upper bound of the exponential backoff between broker reconnection attempts, in seconds.", float,
        commands=CONSUME,
    )
    max_attempts: int = _setting(
        5,
        "Attempts a request gets when handling it fails transiently (API server or S3 down) or unexpectedly once "
        "its Job exists. Each retry is a copy republished after a growing delay, counted in its "
        "x-cloud-worker-attempts header; after the last one the requester gets `failed` and the request a "
        "dead-letter copy. 5 rides out about a minute of trouble.",
        int, commands=CONSUME,
    )
    retry_delay_seconds: float = _setting(
        2.0, "Delay before the first retry of a request, in seconds; doubled for each further attempt, at most 60.",
        float, commands=CONSUME,
    )
    broker_consumer_timeout_minutes: float = _setting(
        30.0,
        "The broker's consumer_timeout, in minutes (RabbitMQ's default is 30). On RabbitMQ before 3.11.15 a "
        "delivery unacked for longer is taken back, so the handler warns at start-up when the longest Job a "
        "request may ask for does not fit in it.",
        float, commands=CONSUME,
    )
    max_body_bytes: int = _setting(
        64 * 1024, "Largest request body accepted, in bytes. A request is five short fields; 64 KiB is generous.", int
    )
    # --- requests
    default_timeout_minutes: float = _setting(
        15.0, "Job timeout when a request gives none or 0, in minutes (the original's default).", float
    )
    max_timeout_minutes: float = _setting(
        25.0,
        "Largest timeOut a request may ask for, in minutes. Larger ones are rejected. The default keeps the "
        "longest Job (plus slack) inside RabbitMQ's default 30-minute consumer_timeout; raise both together.",
        float,
    )
    allowed_images: tuple[str, ...] = _setting(
        (), "Comma-separated image prefixes a request may use. Empty: any image.", _csv
    )
    allowed_bucket_hosts: tuple[str, ...] = _setting(
        (),
        "Comma-separated host[:port] entries a bucket URL may name (exact, case-insensitive: minio:9000 does "
        "not allow minio:9001). Empty: any host but link-local and cloud metadata addresses, which are always "
        "refused.",
        _csv,
    )
    unknown_fields: str = _setting(
        "ignore",
        "What to do with request fields beyond the documented ones (namespace, env, command, ...): ignore "
        "(the default: the original clients may send extras, and they never reach the Job either way) or reject.",
        choices=("ignore", "reject"),
    )
    event_source: str = _setting(
        "urn:mstc:cloud-worker", "CloudEvents `source` attribute of every reply."
    )
    # --- buckets (the handler's own S3 access: bucket names, and the Job's log)
    minio_service_host: str = _setting(
        "localhost",
        "Host of the MinIO endpoint that bucket names (inputBucket/outputBucket) resolve against, as the original "
        "read it; in a cluster a Service named minio sets it. AWS_ENDPOINT_URL_S3 wins when set.",
        env="MINIO_SERVICE_HOST",
    )
    minio_service_port: int = _setting(
        9000, "Port of that MinIO endpoint (MinIO's default).", int, env="MINIO_SERVICE_PORT"
    )
    minio_root_user: str = _setting(
        "",
        "Access key the handler uses for buckets (to upload the Job's log). AWS_ACCESS_KEY_ID wins when set. "
        "Empty: minioadmin (the original's default), and only for requests that name buckets.",
        env="MINIO_ROOT_USER",
    )
    minio_root_password: str = _setting(
        "", "Secret key that goes with MINIO_ROOT_USER. Empty: minioadmin, as above.", env="MINIO_ROOT_PASSWORD",
        secret=True,
    )
    aws_endpoint_url_s3: str = _setting(
        "",
        "S3 endpoint (http(s)://host[:port]) bucket names resolve against; wins over MINIO_SERVICE_HOST/PORT.",
        env="AWS_ENDPOINT_URL_S3",
    )
    aws_endpoint_url: str = _setting(
        "", "The generic AWS endpoint; used as AWS_ENDPOINT_URL_S3 when that is empty.", env="AWS_ENDPOINT_URL"
    )
    aws_access_key_id: str = _setting(
        "", "Access key for buckets; wins over MINIO_ROOT_USER.", env="AWS_ACCESS_KEY_ID"
    )
    aws_secret_access_key: str = _setting(
        "", "Secret key that goes with AWS_ACCESS_KEY_ID.", env="AWS_SECRET_ACCESS_KEY", secret=True
    )
    log_upload_timeout_seconds: float = _setting(
        30.0,
        "Seconds the handler spends at most writing a Job's log to its output bucket, all attempts together, "
        "before it replies without it (the reply then says logUploadError). Counted in the time a delivery may "
        "stay unacked.",
        float,
    )
    job_log_max_bytes: int = _setting(
        10 * 1024 * 1024,
        "Largest Job log uploaded to the output bucket, in bytes; a longer log is cut there and ends with a "
        "truncation line. 10 MiB holds any log a person reads, and bounds the handler's memory per request.",
        int,
    )
    # --- kubernetes
    namespace: str = _setting(
        "", "Namespace Jobs run in. Empty: the pod's own namespace in-cluster, else mstc-dev.",
        commands=HANDLERS + STATUS_LOGS,
    )
    kubeconfig: str = _setting(
        "", "Kubeconfig file used outside a cluster. Empty: the standard KUBECONFIG / ~/.kube/config.",
        env="KUBECONFIG", commands=HANDLERS + STATUS_LOGS,
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
        30,
        "ttlSecondsAfterFinished of each Job: seconds after it finishes before the cluster deletes it and its pods "
        "(the original's 30 s, short enough to tidy). The handler's finalizer keeps the Job (not its pods) until its "
        "reply is confirmed, however short this is.",
        int,
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
    job_start_grace_seconds: float = _setting(
        60.0,
        "Seconds a Job may stay Suspended (a queue such as Kueue has not admitted it) or unable to create its "
        "pod (FailedCreate: quota, Pod Security admission, LimitRange) before it is deleted and reported failed "
        "with the cluster's message; long enough for a quota freed a moment later, far shorter than a timeout.",
        float,
    )
    profiles_file: str = _setting(
        "",
        "YAML file of Job profiles: named Job shapes (resources, node placement, tolerations, volumes, Secrets, "
        "service account, timeout bound, images, maxInFlight) that a request chooses with its `profile` field, "
        "validated at start-up (a bad profile stops the handler). Empty: one built-in profile, `default`, made of "
        "the CLOUD_WORKER_JOB_* settings (which are also the defaults of every profile's unnamed fields).",
    )
    unschedulable_grace_seconds: float = _setting(
        300.0,
        "Seconds a Job's pod may stay unschedulable (PodScheduled=False, Unschedulable: no node matches its "
        "selector, tolerations or resources) before the Job is deleted and reported failed with the scheduler's "
        "message, rather than at its timeout. Long enough for a cluster autoscaler to add a node (usually 1-3 "
        "minutes; raise it where GPU nodes take longer).",
        float,
    )
    job_fail_fast_exit_codes: tuple[int, ...] = _setting(
        (),
        "Comma-separated exit codes of the job's container that fail its Job at once, without the retries "
        "job_backoff_limit allows (a podFailurePolicy FailJob rule), e.g. 2,64 for bad input. 1-255; empty: none.",
        _int_csv,
    )
    finalizer_horizon_seconds: float = _setting(
        86400.0,
        "Seconds a finished (or deleted) Job may keep the handler's finalizer, waiting for its reply to be "
        "confirmed, before any handler removes it so the cluster can delete the Job. A day covers a broker or "
        "handler outage over a weekend night; every request is answered or redelivered long before.",
        float,
    )
    unanswered_after_seconds: float = _setting(
        120.0,
        "Seconds a Job may have ended (or been deleted) without a confirmed reply before any handler answers it "
        "from the Job itself: its request left the queue unanswered (it expired after going back to the queue, "
        "or its handler was killed). Longer than a live handler takes to reply (log upload and publish retries "
        "included), so it rarely answers twice. 0: never.",
        float,
    )
    instance: str = _setting(
        "",
        "Name of this installation, set as the cloud-worker.mstc.io/instance label of its Jobs. When set, the "
        "handler follows and cancels only Jobs with its own name, so installations sharing a namespace keep "
        "apart. Empty: no instance label (every Job managed by a cloud worker in the namespace).",
        commands=HANDLERS + STATUS_LOGS,
    )
    log_tail_lines: int = _setting(50, "Lines of the pod log included in the reply.", int,
                                   commands=HANDLERS + ("status",))
    log_tail_bytes: int = _setting(8192, "Upper bound of the log tail in the reply, in bytes.", int,
                                   commands=HANDLERS + ("status",))
    watch_timeout_seconds: int = _setting(
        240,
        "Server-side timeoutSeconds of each watch request; the client-side read timeout is 15 s more. "
        "Below the API server's 5-minute minimum request timeout so our side renews first.",
        int,
    )
    watch_stall_seconds: float = _setting(
        90.0,
        "Seconds a watch may go without any event or bookmark before it is resumed from the last version seen "
        "(one watch request): a connection a proxy dropped silently is found this soon, not at the read timeout. "
        "It counts as stalled only if the resumed watch at once replays changes the silent one missed, since "
        "API servers send bookmarks (about once a minute) only while the watched resources change. 0: only the "
        "read timeout (watch_timeout_seconds + 15 s).",
        float,
    )
    # --- where Jobs run
    backend: str = _setting(
        "kubernetes",
        "Where Jobs run: kubernetes (one batch/v1 Job per request) or local (one local process per request, "
        "for a single machine and the demo).",
        choices=BACKENDS, commands=HANDLERS + STATUS_LOGS,
    )
    local_images: str = _setting(
        "",
        "TOML file mapping images to local commands, for the local backend. Empty: examples/images.toml "
        "of the source checkout.",
    )
    local_state_dir: str = _setting(
        "",
        "Folder of a local-mode handler's jobs (the manifest, log and outcome of each), which `cloud-worker status` "
        "and `logs` read. One handler runs the jobs of a folder, so cancels and redeliveries always reach the "
        "process that runs the job: a second handler given the same folder is refused. Empty: "
        "cloud-worker-<uid> in the system's temporary folder (/tmp).",
        commands=HANDLERS + STATUS_LOGS,
    )
    # --- process
    http_port: int = _setting(
        8080, "Port of /healthz, /readyz and /metrics, and of `cloud-worker serve`. 0: no HTTP server (consume only).",
        int,
    )
    http_host: str = _setting(
        "0.0.0.0",
        "Address the HTTP listeners bind: `cloud-worker serve` (its port and the probes' own) and the /healthz, "
        "/readyz and /metrics of consume. 0.0.0.0: every interface, as a pod needs; 127.0.0.1 keeps them to this "
        "machine (behind a local proxy, or a trial with CLOUD_WORKER_HTTP_AUTH=none).",
    )
    http_threads: int = _setting(
        32,
        "Threads of `cloud-worker serve` (gunicorn gthread, one process): each synchronous request holds one "
        "for its Job's whole run, and at most this many minus one wait at once (the next is answered 503 with "
        "Retry-After), so polls and probes always find a free thread; keep it above the synchronous calls expected "
        "at once.",
        int, commands=SERVE,
    )
    http_auth: str = _setting(
        "token",
        "Authentication of `cloud-worker serve`: token (a bearer token on every route but /healthz, /readyz and "
        "/metrics; serve refuses to start without one) or none (only behind a gateway that authenticates).",
        commands=SERVE, choices=("token", "none"),
    )
    http_token: str = _setting(
        "",
        "Bearer token `cloud-worker serve` requires (from a Secret; never a flag, which `ps` would show). Prefer "
        "CLOUD_WORKER_HTTP_TOKEN_FILE: a file is re-read when it changes, so the token can be rotated without a "
        "restart.",
        commands=SERVE, secret=True,
    )
    http_token_file: str = _setting(
        "",
        "File holding the bearer tokens `cloud-worker serve` accepts, one per line (two while rotating); "
        "re-read when it changes.",
        commands=SERVE,
    )
    http_probe_port: int = _setting(
        8081,
        "Port of /healthz, /readyz and /metrics on their own listener in `cloud-worker serve`, so probes answer "
        "within a second however busy the request threads are. 0: probes on the main port only.",
        int, commands=SERVE,
    )
    http_async_limit: int = _setting(
        256,
        "Asynchronous requests (Prefer: respond-async) one `cloud-worker serve` process follows at once, a "
        "thread each; more are answered 503 with Retry-After rather than starting threads without bound.",
        int, commands=SERVE,
    )
    heartbeat_stale_seconds: float = _setting(
        30.0, "Age of the consume loop's heartbeat after which /healthz answers 503, in seconds.", float
    )
    log_level: str = _setting("INFO", "Level of the handler's log lines: DEBUG, INFO, WARNING or ERROR.")
    log_format: str = _setting("auto", "Log format: json, text, or auto (text on a terminal, else json).",
                               choices=("auto", "json", "text"))

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
        if self.max_attempts < 1:
            problems.append("CLOUD_WORKER_MAX_ATTEMPTS must be at least 1")
        if self.retry_delay_seconds < 0:
            problems.append("CLOUD_WORKER_RETRY_DELAY_SECONDS must not be negative")
        if self.max_body_bytes < 1:
            problems.append("CLOUD_WORKER_MAX_BODY_BYTES must be positive")
        if self.log_format not in {"auto", "json", "text"}:
            problems.append("CLOUD_WORKER_LOG_FORMAT must be auto, json or text")
        if self.unknown_fields not in {"ignore", "reject"}:
            problems.append("CLOUD_WORKER_UNKNOWN_FIELDS must be ignore or reject")
        if self.job_log_max_bytes < 1:
            problems.append("CLOUD_WORKER_JOB_LOG_MAX_BYTES must be positive")
        if not 0 < self.minio_service_port < 65536:
            problems.append("MINIO_SERVICE_PORT must be a TCP port (1-65535)")
        if self.http_auth not in {"token", "none"}:
            problems.append("CLOUD_WORKER_HTTP_AUTH must be token or none")
        if self.http_async_limit < 1:
            problems.append("CLOUD_WORKER_HTTP_ASYNC_LIMIT must be at least 1")
        if any(not 1 <= code <= 255 for code in self.job_fail_fast_exit_codes):
            problems.append("CLOUD_WORKER_JOB_FAIL_FAST_EXIT_CODES must list exit codes from 1 to 255")
        if self.delivery_limit < 1:
            problems.append("CLOUD_WORKER_DELIVERY_LIMIT must be at least 1")
        if self.publish_timeout_seconds <= 0:
            problems.append("CLOUD_WORKER_PUBLISH_TIMEOUT_SECONDS must be positive")
        if self.log_upload_timeout_seconds <= 0:
            problems.append("CLOUD_WORKER_LOG_UPLOAD_TIMEOUT_SECONDS must be positive")
        if self.unanswered_after_seconds < 0:
            problems.append("CLOUD_WORKER_UNANSWERED_AFTER_SECONDS must not be negative")
        if self.unschedulable_grace_seconds < 0:
            problems.append("CLOUD_WORKER_UNSCHEDULABLE_GRACE_SECONDS must not be negative")
        if self.backend not in BACKENDS:
            problems.append(f"CLOUD_WORKER_BACKEND must be one of {', '.join(BACKENDS)}")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Settings:
        """Build settings from an environment mapping, then apply already-typed overrides (CLI flags)."""
        known = {env_name(f) for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in environ
                         if k.startswith(PREFIX) and k not in known and not _is_service_link(k, environ[k]))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)} (see the README's configuration table)")
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = env_name(f)
            if name in environ:
                try:
                    values[f.name] = f.metadata["parse"](environ[name])
                except ValueError as exc:
                    raise ConfigError(f"{name}={environ[name]!r}: {_expected(f.metadata['parse'], exc)}") from exc
        values.update({k: v for k, v in (overrides or {}).items() if v is not None})
        if not values.get("namespace"):
            values["namespace"] = _default_namespace()
        return cls(**values)

    @property
    def cancel_queue_name(self) -> str:
        return self.cancel_queue or f"{self.queue}.cancel"

    @property
    def job_resources_spec(self) -> dict[str, Any]:
        return _json_object(self.job_resources)

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict fit for a log line: no credentials."""
        out = dataclasses.asdict(self)
        out["amqp_url"] = redact_url(self.amqp_url)
        for f in dataclasses.fields(self):
            if f.metadata.get("secret") and out[f.name]:
                out[f.name] = "***"
        return out

    @property
    def s3_endpoint_url(self) -> str:
        """The endpoint bucket names resolve against: AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL)
        when set, else http://MINIO_SERVICE_HOST:MINIO_SERVICE_PORT (the original's)."""
        if self.aws_endpoint_url_s3 or self.aws_endpoint_url:
            return (self.aws_endpoint_url_s3 or self.aws_endpoint_url).rstrip("/")
        host = self.minio_service_host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{self.minio_service_port}"

    def s3_keys(self, named_buckets: bool) -> tuple[str, str] | None:
        """The handler's bucket credentials (access key, secret key), or None when it has
        none: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY win, then MINIO_ROOT_USER/PASSWORD;
        a request that names its buckets (the original's form) falls back to the
        original's minioadmin/minioadmin."""
        if self.aws_access_key_id and self.aws_secret_access_key:
            return self.aws_access_key_id, self.aws_secret_access_key
        if self.minio_root_user and self.minio_root_password:
            return self.minio_root_user, self.minio_root_password
        if named_buckets:
            return self.minio_root_user or "minioadmin", self.minio_root_password or "minioadmin"
        return None


def _expected(parse: Callable[[str], Any], exc: ValueError) -> str:
    """What a value should have been, in words a person acts on (not Python's
    ``invalid literal for int() with base 10``)."""
    words = {int: "expected a whole number, such as 4", float: "expected a number, such as 2.5",
             _int_csv: "expected whole numbers separated by commas, such as 2,64",
             _json_text: 'expected a JSON object, such as {"limits": {"memory": "512Mi"}}'}
    return words.get(parse, str(exc))


def env_name(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("env") or PREFIX + f.name.upper())


def setting_fields() -> list[dataclasses.Field[Any]]:
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
