"""Where the bench takes its timestamps: at the fake API server's store as Jobs are
written (on the real control plane: as the bench's own watch receives them, see
``bench.cluster``), and in a consumer thread as replies arrive.

Every timestamp is ``time.monotonic()`` (CLOCK_MONOTONIC, shared by every process on the
machine), so times taken here, in the subjects' processes and in the bare primitives'
process can be subtracted from one another.
"""

from __future__ import annotations

import json
import threading
import time

import pika

from bench import BenchError


def connect(amqp_url: str) -> pika.BlockingConnection:
    """The bench's own connections: no heartbeat, they may sit idle through a long phase."""
    params = pika.URLParameters(amqp_url)
    params.heartbeat = 0
    return pika.BlockingConnection(params)


def key_of(job_name: str) -> str:
    """Both subjects name a Job ``<jobName>-<suffix>``; the bench's jobNames are unique."""
    return job_name.rsplit("-", 1)[0]


#: Conditions that say how a Job ended, the interim ones first.
VERDICTS = ("SuccessCriteriaMet", "FailureTarget", "Complete", "Failed")


class JobTimes:
    """When each Job was created, its pod started running, and the Job's first verdict came, at
    the API server (``finished``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.created: dict[str, float] = {}
        self.running: dict[str, float] = {}
        self.finished: dict[str, float] = {}
        self.names: dict[str, str] = {}
        #: Each Job's pod, by key: (namespace, pod name) (the cluster finishes a held Job by its pod).
        self.pods: dict[str, tuple[str, str]] = {}
        #: Keys whose Job's and pod's last written state is kept (``objects``): the seeded
        #: namespace's templates.
        self.capture: set[str] = set()
        self.objects: dict[tuple[str, str], dict] = {}

    def record(self, plural: str, kind: str, namespace: str, obj: dict, now: float | None = None) -> None:
        """One write (the fake's) or watch event (the cluster's, stamped ``now`` as its bytes arrived)."""
        now = now if now is not None else time.monotonic()
        name = obj["metadata"]["name"]
        if self.capture and kind != "DELETED":
            owner = name if plural == "jobs" else (obj["metadata"].get("labels") or {}).get("job-name", "")
            if owner and key_of(owner) in self.capture:
                self.objects[(plural, key_of(owner))] = obj
        if plural == "jobs" and kind == "ADDED":
            key = key_of(name)
            with self._cond:
                self.created.setdefault(key, now)
                self.names[key] = name
                self._cond.notify_all()
        if plural == "jobs" and kind in ("ADDED", "MODIFIED"):
            conditions = (obj.get("status") or {}).get("conditions") or []
            # The Job's first verdict: ``SuccessCriteriaMet``/``FailureTarget`` (Kubernetes 1.31+,
            # the fake too) come before ``Complete``/``Failed``, and a subject may answer on them.
            if any(c["type"] in VERDICTS and c["status"] == "True" for c in conditions):
                with self._cond:
                    self.finished.setdefault(key_of(name), now)
                    self._cond.notify_all()
        elif plural == "pods" and kind in ("ADDED", "MODIFIED"):
            job = (obj["metadata"].get("labels") or {}).get("job-name")
            if job:
                with self._cond:
                    self.pods.setdefault(key_of(job), (namespace, name))
                    if (obj.get("status") or {}).get("phase") == "Running":
                        self.running.setdefault(key_of(job), now)
                    self._cond.notify_all()

    def wait(self, table: dict[str, float], keys: list[str], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(k in table for k in keys):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sum(k not in table for k in keys)
                    raise BenchError(f"{missing} of {len(keys)} Job(s) not {what} within {timeout} s")
                self._cond.wait(remaining)


class Replies:
    """Consumes an exclusive reply queue on its own thread, stamping each arrival."""

    def __init__(self, amqp_url: str) -> None:
        self._connection = connect(amqp_url)
        self._channel = self._connection.channel()
        self.queue = self._channel.queue_declare("", exclusive=True).method.queue
        self._channel.basic_consume(self.queue, self._on_reply, auto_ack=True)
        self._cond = threading.Condition()
        self.arrived: dict[str, float] = {}
        self.bodies: dict[str, dict] = {}
        self._thread = threading.Thread(target=self._channel.start_consuming, name="replies", daemon=True)
        self._thread.start()

    def _on_reply(self, _channel, _method, props, body: bytes) -> None:
        now = time.monotonic()
        with self._cond:
            self.arrived.setdefault(props.correlation_id, now)
            self.bodies.setdefault(props.correlation_id, json.loads(body))
            self._cond.notify_all()

    def wait(self, keys: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(k in self.arrived for k in keys):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    missing = sum(k not in self.arrived for k in keys)
                    raise BenchError(f"{missing} of {len(keys)} reply(ies) missing after {timeout} s")
                self._cond.wait(remaining)

    def close(self) -> None:
        self._connection.add_callback_threadsafe(self._channel.stop_consuming)
        self._thread.join(5)
        self._connection.close()
