"""The API server's side of deleting: finalizers, ``deletionTimestamp``, graceful pods.

Follows the generic registry (k8s.io/apiserver ``registry/generic/registry/store.go``)
and the docs' "Finalizers" and "Garbage collection" pages:

- DELETE of an object without finalizers whose grace period is 0 removes it
  (one DELETED watch event).
- Otherwise the object stays, marked: ``deletionTimestamp`` and
  ``deletionGracePeriodSeconds`` are set once (a MODIFIED event; ``generation``
  goes up by one). Objects with finalizers get grace 0 and a ``deletionTimestamp``
  of now (``markAsDeleting``); a running pod gets its
  ``terminationGracePeriodSeconds`` (default 30) and a ``deletionTimestamp`` that
  far in the future, and the kubelet removes it once its containers have
  stopped (:func:`delete` again with grace 0).
- ``propagationPolicy: Foreground`` adds the ``foregroundDeletion`` finalizer and
  ``Orphan`` the ``orphan`` one (batch/v1 Jobs default to Orphan); the garbage
  collector (:mod:`tests.fakekube.gc`) acts on them and removes them.
- A write (PATCH, PUT, or a controller's) that empties the finalizers of an
  object marked with grace 0 removes it right after storing it (MODIFIED, then
  DELETED) — ``shouldDeleteDuringUpdate``. Adding a finalizer to an object being
  deleted is refused with 422, and no write can change ``deletionTimestamp``.

A pod that has not been scheduled, or has already ended (Succeeded or Failed),
has no grace period: it goes at once, as ``CheckGracefulDelete`` decides.
"""

import time
from collections.abc import Callable

from .objects import PODS, Resource, being_deleted, finalizers, timestamp
from .status import invalid
from .store import Store

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
PROPAGATION_FINALIZERS = {"Foreground": FOREGROUND, "Orphan": ORPHAN}
DEFAULT_POD_GRACE = 30


def _grace(resource: Resource, obj: dict, requested: int | None) -> int:
    """Seconds of graceful deletion: only scheduled pods still running have any."""
    if resource is not PODS:
        return 0
    if not (obj.get("spec") or {}).get("nodeName") or (obj.get("status") or {}).get("phase") in (
            "Succeeded", "Failed"):
        return 0
    if requested is not None:
        return max(0, requested)
    grace = (obj.get("spec") or {}).get("terminationGracePeriodSeconds")
    return DEFAULT_POD_GRACE if grace is None else max(0, grace)


def _with_propagation(current: list[str], propagation: str | None) -> list[str]:
    """The finalizers after a DELETE with ``propagation``: the GC's two are replaced."""
    if propagation is None:
        return current
    kept = [f for f in current if f not in (FOREGROUND, ORPHAN)]
    wanted = PROPAGATION_FINALIZERS.get(propagation)
    return kept + [wanted] if wanted else kept


def delete(store: Store, resource: Resource, namespace: str, name: str, propagation: str | None = "Background",
           grace: int | None = None, uid: str | None = None) -> tuple[dict, bool] | None:
    """One DELETE: ``(object, gone)``, the object as removed or as now marked; None if absent.

    ``propagation`` None keeps the object's propagation finalizers as they are
    (what the kubelet's final delete does). ``grace`` None means the object's own.
    """
    with store.lock:
        current = store.get(resource, namespace, name)
        if current is None or (uid is not None and current["metadata"]["uid"] != uid):
            return None
        wanted = _with_propagation(finalizers(current), propagation)
        seconds = _grace(resource, current, grace)
        if not wanted and seconds == 0:
            return store.remove(resource, namespace, name), True

        def mark(obj: dict) -> None:
            meta = obj["metadata"]
            if wanted:
                meta["finalizers"] = wanted
            else:
                meta.pop("finalizers", None)
            now = time.time()
            stamp = timestamp(now + seconds)
            if meta.get("deletionTimestamp") is None:
                if meta.get("generation"):
                    meta["generation"] += 1
                meta.update(deletionTimestamp=stamp, deletionGracePeriodSeconds=seconds)
            elif seconds < (meta.get("deletionGracePeriodSeconds") or 0):  # a shorter grace wins
                meta.update(deletionTimestamp=min(stamp, meta["deletionTimestamp"]),
                            deletionGracePeriodSeconds=seconds)

        marked = store.update(resource, namespace, name, mark)
        return marked, False


def update(store: Store, resource: Resource, namespace: str, name: str, mutate: Callable[[dict], None],
           uid: str | None = None) -> dict | None:
    """A write under the finalizer rules (see the module docstring); None if the object is gone.

    Raises the 422 ``ApiError`` for a new finalizer on an object being deleted.
    Returns the object as stored, even when the write then removed it.
    """
    with store.lock:
        old = store.get(resource, namespace, name)
        if old is None or (uid is not None and old["metadata"]["uid"] != uid):
            return None

        def guarded(obj: dict) -> None:
            mutate(obj)
            meta, old_meta = obj["metadata"], old["metadata"]
            for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                if field in old_meta:
                    meta[field] = old_meta[field]
                else:
                    meta.pop(field, None)
            added = sorted(set(finalizers(obj)) - set(finalizers(old)))
            if being_deleted(old) and added:
                found = ", ".join(f'"{f}"' for f in added)
                raise invalid(resource, name, [{
                    "reason": "FieldValueForbidden", "field": "metadata.finalizers",
                    "message": "Forbidden: no new finalizers can be added if the object is being deleted, "
                               f"found new finalizers []string{{{found}}}"}])
            if not meta.get("finalizers"):
                meta.pop("finalizers", None)

        new = store.update(resource, namespace, name, guarded, uid=old["metadata"]["uid"])
        if new is not None and _delete_during_update(old, new):
            store.remove(resource, namespace, name, uid=old["metadata"]["uid"])
        return new


def _delete_during_update(old: dict, new: dict) -> bool:
    """``shouldDeleteDuringUpdate``: the last finalizer just went from an object marked with grace 0."""
    meta = new["metadata"]
    return (not finalizers(new) and bool(finalizers(old)) and being_deleted(new)
            and meta.get("deletionGracePeriodSeconds") == 0)


def remove_finalizer(store: Store, resource: Resource, namespace: str, name: str, finalizer: str,
                     uid: str | None = None) -> dict | None:
    """What a controller does once its cleanup is done (the object may then go)."""
    def drop(obj: dict) -> None:
        obj["metadata"]["finalizers"] = [f for f in finalizers(obj) if f != finalizer]

    return update(store, resource, namespace, name, drop, uid)
