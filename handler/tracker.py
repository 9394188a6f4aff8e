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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from handler.errors import ResourceGone, WorkerError
from handler.retry import Backoff

log = logging.getLogger(__name__)
Json = dict[str, Any]
KINDS = ("jobs", "pods")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


class WatchSource(Protocol):
    def list(self, kind: str, selector: str) -> tuple[list[Json], str]: ...
    def watch(self, kind: str, selector: str, resource_version: str, stopper: list) -> Any: ...


@dataclass
class Snapshot:
    job: Json | None
    pods: list[Json]
    #: The Job was in the cache at some point (so its absence now means deletion).
    seen: bool


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
        for w in list(self._watches):
            w.stop()
        for thread in self._threads:
            thread.join(timeout=2)

    def healthy(self, stale_after: float) -> bool:
        return all(t.is_alive() for t in self._threads) and (
            time.monotonic() - self.counters.last_contact < stale_after
        )

    # --- queries
    def snapshot(self, job_name: str) -> Snapshot:
        with self._cond:
            pods = [p for p in self._objects["pods"].values() if pod_job_name(p) == job_name]
            return Snapshot(self._objects["jobs"].get(job_name), pods, job_name in self._seen)

    def wait(self, timeout: float) -> None:
        """Block until any change arrives (or ``wake``), at most ``timeout`` seconds."""
        with self._cond:
            if not self._stopping:
                self._cond.wait(timeout=max(0.0, timeout))

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # --- the watch loop
    def _relist(self, kind: str) -> str:
        items, version = self.source.list(kind, self.selector)
        with self._cond:
            self._objects[kind] = {o["metadata"]["name"]: o for o in items}
            if kind == "jobs":
                self._seen.update(self._objects[kind])
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
            elif kind_of_event == "DELETED":
                self._objects[kind].pop(obj["metadata"]["name"], None)
            elif kind_of_event != "BOOKMARK":
                log.warning("skipping %s watch event of unknown type %r", kind, kind_of_event)
                return None
            self.counters.events += 1
            self._cond.notify_all()
        return version

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
