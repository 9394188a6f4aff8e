"""Conventions shared by every Kubernetes object the fake serves.

The fake knows three resources (batch/v1 Jobs, core/v1 Pods and core/v1
Events), so they are described by a tiny frozen table instead of a schema: the
store, the routes and the Status builders all need the same four names (plural,
kind, group, version) and must agree on them exactly, because the official
client keys on them. The metadata helpers here read what several controllers
share: owners, finalizers and the ``deletionTimestamp`` of an object being
deleted.
"""

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

# The alphabet the API server uses for generateName suffixes (no vowels, so
# random names never spell words); pods created by the Job controller use it too.
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass(frozen=True)
class Resource:
    """One served resource type, as named in paths, kinds and Status details."""

    plural: str
    kind: str
    group: str
    version: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified(self) -> str:
        """The name used in error messages: ``jobs.batch`` or ``pods``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


JOBS = Resource("jobs", "Job", "batch", "v1")
PODS = Resource("pods", "Pod", "", "v1")
EVENTS = Resource("events", "Event", "", "v1")
RESOURCES = {JOBS.plural: JOBS, PODS.plural: PODS, EVENTS.plural: EVENTS}


def timestamp(moment: float | None = None) -> str:
    """RFC 3339 with a ``Z`` and whole seconds, as metav1.Time serialises."""
    when = datetime.fromtimestamp(time.time() if moment is None else moment, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_timestamp() -> str:
    """RFC 3339 with nanosecond-style fraction, as log timestamps are printed."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(NAME_ALPHABET) for _ in range(length))


def controller_uid(obj: dict) -> str | None:
    """The uid of the object's controlling owner, if it has one."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def owner_uids(obj: dict) -> set[str]:
    return {ref.get("uid") for ref in (obj.get("metadata") or {}).get("ownerReferences") or []}


def finalizers(obj: dict) -> list[str]:
    return list((obj.get("metadata") or {}).get("finalizers") or [])


def being_deleted(obj: dict) -> bool:
    """True once a DELETE has been accepted: the object has a ``deletionTimestamp``."""
    return (obj.get("metadata") or {}).get("deletionTimestamp") is not None
