"""The garbage collector: ownerReferences, cascading deletion and its finalizers.

Follows the docs' "Garbage Collection" and "Use Cascading Deletion" pages (the
kube-controller-manager's garbagecollector):

- Background: nothing happens while the owner merely has a ``deletionTimestamp``
  (say it waits for its own finalizers); once the owner is really gone (a
  DELETED event, checked again by uid) every dependent whose owners are all gone
  is deleted (itself in the background); one that still has a live owner only
  loses the dangling reference.
- Foreground (the owner carries ``foregroundDeletion``): the dependents are
  deleted; the finalizer is removed — and the owner with it, if it has no
  other finalizers — only once no dependent with ``blockOwnerDeletion: true``
  is left at all (a pod still terminating still blocks).
- Orphan (the owner carries ``orphan``): the owner's reference is taken off its
  dependents, then the finalizer is removed.
- A new object whose owner does not exist is deleted, as a dangling dependent.

Every step runs on the scheduler thread, after the write that caused it, as the
real collector acts on informer events: so cascading is asynchronous.
"""

import logging

from . import deletion
from .objects import being_deleted, finalizers, owner_uids
from .scheduler import Scheduler
from .store import Event, Store

logger = logging.getLogger(__name__)


class GarbageCollector:
    """Reacts to store events; see the module docstring."""

    def __init__(self, store: Store, scheduler: Scheduler):
        self._store, self._scheduler = store, scheduler

    def on_event(self, event: Event) -> None:
        """Store listener (runs under the store lock): only hands the event over."""
        obj = event.object
        if (event.type == "DELETED" or (event.type == "ADDED" and obj["metadata"].get("ownerReferences"))
                or (being_deleted(obj) and {deletion.FOREGROUND, deletion.ORPHAN} & set(finalizers(obj)))):
            self._scheduler.call_soon(self._handle, event)

    def _handle(self, event: Event) -> None:
        obj, meta = event.object, event.object["metadata"]
        if event.type == "DELETED":
            self._collect_dependents(meta["uid"])
            for owner in owner_uids(obj):
                self._process_owner(owner)
            return
        if being_deleted(obj):
            self._process_owner(meta["uid"])
        elif event.type == "ADDED" and meta.get("ownerReferences"):
            self._collect_if_dangling(event.resource, obj)

    def _live_owner(self, uid: str) -> dict | None:
        found = self._store.find_uid(uid)
        return found[1] if found is not None else None

    def _collect_dependents(self, owner_uid: str) -> None:
        """The owner is gone for good: its dependents follow unless another owner lives."""
        for resource, dependent in self._store.dependents(owner_uid):
            self._collect_if_dangling(resource, dependent)

    def _collect_if_dangling(self, resource, obj: dict) -> None:
        meta = obj["metadata"]
        refs = meta.get("ownerReferences") or []
        dangling = {ref.get("uid") for ref in refs if self._live_owner(ref.get("uid")) is None}
        if not dangling:
            return
        if len(dangling) == len(refs):
            logger.debug("collecting %s %s/%s: its owners are gone", resource.kind, meta["namespace"], meta["name"])
            if not being_deleted(obj):
                deletion.delete(self._store, resource, meta["namespace"], meta["name"], "Background",
                                uid=meta["uid"])
            return

        def drop_dangling(current: dict) -> None:
            current["metadata"]["ownerReferences"] = [
                ref for ref in current["metadata"].get("ownerReferences") or [] if ref.get("uid") not in dangling]

        self._store.update(resource, meta["namespace"], meta["name"], drop_dangling, uid=meta["uid"])

    def _process_owner(self, uid: str) -> None:
        """An owner being deleted with a propagation finalizer: do that finalizer's work."""
        found = self._store.find_uid(uid)
        if found is None:
            return
        resource, owner = found
        if not being_deleted(owner):
            return
        marks = finalizers(owner)
        if deletion.ORPHAN in marks:
            self._orphan(resource, owner)
        elif deletion.FOREGROUND in marks:
            self._foreground(resource, owner)

    def _orphan(self, resource, owner: dict) -> None:
        meta = owner["metadata"]
        for dep_resource, dependent in self._store.dependents(meta["uid"]):
            def disown(current: dict) -> None:
                refs = [ref for ref in current["metadata"].get("ownerReferences") or []
                        if ref.get("uid") != meta["uid"]]
                if refs:
                    current["metadata"]["ownerReferences"] = refs
                else:
                    current["metadata"].pop("ownerReferences", None)

            dep_meta = dependent["metadata"]
            self._store.update(dep_resource, dep_meta["namespace"], dep_meta["name"], disown, uid=dep_meta["uid"])
        deletion.remove_finalizer(self._store, resource, meta["namespace"], meta["name"], deletion.ORPHAN,
                                  uid=meta["uid"])

    def _foreground(self, resource, owner: dict) -> None:
        meta = owner["metadata"]
        for dep_resource, dependent in self._store.dependents(meta["uid"]):
            dep_meta = dependent["metadata"]
            if not being_deleted(dependent):
                deletion.delete(self._store, dep_resource, dep_meta["namespace"], dep_meta["name"], "Background",
                                uid=dep_meta["uid"])
        blocking = sum(1 for _, dependent in self._store.dependents(meta["uid"])
                       if any(ref.get("uid") == meta["uid"] and ref.get("blockOwnerDeletion")
                              for ref in dependent["metadata"].get("ownerReferences") or []))
        if blocking == 0:
            deletion.remove_finalizer(self._store, resource, meta["namespace"], meta["name"], deletion.FOREGROUND,
                                      uid=meta["uid"])
        else:
            logger.debug("%s %s/%s waits for %d blocking dependents", resource.kind, meta["namespace"],
                         meta["name"], blocking)
