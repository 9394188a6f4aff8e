"""Helpers most integration tests share: waiting for a condition, and a request for a scenario image."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.support.requester import SEED_REQUEST


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    """Return once ``predicate()`` is true; fail saying ``what`` did not happen in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting until {what}")


def job_request(image: str, **fields: Any) -> dict[str, Any]:
    """The seed's example request, running ``image`` (a fake-cluster scenario, see tests/fakekube)."""
    return dict(SEED_REQUEST, image=image, **fields)


def deleting(obj: dict[str, Any]) -> bool:
    """The object is marked for deletion (held by a finalizer until released)."""
    return obj["metadata"].get("deletionTimestamp") is not None
