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

import pika
import pika.exceptions

from handler.core.bucketurl import BucketUrl, parse_bucket_url
from handler.core.config import redact_url
from handler.core.errors import BrokerError, WorkerError
from handler.core.request import PROGRESS_HEADER
from handler.adapters.storage import S3Credentials, open_bucket
from handler.adapters.topology import declare_work_queue

log = logging.getLogger(__name__)

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/%2F"
#: Statuses of the non-terminal (lifecycle) events.
LIFECYCLE = frozenset({"accepted", "started"})
#: Seconds to wait for the broker to answer a connect or confirm a publish.
BROKER_TIMEOUT = 10.0
PIKA_ERRORS = (pika.exceptions.AMQPError, OSError)

#: ``on_event(state, event)``: ``state`` is ``uploaded`` or ``published`` (event None),
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
    def __init__(self, amqp_url: str = DEFAULT_AMQP_URL, exchange: str = "mstc.exchange",
                 routing_key: str = "mstc.queue.work", *, credentials: S3Credentials | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.routing_key = routing_key
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
               wait_seconds: float | None = None, create_buckets: bool = False) -> Reply:
        """Upload, publish, and (unless ``wait`` is False) wait for the reply and download.

        ``input_paths``: files (uploaded by name) and directories (their contents, keeping
        relative paths). ``wait_seconds``: give up with ``NoReply`` after this long (None:
        wait as long as it takes; the handler always replies, at the latest at the Job's
        timeout). ``create_buckets``: create missing buckets first (for the embedded S3).
        """
        notify = on_event or (lambda state, event: None)
        request_id = uuid.uuid4().hex
        base = parse_bucket_url(bucket_url).child(request_id)
        input_url = base.child("input")
        output_url = parse_bucket_url(output_bucket_url) if output_bucket_url else base.child("output")
        self.connect()  # fail on the broker before spending time on uploads
        paths = [input_paths] if isinstance(input_paths, (str, Path)) else list(input_paths)
        self._upload(input_url, output_url, [Path(p) for p in paths], create_buckets)
        notify("uploaded", None)
        body: dict[str, Any] = {"image": image, "jobName": job_name, "inputBucketUrl": str(input_url),
                                "outputBucketUrl": str(output_url)}
        if timeout_minutes is not None:
            body["timeOut"] = timeout_minutes
        link = self._current_link()
        mailbox = link.open_mailbox(request_id) if wait else None
        try:
            link.publish(json.dumps(body).encode(), request_id, with_reply=wait)
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

    # --- inside
    def _current_link(self) -> _Link:
        with self._lock:
            if self._link is None:
                raise BrokerError("the client is closed")
            return self._link

    def _upload(self, input_url: BucketUrl, output_url: BucketUrl, paths: list[Path], create: bool) -> None:
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"input(s) not found: {', '.join(missing)}")
        inputs = open_bucket(input_url, self.credentials)
        if create:
            inputs.ensure_bucket()
            if (output_url.endpoint, output_url.bucket) != (input_url.endpoint, input_url.bucket):
                open_bucket(output_url, self.credentials).ensure_bucket()
        for path in paths:
            if path.is_dir():
                inputs.upload_dir(path)
            else:
                inputs.upload_file(path)

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
    """One connection, its channel and the reply queue, driven by a background thread.

    Other threads never touch the channel: they hand work to the connection's thread
    with ``add_callback_threadsafe`` and wait for it.
    """

    def __init__(self, amqp_url: str, exchange: str, routing_key: str) -> None:
        self.exchange, self.routing_key = exchange, routing_key
        shown = redact_url(amqp_url)
        try:
            params = pika.URLParameters(amqp_url)
        except (ValueError, TypeError) as exc:
            raise BrokerError(f"not a valid AMQP URL {shown!r}: {exc}") from exc
        params.connection_attempts = 1
        params.socket_timeout = params.stack_timeout = BROKER_TIMEOUT
        params.heartbeat = 30
        # Not "mstc-cloud-worker": that names the handlers' connections (tools and tests look for them).
        params.client_properties = {"connection_name": "cloud-worker-client"}
        self.connection: pika.BlockingConnection | None = None
        try:
            self.connection = pika.BlockingConnection(params)
            self.channel = self._declare()
            self.reply_queue = self.channel.queue_declare("", exclusive=True).method.queue
            self.channel.basic_consume(self.reply_queue, self._on_reply, auto_ack=True)
        except PIKA_ERRORS as exc:
            self._close_connection()
            raise BrokerError(f"cannot connect to the broker at {shown}: {exc!r}") from exc
        self._mailboxes: dict[str, queue.Queue] = {}
        self._guard = threading.Lock()
        self._closing = threading.Event()
        self._lost: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="cloud-worker-client", daemon=True)
        self._thread.start()

    def _declare(self):
        channel = declare_work_queue(self.connection, self.exchange, self.routing_key)
        channel.confirm_delivery()
        return channel

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._lost is None

    def open_mailbox(self, correlation_id: str) -> queue.Queue:
        box: queue.Queue = queue.Queue()
        with self._guard:
            self._mailboxes[correlation_id] = box
        return box

    def close_mailbox(self, correlation_id: str) -> None:
        with self._guard:
            self._mailboxes.pop(correlation_id, None)

    def publish(self, body: bytes, request_id: str, with_reply: bool) -> None:
        props = pika.BasicProperties(
            content_type="application/json", correlation_id=request_id, message_id=request_id,
            reply_to=self.reply_queue if with_reply else None, delivery_mode=pika.DeliveryMode.Persistent,
            headers={PROGRESS_HEADER: "true"} if with_reply else None,
        )
        self._call(lambda: self.channel.basic_publish(self.exchange, self.routing_key, body, props, mandatory=True),
                   f"publishing request {request_id}")

    def _call(self, fn: Callable[[], None], what: str) -> None:
        done = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # handed to the caller's thread below
                failure.append(exc)
            finally:
                done.set()

        try:
            self.connection.add_callback_threadsafe(run)
        except (AttributeError, *PIKA_ERRORS) as exc:
            raise BrokerError(f"{what}: the broker connection is gone: {exc!r}") from exc
        if not done.wait(BROKER_TIMEOUT):
            raise BrokerError(f"{what}: the broker did not confirm within {BROKER_TIMEOUT:g} s")
        if failure:
            raise BrokerError(f"{what}: {failure[0]!r}") from failure[0]

    def _on_reply(self, _channel: Any, _method: Any, props: pika.BasicProperties, body: bytes) -> None:
        with self._guard:
            box = self._mailboxes.get(props.correlation_id or "")
        if box is None:
            log.debug("dropping a reply for correlation id %r: nobody waits for it", props.correlation_id)
            return
        try:
            event = json.loads(body)
        except ValueError:
            log.warning("dropping a reply for %s that is not JSON: %r", props.correlation_id, body[:200])
            return
        if isinstance(event, dict):
            box.put(event)

    def _loop(self) -> None:
        try:
            while not self._closing.is_set():
                self.connection.process_data_events(time_limit=0.2)
        except PIKA_ERRORS as exc:
            self._lost = exc
            log.warning("broker connection lost: %r", exc)
        finally:
            self._close_connection()
            # Whoever still waits learns why no reply will come on this connection.
            reason = self._lost or BrokerError("the client was closed")
            with self._guard:
                for box in self._mailboxes.values():
                    box.put(reason)

    def _close_connection(self) -> None:
        try:
            if self.connection is not None and self.connection.is_open:
                self.connection.close()
        except PIKA_ERRORS as exc:
            log.debug("while closing: %r", exc)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(BROKER_TIMEOUT)


def delete_queue(amqp_url: str, queue_name: str) -> None:
    """Delete a throwaway queue (the demo's own work queue) once nothing uses it."""
    try:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            connection.channel().queue_delete(queue_name)
        finally:
            connection.close()
    except PIKA_ERRORS as exc:
        raise BrokerError(f"deleting queue {queue_name}: {exc!r}") from exc
