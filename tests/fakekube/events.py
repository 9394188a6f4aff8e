"""core/v1 Events, recorded the way client-go's ``record.EventRecorder`` writes them.

Controllers report what they did (``SuccessfulCreate``, ``FailedCreate``,
``Completed``, ``BackoffLimitExceeded``...) as Event objects in the involved
object's namespace, served at ``/api/v1/namespaces/{ns}/events`` (list, watch,
get; selectors such as ``involvedObject.name=x,involvedObject.kind=Job`` work as
for any field). Like the real recorder's EventCorrelator:

- an identical event (same object, type, reason, message) is not created
  again: the existing one gets ``count`` + 1 and a new ``lastTimestamp``;
- after 9 distinct messages for the same object, type and reason within ten
  minutes, further ones are folded into one event whose message starts with
  ``(combined from similar events): `` and whose count grows.

events.k8s.io/v1 serves the same objects in a real cluster under other field
names (``regarding``, ``note``); the fake serves only core/v1, which is what
``kubectl describe`` and ``kubectl get events`` read.
"""

import time
from dataclasses import dataclass, field

from .objects import EVENTS, Resource, timestamp
from .store import Store

AGGREGATE_AFTER = 10  # distinct messages per (object, type, reason) before aggregating
AGGREGATE_WINDOW = 600.0
AGGREGATE_PREFIX = "(combined from similar events): "


@dataclass
class _Similar:
    messages: set[str] = field(default_factory=set)
    since: float = field(default_factory=time.monotonic)


class EventRecorder:
    """Writes Events for one reporting component; call from the scheduler thread."""

    def __init__(self, store: Store, component: str = "job-controller"):
        self._store, self._component = store, component
        self._names: dict[tuple, str] = {}  # correlation key -> event name
        self._similar: dict[tuple, _Similar] = {}

    def record(self, resource: Resource, obj: dict, kind: str, reason: str, message: str) -> None:
        """Record ``reason``/``message`` (``kind`` Normal or Warning) about ``obj``."""
        meta = obj["metadata"]
        involved = {"kind": resource.kind, "namespace": meta["namespace"], "name": meta["name"],
                    "uid": meta["uid"], "apiVersion": resource.api_version,
                    "resourceVersion": meta.get("resourceVersion", "")}
        similar_key = (meta["uid"], kind, reason)
        similar = self._similar.get(similar_key)
        if similar is None or time.monotonic() - similar.since > AGGREGATE_WINDOW:
            similar = self._similar[similar_key] = _Similar()
        similar.messages.add(message)
        if len(similar.messages) >= AGGREGATE_AFTER:
            key, message = similar_key + ("aggregate",), AGGREGATE_PREFIX + message
        else:
            key = similar_key + (message,)
        now = timestamp()
        name = self._names.get(key)
        if name is not None and self._bump(meta["namespace"], name, message, now):
            return
        name = f"{meta['name']}.{time.time_ns():x}"
        self._names[key] = name
        self._store.create(EVENTS, {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": meta["namespace"]},
            "involvedObject": involved, "reason": reason, "message": message,
            "source": {"component": self._component}, "firstTimestamp": now, "lastTimestamp": now,
            "count": 1, "type": kind, "eventTime": None,
            "reportingComponent": self._component, "reportingInstance": "",
        })

    def _bump(self, namespace: str, name: str, message: str, now: str) -> bool:
        def again(event: dict) -> None:
            event.update(count=event.get("count", 1) + 1, lastTimestamp=now, message=message)

        return self._store.update(EVENTS, namespace, name, again) is not None
