"""The client side of the loop, for programs and for ``cloud-worker submit``.

``Client.submit`` does what the seed's Python client did, and the rest of the loop:
upload the inputs under a prefix of their own (``<prefix>/<request-id>/input/``, so
concurrent requests never see each other's files), publish the seed's request (JSON body,
``reply_to``, ``correlation_id``, ``message_id`` = request id, persistent) asking for
lifecycle events, wait for the terminal reply with that correlation id, and download the
outputs (``<prefix>/<request-id>/output/`` unless an output URL is given).

One Client may be used from several threads at once. It owns one broker connection and
one exclusive, auto-named reply queue; a background thread owns the connection (pika's
connections belong to one thread), consumes the reply queue and hands each reply to the
submission waiting for its correlation id. Replies nobody waits for are dropped.

The request is checked by the handler's own parser (``request.parse_request``, with the
client's settings) before anything is uploaded, so a request the handler would reject
leaves no orphaned inputs behind. ``Client.cancel`` publishes the cancel event (see the
README's "Cancel") and waits for its answer on the same reply queue.

Like the CLI, this is an edge: it reads S3 credentials from the environment mapping it
is given (``os.environ`` when given none, as the AWS SDKs do).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handler.adapters.amqp import ClientLink
from handler.adapters.storage import Bucket, S3Credentials, open_bucket
from handler.core.bucketurl import BucketUrl, check_bucket_host, parse_bucket_url
from handler.core.config import Settings
from handler.core.errors import BrokerError, Rejected, ReplyUndeliverable, WorkerError
from handler.core.messages import CANCEL_TYPE, Message, Publication
from handler.core.profiles import NAME, profile_queue
from handler.core.request import PROGRESS_HEADER, parse_request

log = logging.getLogger(__name__)

#: The handler's own defaults (a local RabbitMQ, the seed's exchange and queue).
_DEFAULTS = Settings()
DEFAULT_AMQP_URL = _DEFAULTS.amqp_url
#: Statuses of the non-terminal (lifecycle) events.
LIFECYCLE = frozenset({"accepted", "started"})
#: Seconds to wait for the broker to answer a connect or confirm a publish.
BROKER_TIMEOUT = 10.0
#: Seconds ``cancel`` waits for the handler's answer by default: a handler answers a
#: cancel at once, unless all of its slots are following Jobs (see the README's "Cancel").
CANCEL_WAIT_SECONDS = 60.0
#: The ``source`` of the cancel events this client sends.
CLIENT_SOURCE = "urn:mstc:cloud-worker:client"

#: ``on_event(state, event)``: ``state`` is ``checked`` (the request is valid), ``uploading`` (the
#: input bucket answered), ``uploaded`` or ``published`` (event None),
#: then ``accepted``, ``started`` and the terminal status with the CloudEvent as a dict.
OnEvent = Callable[[str, "dict[str, Any] | None"], None]


class NoReply(WorkerError):
    """No terminal reply came within the wait, or the broker connection was lost while
    waiting. The request may still run: its outputs land under ``output_url``."""


@dataclass(frozen=True)
class Reply:
    #: Also the request's ``correlation_id`` and ``message_id``.
    request_id: str
    input_url: str
    output_url: str
    #: The terminal CloudEvent (None when submitted without waiting).
    event: dict[str, Any] | None
    #: Lifecycle events received before it, in order.
    events: tuple[dict[str, Any], ...] = ()
    downloaded: tuple[Path, ...] = ()

    @property
    def status(self) -> str:
        """``succeeded``, ``failed``, ``timedout``, ``rejected`` (or ``submitted``)."""
        return self.data.get("status", "submitted") if self.event is not None else "submitted"

    @property
    def data(self) -> dict[str, Any]:
        return (self.event or {}).get("data") or {}


class Client:
    def __init__(self, amqp_url: str = DEFAULT_AMQP_URL, exchange: str = _DEFAULTS.exchange,
                 routing_key: str = _DEFAULTS.queue, *, credentials: S3Credentials | None = None,
                 environ: Mapping[str, str] | None = None, settings: Settings | None = None,
                 cancel_routing_key: str | None = None) -> None:
        self.amqp_url = amqp_url
        #: What the requests are checked against before anything is uploaded (the handler's defaults).
        self.settings = settings or Settings()
        self.exchange = exchange
        self.routing_key = routing_key
        #: The handlers' cancel queue (CLOUD_WORKER_CANCEL_QUEUE): a lane of its own, answered however busy they are.
        self.cancel_routing_key = cancel_routing_key or f"{routing_key}.cancel"
        self._credentials = credentials
        self._environ = environ
        self._link: _Link | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def credentials(self) -> S3Credentials:
        if self._credentials is None:
            self._credentials = S3Credentials.from_env(os.environ if self._environ is None else self._environ)
        return self._credentials

    def connect(self) -> None:
        """Connect now (``submit`` connects on first use); raises ``BrokerError``."""
        with self._lock:
            if self._link is None or not self._link.alive:
                if self._link is not None:
                    self._link.close()
                self._link = _Link(self.amqp_url, self.exchange, self.routing_key)

    def close(self) -> None:
        with self._lock:
            if self._link is not None:
                self._link.close()
                self._link = None

    def submit(self, image: str, job_name: str, input_paths: Iterable[str | Path] | str | Path, bucket_url: str,
               output_bucket_url: str | None = None, timeout_minutes: float | None = None, *, wait: bool = True,
               on_event: OnEvent | None = None, download_to: str | Path | None = None,
               wait_seconds: float | None = None, create_buckets: bool = False,
               expire_after: float | None = None, request_id: str | None = None,
               profile: str | None = None) -> Reply:
        """Upload, publish, and (unless ``wait`` is False) wait for the reply and download.

        ``input_paths``: files (uploaded by name) and directories (their contents, keeping
        relative paths). ``wait_seconds``: give up with ``NoReply`` after this long (None:
        wait as long as it takes; the handler always replies, at the latest at the Job's
        timeout). ``create_buckets``: create missing buckets first (for the embedded S3).
        ``expire_after``: seconds after which the broker drops the request if no handler took it.
        ``request_id``: the id to give the request (default: a new random one).
        ``profile``: the Job profile to run it with (default: the handler's default profile);
        the request goes to the queue of that profile's lane, or to the work queue when the
        profile has none (the handler forwards it as needed either way).
        Raises ``Rejected`` before anything is uploaded when the handler would reject the request
        (whether the handler has the profile only the handler knows).
        """
        notify = on_event or (lambda state, event: None)
        request_id = request_id or uuid.uuid4().hex
        # A bucket URL the handler would refuse (its host included) is the caller's to fix,
        # like one that does not parse: the same InvalidBucketUrl either way.
        base = parse_bucket_url(bucket_url).child(request_id)
        check_bucket_host(base, self.settings)
        input_url = base.child("input")
        output_url = parse_bucket_url(output_bucket_url) if output_bucket_url else base.child("output")
        check_bucket_host(output_url, self.settings)
        body: dict[str, Any] = {"image": image, "jobName": job_name, "inputBucketUrl": str(input_url),
                                "outputBucketUrl": str(output_url)}
        if timeout_minutes is not None:
            body["timeOut"] = timeout_minutes
        # The handler's own check, before any upload: a request it would reject leaves nothing behind.
        parse_request(Message(json.dumps(body).encode(), "application/json", message_id=request_id), self.settings)
        if profile is not None:
            if NAME.fullmatch(profile) is None:
                raise Rejected("profile", "UnknownProfile", f"{profile[:64]!r} is not a profile name (1-63 lower-case "
                               "letters, digits and '-')")
            body["profile"] = profile
        notify("checked", None)
        paths = [Path(p) for p in ([input_paths] if isinstance(input_paths, (str, Path)) else input_paths)]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"input(s) not found: {', '.join(missing)}")
        credentials = self.credentials  # StorageConfigError when there are none, before anything is tried
        self.connect()  # fail on the broker before spending time on uploads
        inputs = self._buckets(input_url, output_url, credentials, create_buckets)
        notify("uploading", None)
        for path in paths:
            if path.is_dir():
                inputs.upload_dir(path)
            else:
                inputs.upload_file(path)
        notify("uploaded", None)
        link = self._current_link()
        mailbox = link.open_mailbox(request_id) if wait else None
        try:
            self._publish_request(link, json.dumps(body).encode(), request_id, wait, expire_after, profile)
            log.info("submitted request %s (%s, %s): inputs %s", request_id, image, job_name, input_url)
            notify("published", None)
            if mailbox is None:
                return Reply(request_id, str(input_url), str(output_url), None)
            event, events = self._wait(mailbox, request_id, notify, wait_seconds)
        finally:
            if mailbox is not None:
                link.close_mailbox(request_id)
        downloaded: tuple[Path, ...] = ()
        status = (event.get("data") or {}).get("status")
        if download_to is not None and status != "rejected":
            downloaded = tuple(open_bucket(output_url, self.credentials).download_all(Path(download_to)))
        return Reply(request_id, str(input_url), str(output_url), event, tuple(events), downloaded)

    def cancel(self, target: str, reason: str | None = None, *, by_job_name: bool = False,
               wait_seconds: float | None = CANCEL_WAIT_SECONDS) -> dict[str, Any]:
        """Cancel a request (``target`` is its request id, or with ``by_job_name`` its Job's
        name) and return the handler's answer, the ``cancel.result`` event: its
        ``data.status`` is ``cancelled``, ``notFound`` or ``finished``. ``NoReply`` when no
        answer came within ``wait_seconds``."""
        self.connect()
        event_id = uuid.uuid4().hex
        data = {"jobName" if by_job_name else "requestId": target}
        if reason:
            data["reason"] = reason
        event = {"specversion": "1.0", "type": CANCEL_TYPE, "source": CLIENT_SOURCE, "id": event_id,
                 "datacontenttype": "application/json", "data": data}
        link = self._current_link()
        mailbox = link.open_mailbox(event_id)
        body = json.dumps(event).encode()
        try:
            # Expiring with the wait: a cancel nobody answered in time is dropped by the broker,
            # never acted on later, when nobody expects it.
            try:
                link.publish(body, event_id, with_reply=True, content_type="application/cloudevents+json",
                             progress=False, routing_key=self.cancel_routing_key, expiration_seconds=wait_seconds)
            except ReplyUndeliverable:  # no cancel queue: handlers older than the cancel lane
                log.info("no queue %s: sending the cancel to the work queue", self.cancel_routing_key)
                link.publish(body, event_id, with_reply=True, content_type="application/cloudevents+json",
                             progress=False, expiration_seconds=wait_seconds)
            log.info("cancel of %s sent (event %s)", target, event_id)
            give_up = None if wait_seconds is None else time.monotonic() + wait_seconds
            while True:
                left = None if give_up is None else give_up - time.monotonic()
                if left is not None and left <= 0:
                    raise NoReply(f"no answer to the cancel of {target} within {wait_seconds:g} s (is a handler "
                                  f"consuming {self.cancel_routing_key}?); it was dropped unanswered and will not "
                                  "act later")
                try:
                    item = mailbox.get(timeout=left)
                except queue.Empty:
                    continue
                if isinstance(item, Exception):
                    raise NoReply(f"lost the broker connection while waiting for the cancel of {target}: "
                                  f"{item}") from item
                return item
        finally:
            link.close_mailbox(event_id)

    # --- inside
    def _publish_request(self, link: _Link, body: bytes, request_id: str, wait: bool, expire_after: float | None,
                         profile: str | None) -> None:
        """To the profile's queue when it has one (the handler consumes it on its lane), else the work queue."""
        if profile is not None:
            try:
                link.publish(body, request_id, with_reply=wait, expiration_seconds=expire_after,
                             routing_key=profile_queue(self.routing_key, profile))
                return
            except ReplyUndeliverable:  # a profile without maxInFlight, or handlers older than profiles
                log.info("no queue for profile %s: sending the request to the work queue", profile)
        link.publish(body, request_id, with_reply=wait, expiration_seconds=expire_after)

    def _current_link(self) -> _Link:
        with self._lock:
            if self._link is None:
                raise BrokerError("the client is closed")
            return self._link

    @staticmethod
    def _buckets(input_url: BucketUrl, output_url: BucketUrl, credentials: S3Credentials, create: bool) -> Bucket:
        """The input bucket, known to exist (made, with ``create``, as is the output bucket):
        an endpoint that is down or a missing bucket fails here, before any upload."""
        inputs = open_bucket(input_url, credentials)
        if not create:
            inputs.require()
            return inputs
        inputs.ensure_bucket()
        if (output_url.endpoint, output_url.bucket) != (input_url.endpoint, input_url.bucket):
            open_bucket(output_url, credentials).ensure_bucket()
        return inputs

    def _wait(self, mailbox: queue.Queue, request_id: str, notify: OnEvent,
              wait_seconds: float | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        give_up = None if wait_seconds is None else time.monotonic() + wait_seconds
        events: list[dict[str, Any]] = []
        while True:
            left = None if give_up is None else give_up - time.monotonic()
            if left is not None and left <= 0:
                raise NoReply(f"no reply to request {request_id} within {wait_seconds:g} s")
            try:
                item = mailbox.get(timeout=left)
            except queue.Empty:
                continue
            if isinstance(item, Exception):
                raise NoReply(f"lost the broker connection while waiting for request {request_id}: {item}") from item
            status = (item.get("data") or {}).get("status", "")
            notify(status, item)
            if status not in LIFECYCLE:
                return item, events
            events.append(item)


class _Link:
    """The broker connection (``amqp.ClientLink``) and the submissions waiting on it,
    each with a mailbox keyed by its correlation id."""

    def __init__(self, amqp_url: str, exchange: str, routing_key: str) -> None:
        self._mailboxes: dict[str, queue.Queue] = {}
        self._guard = threading.Lock()
        self.amqp = ClientLink(amqp_url, exchange, routing_key, timeout=BROKER_TIMEOUT, on_reply=self._on_reply,
                               on_lost=self._on_lost)

    @property
    def alive(self) -> bool:
        return self.amqp.alive

    def open_mailbox(self, correlation_id: str) -> queue.Queue:
        box: queue.Queue = queue.Queue()
        with self._guard:
            self._mailboxes[correlation_id] = box
        return box

    def close_mailbox(self, correlation_id: str) -> None:
        with self._guard:
            self._mailboxes.pop(correlation_id, None)

    def publish(self, body: bytes, request_id: str, with_reply: bool, expiration_seconds: float | None = None,
                content_type: str = "application/json", progress: bool = True, routing_key: str | None = None) -> None:
        self.amqp.publish(Publication(
            self.amqp.exchange, routing_key or self.amqp.routing_key, body, content_type, request_id,
            {PROGRESS_HEADER: "true"} if with_reply and progress else {}, message_id=request_id,
            reply_to=self.amqp.reply_queue if with_reply else None, expiration_seconds=expiration_seconds))

    def _on_reply(self, correlation_id: str, event: dict[str, Any]) -> None:
        with self._guard:
            box = self._mailboxes.get(correlation_id)
        if box is None:
            log.debug("dropping a reply for correlation id %r: nobody waits for it", correlation_id)
            return
        box.put(event)

    def _on_lost(self, reason: BaseException) -> None:
        # Whoever still waits learns why no reply will come on this connection.
        with self._guard:
            for box in self._mailboxes.values():
                box.put(reason)

    def close(self) -> None:
        self.amqp.close()
