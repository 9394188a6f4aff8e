"""One shared watch per process over the handler's Jobs and their pods.

Instead of a watch per Job, the process keeps an informer-style cache: list the Jobs
(and pods) carrying the handler's label, then watch from that list's
``resourceVersion``; on a dropped stream resume from the last version seen, on 410
Gone re-list and watch again (kopf's ``watching.py`` does the same). Every request
in flight waits on this cache, so a busy handler costs the API server two long-lived
watches instead of one per Job, and never a poll. A third, optional, follows the
namespace's ``FailedCreate`` events of Jobs (a field selector: events carry no labels of
ours), so a Job whose pod the API server refuses is reported from its events, again
without a request per Job.

Each watch asks for bookmarks. A watch that brings neither an event nor a bookmark for
``stall_seconds`` is taken as stalled (a proxy or API server that stopped sending but
kept the connection) and restarted from the last version seen, long before the socket's
read timeout would notice.

The cache holds only what the handler reads of each object (``core.trim``), trimmed page
by page as the LIST arrives and event by event, and the Jobs watch may select only the
Jobs still waiting for a reply (``jobs_selector``): a namespace holding thousands of
finished Jobs is then neither listed nor kept. A replied Job leaves that selection (the
API server sends it as ``DELETED``); a redelivery that adopts one hands it back with
``remember``. Pods are selected by label too, and a label on a pod cannot be changed
cheaply, so the pods LIST still brings every finished pod: the cache keeps a pod only
while its Job is cached or its container has not ended, and that LIST runs on the pods
watch's thread, so start-up (and the first Job's creation) does not wait for it; what
reads pods (``snapshot``) does. Everything kept per Job that is no longer cached is
bounded.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from handler.core.errors import ResourceGone, WorkerError
from handler.core.outcome import ended_pod
from handler.core.retry import Backoff
from handler.core.trim import JOB_NAME_LABELS, TRIMMERS

log = logging.getLogger(__name__)
Json = dict[str, Any]
KINDS = ("jobs", "pods")
#: The optional third kind: watched when given a selector and allowed by RBAC.
EVENTS = "events"
#: Deleted Jobs whose final state is kept for the requests still following them.
GONE_KEEP = 1024
#: Replied Jobs handed back by ``remember`` (a redelivery adopting one), kept outside the watch.
REMEMBER_KEEP = 256
#: Longest a snapshot waits for the pods' first LIST, in seconds; past it, it goes on
#: without (a follower looks again at the next change).
SYNC_WAIT = 30.0
#: Seconds after the watchdog resumed a silent watch within which an event counts as one
#: the silent watch missed: a resumed watch sends what changed since its version at once.
REPLAY_SECONDS = 2.0


class WatchSource(Protocol):
    def list(self, kind: str, selector: str, transform: Any = None) -> tuple[builtins.list[Json], str]:
        """Every object of ``kind`` matching ``selector``, each passed through ``transform``
        (None: left out), and the list's resourceVersion."""
        ...
    def watch(self, kind: str, selector: str, resource_version: str, stopper: builtins.list[Any]) -> Any: ...


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
    #: The Job's events the tracker follows (``FailedCreate``), oldest first.
    events: list[Json] = field(default_factory=list)


@dataclass
class _Counters:
    events: int = 0
    relists: int = 0
    restarts: int = 0
    #: Watches restarted because they had gone silent (no event, no bookmark).
    stalls: int = 0
    last_contact: float = field(default_factory=time.monotonic)


def pod_job_name(pod: Mapping[str, Any]) -> str | None:
    labels = pod["metadata"].get("labels") or {}
    return next((labels[k] for k in JOB_NAME_LABELS if k in labels), None)


def event_job_name(event: Mapping[str, Any]) -> str | None:
    return (event.get("involvedObject") or {}).get("name")


class JobTracker:
    def __init__(self, source: WatchSource, selector: str, backoff: Backoff | None = None, *,
                 events_selector: str | None = None, stall_seconds: float = 0.0,
                 jobs_selector: str | None = None) -> None:
        self.source = source
        self.selector = selector
        self.selectors = {"jobs": jobs_selector or selector, "pods": selector}
        if events_selector is not None:
            self.selectors[EVENTS] = events_selector
        self.backoff = backoff or Backoff(base=0.1, cap=5.0)
        self.stall_seconds = stall_seconds
        self._cond = threading.Condition()
        self._objects: dict[str, dict[str, Json]] = {kind: {} for kind in (*KINDS, EVENTS)}
        self._gone: OrderedDict[str, Json] = OrderedDict()
        self._remembered: OrderedDict[str, Json] = OrderedDict()
        # Pods by their Job's name (a snapshot must not scan every pod), and the change
        # counter and waiters of each Job: an event wakes only the requests following
        # that Job, not every thread in flight.
        # (keyed by None: pods and events naming no Job, kept apart)
        self._pods_by_job: dict[str | None, dict[str, Json]] = {}
        self._events_by_job: dict[str | None, dict[str, Json]] = {}
        self._changes = 0
        self._changed: dict[str, int] = {}
        self._waiters: dict[str, set[threading.Event]] = {}
        self._stopping = False
        self._stopped = threading.Event()  # the watchdog's sleep, not woken by every event
        self._pods_synced = threading.Event()  # cleared from start() until the pods' first LIST
        self._pods_synced.set()
        self._streams: dict[str, list] = {kind: [] for kind in self.selectors}
        self._heard: dict[str, float] = {kind: time.monotonic() for kind in self.selectors}
        #: When the watchdog resumed a silent watch, until its first event or ``REPLAY_SECONDS``.
        self._resumed: dict[str, float] = {}
        self._threads: list[threading.Thread] = []
        self.counters = _Counters()

    @property
    def _watches(self) -> list:
        return [stream for streams in self._streams.values() for stream in streams]

    # --- lifecycle
    def start(self) -> None:
        """List the Jobs (and events) now, so no request adopts or creates a Job blind, then
        watch them; the pods are listed on their watch's thread (see the module docstring)."""
        versions: dict[str, str | None] = {"jobs": self._relist("jobs"), "pods": None}
        self._pods_synced.clear()
        if EVENTS in self.selectors:
            try:
                versions[EVENTS] = self._relist(EVENTS)
            except WorkerError as exc:  # e.g. 403: a Role from before events were read
                log.warning("not following Job events (%s): a Job whose pod cannot be created is reported "
                            "only at its timeout; grant list/watch on events to fix", exc)
                del self.selectors[EVENTS]
        for kind in self.selectors:
            thread = threading.Thread(target=self._run, args=(kind, versions[kind]), name=f"watch-{kind}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.stall_seconds > 0:
            thread = threading.Thread(target=self._watchdog, name="watch-stalls", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            self._set_waiters(None)
        self._stopped.set()
        self._pods_synced.set()
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
    def snapshot(self, job_name: str, *, pods: bool = True) -> Snapshot:
        """The Job, its pods and events as cached. Until the pods' first LIST is in, waits
        for it (at most ``SYNC_WAIT``), unless ``pods=False`` says only the Job is read."""
        if pods and not self._pods_synced.is_set():
            self._pods_synced.wait(SYNC_WAIT)
        with self._cond:
            own_pods = list(self._pods_by_job.get(job_name, {}).values())
            job = self._objects["jobs"].get(job_name) or self._remembered.get(job_name)
            events = sorted(self._events_by_job.get(job_name, {}).values(),
                            key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
            gone = self._gone.get(job_name)
            return Snapshot(job, own_pods, job is not None or gone is not None, job or gone,
                            self._changed.get(job_name, 0), events)

    def remember(self, job: Json) -> None:
        """Keep a Job the watch does not select (a replied one a redelivery adopted, read
        from the API server) so its snapshots find it; bounded, oldest dropped first."""
        name = job["metadata"]["name"]
        with self._cond:
            self._remembered[name] = TRIMMERS["jobs"](job)
            self._remembered.move_to_end(name)
            while len(self._remembered) > REMEMBER_KEEP:
                self._remembered.popitem(last=False)
            self._touch(name)

    def sizes(self) -> dict[str, int]:
        """Objects cached, by kind, and the deleted or remembered Jobs kept beside them."""
        with self._cond:
            return {**{kind: len(objects) for kind, objects in self._objects.items()},
                    "gone": len(self._gone), "remembered": len(self._remembered)}

    def jobs(self) -> list[Json]:
        """Every cached Job (for sweeps over all of them, such as the finalizer janitor)."""
        with self._cond:
            return list(self._objects["jobs"].values())

    def find(self, annotation: str, value: str) -> list[Json]:
        """The cached Jobs whose ``annotation`` is ``value``."""
        with self._cond:
            return [job for job in self._objects["jobs"].values()
                    if (job["metadata"].get("annotations") or {}).get(annotation) == value]

    def wait(self, timeout: float, job_name: str | None = None, since: int | None = None,
             stop: threading.Event | None = None) -> None:
        """Block until a change arrives (or ``wake``), at most ``timeout`` seconds.

        With ``job_name``, only a change to that Job or its pods ends the wait, and with
        ``since`` (a snapshot's ``version``) one that arrived after the snapshot ends it
        at once, so no change is missed between looking and waiting. ``stop``, set before
        ``wake`` is called, ends it at once too, even if both came before the wait began
        (``wake`` leaves no trace for a waiter that comes after it).
        """
        if job_name is None:
            with self._cond:
                if not self._stopping:
                    self._cond.wait(timeout=max(0.0, timeout))
            return
        event = threading.Event()
        with self._cond:
            if self._stopping or (since is not None and self._changed.get(job_name, 0) != since) or \
                    (stop is not None and stop.is_set()):
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
        Counters are kept only while the Job, a pod or an event of it is cached."""
        if job_name is None:
            return
        self._changes += 1
        if job_name in self._objects["jobs"] or job_name in self._pods_by_job or job_name in self._events_by_job \
                or job_name in self._remembered:
            self._changed[job_name] = self._changes
        else:
            self._changed.pop(job_name, None)
        self._set_waiters(job_name)

    # --- the watch loop
    def _relist(self, kind: str) -> str:
        items, version = self.source.list(kind, self.selectors[kind], self._listed(kind))
        with self._cond:
            self._heard[kind] = time.monotonic()
            previous, self._objects[kind] = self._objects[kind], {o["metadata"]["name"]: o for o in items}
            if kind == "jobs":
                for name in previous.keys() - self._objects[kind].keys():  # deleted while we were not watching
                    self._forget(name, previous[name])
                touched: set[str | None] = set(previous.keys() | self._objects[kind].keys())
            elif kind == EVENTS:
                self._events_by_job = {}
                for name, event in self._objects[kind].items():
                    self._events_by_job.setdefault(event_job_name(event), {})[name] = event
                touched = {event_job_name(e) for e in (*previous.values(), *self._objects[kind].values())}
            else:
                self._objects[kind] = {name: pod for name, pod in self._objects[kind].items()
                                       if self._keeps(pod, listing=True)}
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
            self.counters.last_contact = self._heard[kind] = time.monotonic()
            self._judge(kind, event)
            owner = (obj.get("metadata") or {}).get("name") if kind == "jobs" else (
                event_job_name(obj) if kind == EVENTS else pod_job_name(obj))
            by_job = self._events_by_job if kind == EVENTS else self._pods_by_job
            if kind_of_event in ("ADDED", "MODIFIED"):
                name = obj["metadata"]["name"]
                obj = TRIMMERS[kind](obj)
                if kind == "jobs":
                    self._objects[kind][name] = obj
                    self._remembered.pop(name, None)
                elif kind == EVENTS or self._keeps(obj):
                    self._objects[kind][name] = by_job.setdefault(owner, {})[name] = obj
                else:  # a finished pod of a Job no longer followed (replied)
                    self._drop_pod(name, owner)
            elif kind_of_event == "DELETED":
                name = obj["metadata"]["name"]
                obj = TRIMMERS[kind](obj)
                self._objects[kind].pop(name, None)
                if kind == "jobs":
                    self._forget(name, obj)
                else:
                    group = by_job.get(owner, {})
                    group.pop(name, None)
                    if not group:
                        by_job.pop(owner, None)
            elif kind_of_event != "BOOKMARK":
                log.warning("skipping %s watch event of unknown type %r", kind, kind_of_event)
                return None
            if kind_of_event != "BOOKMARK":
                self._touch(owner)
            self.counters.events += 1
            self._cond.notify_all()
        return version

    def _forget(self, name: str, final: Json) -> None:
        """Keep a deleted (or replied) Job's final state for a while (bounded, oldest dropped
        first), and drop its finished pods (lock held)."""
        self._gone[name] = final
        self._gone.move_to_end(name)
        while len(self._gone) > GONE_KEEP:
            self._gone.popitem(last=False)
        for pod_name, pod in list(self._pods_by_job.get(name, {}).items()):
            if not self._keeps(pod):
                self._drop_pod(pod_name, name)

    def _listed(self, kind: str) -> Any:
        """What a LIST keeps of each object, page by page: trimmed, and for pods only those
        the cache keeps (``_keeps``), so a namespace of finished pods is never held whole."""
        trim = TRIMMERS[kind]
        if kind != "pods":
            return trim

        def keep(pod: Json) -> Json | None:
            pod = trim(pod)
            with self._cond:
                return pod if self._keeps(pod, listing=True) else None
        return keep

    def _keeps(self, pod: Json, listing: bool = False) -> bool:
        """Whether to cache a pod: not once its container has ended and its Job has left the
        cache (replied, or deleted). From a watch event that means a Job seen leaving (in
        ``_gone``): the Jobs' stream may lag behind the pods', so a Job not seen yet may
        still come. From the LIST, which follows the Jobs' LIST, it means any Job not
        cached: a Job both created and finished between the two LISTs loses its pod here,
        and gets its exit code from the one LIST ``KubernetesBackend._with_pod_detail`` makes."""
        job_name = pod_job_name(pod)
        if job_name in self._objects["jobs"] or job_name in self._remembered or ended_pod([pod]) is None:
            return True
        return not listing and job_name not in self._gone

    def _drop_pod(self, name: str, job_name: str | None) -> None:
        self._objects["pods"].pop(name, None)
        group = self._pods_by_job.get(job_name, {})
        group.pop(name, None)
        if not group:
            self._pods_by_job.pop(job_name, None)

    def _run(self, kind: str, listed: str | None) -> None:
        failures = 0
        while listed is None and not self._stopping:  # the first LIST, off the start-up path
            try:
                listed = self._relist(kind)
            except WorkerError as exc:
                failures += 1
                log.warning("listing %s failed (%s); will retry", kind, exc)
                time.sleep(self.backoff.delay(min(failures, 6)))
        if kind == "pods":
            self._pods_synced.set()
        if listed is None:  # stopped before the first LIST came back
            return
        version: str = listed
        failures = 0
        while not self._stopping:
            try:
                with self._cond:
                    self._heard[kind] = time.monotonic()  # a new stream gets the full allowance
                for event in self.source.watch(kind, self.selectors[kind], version, self._streams[kind]):
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

    def _watchdog(self) -> None:
        """Restart any watch silent for longer than ``stall_seconds``: stopping its stream
        ends the watch call quietly, and its loop resumes from the last version seen.

        Not the events watch: the API server keeps no watch cache for events, so their watch
        gets no bookmarks, and a quiet namespace is silent there for good reason."""
        interval = min(self.stall_seconds / 4, 5.0)
        while not self._stopped.wait(interval):
            with self._cond:
                now = time.monotonic()
                stalled = [kind for kind, heard in self._heard.items()
                           if kind in KINDS and now - heard > self.stall_seconds]
                for kind in stalled:
                    self._heard[kind] = now
            for kind in stalled:
                streams = list(self._streams.get(kind, ()))
                if not streams:
                    continue
                # Silent is not stalled: a real API server sends no bookmark on a watch whose
                # resources nobody touches. Resume it (cheap: one watch request from the last
                # version seen); only if the resumed watch at once replays changes the silent
                # one never delivered was it stalled (``_judge``).
                log.debug("%s watch silent for over %.0f s (no event, no bookmark); resuming it to see whether "
                          "it missed anything", kind, self.stall_seconds)
                with self._cond:
                    self._resumed[kind] = time.monotonic()
                for stream in streams:
                    stream.stop()

    def _judge(self, kind: str, event: Json) -> None:
        """A watch resumed by the watchdog: changes it replays at once are what the silent
        watch missed, so it was stalled (a warning, ``cloud_worker_watch_stalls_total``);
        nothing within ``REPLAY_SECONDS`` means it had only been quiet (lock held)."""
        resumed = self._resumed.get(kind)
        if resumed is None or event.get("type") == "BOOKMARK":
            return
        del self._resumed[kind]
        if time.monotonic() - resumed <= REPLAY_SECONDS:
            self.counters.stalls += 1
            log.warning("%s watch had stalled: silent for over %.0f s while changes were made; resumed, it "
                        "replayed them", kind, self.stall_seconds)

    def _relist_quietly(self, kind: str, version: str) -> str:
        try:
            return self._relist(kind)
        except WorkerError as exc:
            log.warning("re-listing %s failed (%s); will retry", kind, exc)
            time.sleep(self.backoff.delay(3))
            return version
