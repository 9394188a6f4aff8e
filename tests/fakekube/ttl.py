"""The TTL-after-finished controller: deletes finished Jobs once their TTL is up.

Follows the docs' "Automatic Cleanup for Finished Jobs" (pkg/controller/ttlafterfinished):
a Job with ``spec.ttlSecondsAfterFinished`` and a ``Complete`` or ``Failed``
condition is deleted that many seconds after it finished, with
``propagationPolicy: Foreground`` — so the Job carries the ``foregroundDeletion``
finalizer until the garbage collector has removed its pods, and any other
finalizer holds it further. The TTL is read again when it expires, so changing
it on a finished Job takes effect, and removing it cancels the cleanup.

The clock: one TTL second lasts ``Timings.ttl_scale`` real seconds.
"""

import logging
import time

from . import deletion
from .objects import JOBS, being_deleted
from .scheduler import Scheduler
from .store import Event, Store
from .timings import Timings

logger = logging.getLogger(__name__)


def finished(job: dict) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


class TTLController:
    """Watches Jobs; see the module docstring."""

    def __init__(self, store: Store, scheduler: Scheduler, timings: Timings):
        self._store, self._scheduler, self._timings = store, scheduler, timings
        self._finished_at: dict[str, float] = {}  # Job uid -> when it was seen finished (monotonic)
        self._pending: set[str] = set()  # Job uids with a check scheduled

    def on_event(self, event: Event) -> None:
        """Store listener (runs under the store lock): only hands the event over."""
        if event.resource is JOBS and (event.type == "DELETED" or (
                finished(event.object) and not being_deleted(event.object))):
            self._scheduler.call_soon(self._handle, event)

    def _handle(self, event: Event) -> None:
        meta = event.object["metadata"]
        uid = meta["uid"]
        if event.type == "DELETED":
            self._finished_at.pop(uid, None)
            self._pending.discard(uid)
            return
        self._finished_at.setdefault(uid, time.monotonic())
        if uid not in self._pending and event.object["spec"].get("ttlSecondsAfterFinished") is not None:
            self._pending.add(uid)
            self._check(meta["namespace"], meta["name"], uid)

    def _check(self, namespace: str, name: str, uid: str) -> None:
        job = self._store.get(JOBS, namespace, name)
        ttl = job["spec"].get("ttlSecondsAfterFinished") if job is not None else None
        if job is None or job["metadata"]["uid"] != uid or being_deleted(job) or ttl is None:
            self._pending.discard(uid)  # gone, going, or no TTL any more: nothing to do
            return
        remaining = self._finished_at[uid] + ttl * self._timings.ttl_scale - time.monotonic()
        if remaining > 0:
            self._scheduler.call_later(remaining, self._check, namespace, name, uid)
            return
        logger.info("ttl: deleting finished job %s/%s", namespace, name)
        self._pending.discard(uid)
        deletion.delete(self._store, JOBS, namespace, name, "Foreground", uid=uid)
