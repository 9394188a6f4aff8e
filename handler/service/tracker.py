"""One shared watch per process over the handler's Jobs and their pods.

Instead of a watch per Job, the process keeps an informer-style cache: list the Jobs
(and pods) carrying the handler's label, then watch from that list's
``resourceVersion``; on a dropped stream resume from the last version seen, on 410
Gone re-list and watch again (kopf's ``watching.py`` does the same). Every request
in flight waits on this cache, so a busy handler costs the API server two long-lived
watches instead of one per Job, and never a poll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from handler.core.errors import ResourceGone, WorkerError
from handler.core.retry import Backoff

log = logging.getLogger(__name__)
Json = dict[str, Any]
KINDS = ("jobs", "pods")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
#: Deleted Jobs whose final state is kept for the requests still following them.
GONE_KEEP = 1024


class WatchSource(Protocol):
    def list(self, kind: str, selector: str) -> tuple[list[Json], str]: ...
    def watch(self, kind: str, selector: str, resource_version: str, stopper: list) -> Any: ...


@dataclass
class Snapshot:
    job: Json | None
    pods: list[Json]
    #: The Job was in the cache at some point (so its absence now means deletion).
    seen: bool
    #: The Job as last seen, even once deleted (its final annotations say whether it was
    #: cancelled); None if never seen or forgotten.
    last: Json | None = None
    #: Changes so far to this Job and its pods: ``wait(..., since=version)`` returns at
    #: once if one arrived after this snapshot was taken.
    version: int = 0


@dataclass
class _Counters:
    events: int = 0
    relists: int = 0
    restarts: int = 0
    last_contact: float = field(default_factory=time.monotonic)


def pod_job_name(pod: Mapping[str, Any]) -> str | None:
    labels = pod["metadata"].get("labels") or {}
    return next((labels[k] for k in JOB_NAME_LABELS if k in labels), None)


class JobTracker:
    def __init__(self, source: WatchSource, selector: str, backoff: Backoff | None = None) -> None:
        self.source = source
        self.selector = selector
        self.backoff = backoff or Backoff(base=0.1, cap=5.0)
        self._cond = threading.Condition()
        self._objects: dict[str, dict[str, Json]] = {kind: {} for kind in KINDS}
        self._seen: set[str] = set()
        self._gone: OrderedDict[str, Json] = OrderedDict()
        # Pods by their Job's name (a snapshot must not scan every pod), and the change
        # counter and waiters of each Job: an event wakes only the requests following
        # that Job, not every thread in flight.
        self._pods_by_job: dict[str, dict[str, Json]] = {}
        self._changes = 0
        self._changed: dict[str, int] = {}
        self._waiters: dict[str, set[threading.Event]] = {}
        self._stopping = False
        self._watches: list = []
        self._threads: list[threading.Thread] = []
        self.counters = _Counters()

    # --- lifecycle
    def start(self) -> None:
        """List both kinds now (so the cache is complete before work starts), then watch."""
        versions = {kind: self._relist(kind) for kind in KINDS}
        for kind in KINDS:
            thread = threading.Thread(target=self._run, args=(kind, versions[kind]), name=f"watch-{kind}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            self._set_waiters(None)
        # A watch that was still connecting when stopped forgets it (the client's
        # ``stream()`` clears its stop flag as it starts), so keep stopping until the
        # threads are gone rather than waiting for the stream's next event.
        deadline = time.monotonic() + 2
        for thread in self._threads:
            while thread.is_alive() and time.monotonic() < deadline:
                for w in list(self._watches):
                    w.stop()
                thread.join(timeout=0.05)

    def healthy(self, stale_after: float) -> bool:
        return all(t.is_alive() for t in self._threads) and (
            time.monotonic() - self.counters.last_contact < stale_after
        )

    # --- queries
    def snapshot(self, job_name: str) -> Snapshot:
        with self._cond:
            pods = list(self._pods_by_job.get(job_name, {}).values())
            job = self._objects["jobs"].get(job_name)
            return Snapshot(job, pods, job_name in self._seen, job or self._gone.get(job_name),
                            self._changed.get(job_name, 0))

    def find(self, annotation: str, value: str) -> list[Json]:
        """The cached Jobs whose ``annotation`` is ``value``."""
        with self._cond:
            return [job for job in self._objects["jobs"].values()
                    if (job["metadata"].get("annotations") or {}).get(annotation) == value]

    def wait(self, timeout: float, job_name: str | None = None, since: int | None = None) -> None:
        """Block until a change arrives (or ``wake``), at most ``timeout`` seconds.

        With ``job_name``, only a change to that Job or its pods ends the wait, and with
        ``since`` (a snapshot's ``version``) one that arrived after the snapshot ends it
        at once, so no change is missed between looking and waiting.
        """
        if job_name is None:
            with self._cond:
                if not self._stopping:
                    self._cond.wait(timeout=max(0.0, timeout))
            return
        event = threading.Event()
        with self._cond:
            if self._stopping or (since is not None and self._changed.get(job_name, 0) != since):
                return
            self._waiters.setdefault(job_name, set()).add(event)
        try:
            event.wait(max(0.0, timeout))
        finally:
            with self._cond:
                waiters = self._waiters.get(job_name, set())
                waiters.discard(event)
                if not waiters:
                    self._waiters.pop(job_name, None)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
            self._set_waiters(None)

    def _set_waiters(self, job_name: str | None) -> None:
        """Wake the waiters of ``job_name`` (None: all); the caller holds the lock."""
        groups = self._waiters.values() if job_name is None else [self._waiters.get(job_name, ())]
        for waiters in groups:
            for event in waiters:
                event.set()

    def _touch(self, job_name: str | None) -> None:
        """Count a change to ``job_name``'s Job or pods and wake its waiters (lock held).
        Counters are kept only while the Job or a pod of it is cached."""
        if job_name is None:
            return
        self._changes += 1
        if job_name in self._objects["jobs"] or job_name in self._pods_by_job:
            self._changed[job_name] = self._changes
        else:
            self._changed.pop(job_name, None)
        self._set_waiters(job_name)

    # --- the watch loop
    def _relist(self, kind: str) -> str:
        items, version = self.source.list(kind, self.selector)
        with self._cond:
            previous, self._objects[kind] = self._objects[kind], {o["metadata"]["name"]: o for o in items}
            if kind == "jobs":
                self._seen.update(self._objects[kind])
                for name in previous.keys() - self._objects[kind].keys():  # deleted while we were not watching
                    self._forget(name, previous[name])
                touched = previous.keys() | self._objects[kind].keys()
            else:
                self._pods_by_job = {}
                for name, pod in self._objects[kind].items():
                    self._pods_by_job.setdefault(pod_job_name(pod), {})[name] = pod
                touched = {pod_job_name(p) for p in (*previous.values(), *self._objects[kind].values())}
            for job_name in touched:
                self._touch(job_name)
            self.counters.relists += 1
            self.counters.last_contact = time.monotonic()
            self._cond.notify_all()
        return version

    def _apply(self, kind: str, event: Json) -> str | None:
        obj = event.get("object") or {}
        version = (obj.get("metadata") or {}).get("resourceVersion")
        kind_of_event = event.get("type")
        with self._cond:
            self.counters.last_contact = time.monotonic()
            if kind_of_event in ("ADDED", "MODIFIED"):
                name = obj["metadata"]["name"]
                self._objects[kind][name] = obj
                if kind == "jobs":
                    self._seen.add(name)
                else:
                    self._pods_by_job.setdefault(pod_job_name(obj), {})[name] = obj
            elif kind_of_event == "DELETED":
                name = obj["metadata"]["name"]
                self._objects[kind].pop(name, None)
                if kind == "jobs":
                    self._forget(name, obj)
                else:
                    pods = self._pods_by_job.get(pod_job_name(obj), {})
                    pods.pop(name, None)
                    if not pods:
                        self._pods_by_job.pop(pod_job_name(obj), None)
            elif kind_of_event != "BOOKMARK":
                log.warning("skipping %s watch event of unknown type %r", kind, kind_of_event)
                return None
            if kind_of_event != "BOOKMARK":
                self._touch(obj["metadata"]["name"] if kind == "jobs" else pod_job_name(obj))
            self.counters.events += 1
            self._cond.notify_all()
        return version

    def _forget(self, name: str, final: Json) -> None:
        """Keep a deleted Job's final state for a while (bounded, oldest dropped first)."""
        self._gone[name] = final
        self._gone.move_to_end(name)
        while len(self._gone) > GONE_KEEP:
            self._gone.popitem(last=False)

    def _run(self, kind: str, version: str) -> None:
        failures = 0
        while not self._stopping:
            try:
                for event in self.source.watch(kind, self.selector, version, self._watches):
                    version = self._apply(kind, event) or version
                    failures = 0
                    if self._stopping:
                        return
                # The server ended the stream (timeoutSeconds): resume from where we are.
            except ResourceGone:
                log.info("%s watch expired at resourceVersion %s; re-listing", kind, version)
                version = self._relist_quietly(kind, version)
            except Exception as exc:  # noqa: BLE001 - the watch thread must outlive any bad event
                if self._stopping:
                    return
                failures += 1
                self.counters.restarts += 1
                delay = self.backoff.delay(min(failures, 6))
                log.warning("%s watch broke (%s); resuming from %s in %.2f s", kind, exc, version, delay)
                time.sleep(delay)

    def _relist_quietly(self, kind: str, version: str) -> str:
        try:
            return self._relist(kind)
        except WorkerError as exc:
            log.warning("re-listing %s failed (%s); will retry", kind, exc)
            time.sleep(self.backoff.delay(3))
            return version
