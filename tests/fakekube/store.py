"""The fake cluster's state: objects, one resourceVersion counter, event history.

Everything the API serves lives here behind one lock, so a list and the watch
that follows it see one consistent order of writes. Every write bumps the
global resourceVersion and appends one watch event; watchers block on a
Condition and are woken by each write. History is bounded (and can be dropped
on demand by :meth:`Store.compact`), which is what makes a watch from an old
resourceVersion answer 410 Gone, as an etcd compaction does. Each event keeps
the object's previous state, so a paginated LIST can be served from the
snapshot of its first page (:meth:`Store.snapshot`), as etcd serves a
``continue`` token at the token's revision until that revision is compacted.

The store only stores: deletion semantics (finalizers, graceful deletion,
propagation) live in :mod:`tests.fakekube.deletion` and the garbage collector.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .objects import RESOURCES, Resource, micro_timestamp, timestamp
from .status import already_exists

logger = logging.getLogger(__name__)

Predicate = Callable[[dict], bool]


@dataclass(frozen=True)
class Event:
    """One recorded write; ``object`` is never mutated after recording."""

    rv: int
    type: str
    resource: Resource
    namespace: str
    object: dict
    previous: dict | None = None  # the state before a MODIFIED or DELETED

    def wire(self) -> dict:
        return {"type": self.type, "object": self.object}


class Expired(Exception):
    """The requested resourceVersion is older than the retained history."""


class Store:
    """Thread-safe object store with watch history; see the module docstring."""

    def __init__(self, history_limit: int = 1000):
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._objects: dict[str, dict[tuple[str, str], dict]] = {plural: {} for plural in RESOURCES}
        self._uids: dict[str, tuple[str, tuple[str, str]]] = {}  # uid -> (plural, key)
        self._owned: dict[str, set[tuple[str, tuple[str, str]]]] = {}  # owner uid -> dependents' (plural, key)
        self._logs: dict[tuple[str, str], dict[str, list[tuple[str, str]]]] = {}
        self._created: dict[tuple[str, str], list[str]] = {}
        self._history: deque[Event] = deque()
        self._history_limit = history_limit
        self._rv = 1
        self._horizon = 1  # every event with rv > horizon is still in history
        self._listeners: list[Callable[[Event], None]] = []
        self._closed = False

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` after every write, under the lock: it must not block."""
        with self._lock:
            self._listeners.append(listener)

    @property
    def lock(self) -> threading.RLock:
        """Held across a read-decide-write (as a DELETE's), so nothing interleaves."""
        return self._lock

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    @property
    def closed(self) -> bool:
        return self._closed

    def _record(self, kind: str, resource: Resource, obj: dict, previous: dict | None = None) -> dict:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        event = Event(self._rv, kind, resource, obj["metadata"]["namespace"], obj, previous)
        if len(self._history) >= self._history_limit:
            self._horizon = self._history.popleft().rv
        self._history.append(event)
        for listener in self._listeners:
            listener(event)
        self._changed.notify_all()
        return obj

    def create(self, resource: Resource, obj: dict) -> dict:
        """Store a new object, filling uid, namespace and creationTimestamp if unset."""
        obj = _copy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", timestamp())
        key = (meta.setdefault("namespace", "default"), meta["name"])
        with self._lock:
            if key in self._objects[resource.plural]:
                raise already_exists(resource, meta["name"])
            self._objects[resource.plural][key] = obj
            self._index(resource.plural, key, None, obj)
            self._created.setdefault((resource.plural, key[0]), []).append(key[1])
            return _copy(self._record("ADDED", resource, obj))

    def restore(self, resource: Resource, objects: list[dict]) -> None:
        """Store ``objects`` (complete, with uid and namespace) as an API server finds them in
        etcd after a restart: no watch event, so no controller reacts (the benchmarks'
        namespace full of finished Jobs). History is compacted up to them. The store takes
        the objects over (their metadata is written, the rest only read): the caller must not
        change them after."""
        with self._lock:
            for obj in objects:
                meta = obj["metadata"]
                key = (meta["namespace"], meta["name"])
                self._rv += 1
                meta["resourceVersion"] = str(self._rv)
                self._objects[resource.plural][key] = obj
                self._index(resource.plural, key, None, obj)
            self._horizon = self._rv

    def get(self, resource: Resource, namespace: str, name: str) -> dict | None:
        with self._lock:
            obj = self._objects[resource.plural].get((namespace, name))
            return _copy(obj) if obj is not None else None

    def list(self, resource: Resource, namespace: str | None = None,
             predicate: Predicate | None = None, copies: bool = True) -> tuple[list[dict], int]:
        """Matching objects in etcd key order ("namespace/name"), and the resourceVersion they are at.

        ``copies=False`` returns the stored objects themselves, for a caller that only
        serialises them (a LIST page): a stored object is replaced, never changed, by a write."""
        keep = _copy if copies else _same
        with self._lock:
            objects = self._objects[resource.plural]
            items = [keep(objects[key]) for key in sorted(objects, key=storage_key)
                     if namespace in (None, key[0]) and (predicate is None or predicate(objects[key]))]
            return items, self._rv

    def snapshot(self, resource: Resource, rv: int, copies: bool = True) -> dict[tuple[str, str], dict]:
        """Every object of ``resource`` as it was at ``rv`` (copies, unless ``copies=False``: see
        ``list``); raises Expired when history no longer reaches back that far, as etcd
        answers for a compacted revision."""
        with self._lock:
            if rv < self._horizon:
                raise Expired(f"too old resource version: {rv} ({self._horizon + 1})")
            state = dict(self._objects[resource.plural])
            for event in reversed(self._history):
                if event.rv <= rv:
                    break
                if event.resource is not resource:
                    continue
                meta = event.object["metadata"]
                if event.type == "ADDED":
                    state.pop((meta["namespace"], meta["name"]), None)
                else:
                    state[(meta["namespace"], meta["name"])] = event.previous
            keep = _copy if copies else _same
            return {key: keep(obj) for key, obj in state.items() if obj is not None}

    def update(self, resource: Resource, namespace: str, name: str, mutate: Callable[[dict], None],
               uid: str | None = None) -> dict | None:
        """Read-modify-write under the lock; a no-op change is not a write.

        Returns the stored object, or None when it is gone (or, given ``uid``,
        was replaced by a namesake).
        """
        with self._lock:
            current = self._objects[resource.plural].get((namespace, name))
            if current is None or (uid is not None and current["metadata"]["uid"] != uid):
                return None
            changed = _copy(current)
            mutate(changed)
            if changed == current:
                return _copy(current)
            self._objects[resource.plural][(namespace, name)] = changed
            self._index(resource.plural, (namespace, name), current, changed)
            return _copy(self._record("MODIFIED", resource, changed, current))

    def remove(self, resource: Resource, namespace: str, name: str, uid: str | None = None) -> dict | None:
        """Take the object out for good (one DELETED event); None if it is gone or replaced."""
        with self._lock:
            current = self._objects[resource.plural].get((namespace, name))
            if current is None or (uid is not None and current["metadata"]["uid"] != uid):
                return None
            del self._objects[resource.plural][(namespace, name)]
            self._index(resource.plural, (namespace, name), current, None)
            if resource.plural == "pods":
                self._logs.pop((namespace, name), None)
            return _copy(self._record("DELETED", resource, _copy(current), current))

    def _index(self, plural: str, key: tuple[str, str], old: dict | None, new: dict | None) -> None:
        """Keep the uid and owner indexes in step with one write (lock held)."""
        def owners(obj: dict | None) -> set[str]:
            refs = (obj or {}).get("metadata", {}).get("ownerReferences") or []
            return {ref.get("uid") for ref in refs if ref.get("uid")}

        if new is None:
            self._uids.pop(old["metadata"]["uid"], None)
        else:
            self._uids[new["metadata"]["uid"]] = (plural, key)
        before, after = owners(old), owners(new)
        for owner in before - after:
            self._owned.get(owner, set()).discard((plural, key))
            if not self._owned.get(owner, True):
                del self._owned[owner]
        for owner in after - before:
            self._owned.setdefault(owner, set()).add((plural, key))

    def find_uid(self, uid: str) -> tuple[Resource, dict] | None:
        """The live object with ``uid`` (a copy), whatever its kind; the GC's owner lookup."""
        with self._lock:
            found = self._uids.get(uid)
            if found is None:
                return None
            return RESOURCES[found[0]], _copy(self._objects[found[0]][found[1]])

    def dependents(self, uid: str, resource: Resource | None = None) -> list[tuple[Resource, dict]]:
        """Copies of every object (of ``resource``, if given) with an ownerReference to ``uid``,
        in key order."""
        with self._lock:
            return [(RESOURCES[plural], _copy(self._objects[plural][key]))
                    for plural, key in sorted(self._owned.get(uid, ()), key=lambda item: (item[0], item[1]))
                    if resource is None or resource.plural == plural]

    def created_names(self, resource: Resource, namespace: str) -> list[str]:
        with self._lock:
            return list(self._created.get((resource.plural, namespace), []))

    def append_log(self, namespace: str, pod: str, container: str, lines: list[str]) -> None:
        with self._lock:
            logs = self._logs.setdefault((namespace, pod), {})
            logs.setdefault(container, []).extend((micro_timestamp(), line) for line in lines)

    def read_log(self, namespace: str, pod: str, container: str) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._logs.get((namespace, pod), {}).get(container, []))

    def events_after(self, resource: Resource, namespace: str | None, cursor: int,
                     timeout: float) -> tuple[list[Event], int]:
        """Events of ``resource`` newer than ``cursor``, waiting up to ``timeout`` for one.

        Returns the events and the new cursor (the version everything up to has
        been scanned). Raises :class:`Expired` when history no longer reaches
        back to ``cursor``. Returns early, empty, once the store is closed.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if cursor < self._horizon:
                    raise Expired(f"too old resource version: {cursor} ({self._horizon + 1})")
                events = []
                for event in reversed(self._history):
                    if event.rv <= cursor:
                        break
                    if event.resource is resource and namespace in (None, event.namespace):
                        events.append(event)
                cursor = max(cursor, self._rv)
                remaining = deadline - time.monotonic()
                if events or remaining <= 0 or self._closed:
                    return events[::-1], cursor
                self._changed.wait(remaining)

    def compact(self) -> None:
        """Forget all history, so only watches from the current version can resume."""
        with self._lock:
            self._history.clear()
            self._horizon = self._rv
            logger.info("compacted event history at resourceVersion %d", self._rv)

    def close(self) -> None:
        """Wake every watcher so its stream can end; used on shutdown."""
        with self._lock:
            self._closed = True
            self._changed.notify_all()


def _copy(obj):
    """A deep copy of JSON-shaped data (dicts, lists, scalars), which is all the store
    holds: six times faster than ``copy.deepcopy``, which was most of the fake server's
    CPU time under the benchmarks' load (every read and write copies whole objects)."""
    if type(obj) is dict:
        return {key: _copy(value) for key, value in obj.items()}
    if type(obj) in (list, tuple):
        return [_copy(value) for value in obj]
    return obj


def _same(obj):
    return obj


def storage_key(key: tuple[str, str]) -> str:
    """Where etcd keeps the object (below the resource's prefix); lists come in this order."""
    return f"{key[0]}/{key[1]}"
