"""What the API server said about a set of objects, and when this process heard it.

A watch (listed first, resumed from the last ``resourceVersion``, listed again after a gap)
whose every event is kept with ``time.monotonic()`` at its arrival, so a test can measure
from its own action (a publish) to what the cluster did about it (a Deployment's replicas, a
Job created): the latency a user sees, within a watch's delivery (milliseconds here).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.kubeapi import KubeApi


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() when the event arrived
    type: str  # ADDED, MODIFIED, DELETED (or LISTED: found by a list)
    object: dict[str, Any]


class Timeline:
    def __init__(self, api: KubeApi, path: str, **params: Any) -> None:
        self.api, self.path, self.params = api, path, params
        self.seen: list[Seen] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"timeline {path}", daemon=True)
        self._thread.start()

    def _add(self, kind: str, obj: dict[str, Any]) -> None:
        with self._changed:
            self.seen.append(Seen(time.monotonic(), kind, obj))
            self._changed.notify_all()

    def _follow(self) -> None:
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    listed = self.api.get(self.path, **self.params)
                    for item in listed["items"]:
                        self._add("LISTED", item)
                    version = listed["metadata"]["resourceVersion"]
                for event in self.api.watch(self.path, timeout=5, resourceVersion=version,
                                            allowWatchBookmarks="true", **self.params):
                    if event["type"] == "ERROR":
                        version = ""
                        break
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] != "BOOKMARK":
                        self._add(event["type"], event["object"])
            except Exception:  # noqa: BLE001 - a dropped watch: list again
                version = ""
                time.sleep(0.2)

    def first(self, predicate: Callable[[Seen], bool], after: float, timeout: float, what: str) -> Seen:
        """The first event after ``after`` (a monotonic time) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for seen in self.seen:
                    if seen.at >= after and predicate(seen):
                        return seen
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}")
                self._changed.wait(min(left, 0.5))

    def latest(self, name: str) -> dict[str, Any] | None:
        """The last state seen of the object ``name`` (None once deleted or never seen)."""
        with self._changed:
            for seen in reversed(self.seen):
                if seen.object["metadata"]["name"] == name:
                    return None if seen.type == "DELETED" else seen.object
        return None

    def names(self, kind: str = "ADDED") -> list[str]:
        """Every object name seen, in order, that came with an event of ``kind`` (or was listed)."""
        with self._changed:
            found: list[str] = []
            for seen in self.seen:
                name = seen.object["metadata"]["name"]
                if seen.type in (kind, "LISTED") and name not in found:
                    found.append(name)
            return found

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
