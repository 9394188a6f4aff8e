"""Retries with exponential backoff and full jitter, for ``Transient`` errors only.

Permanent errors (``JobFailedToStart``, ``Rejected``) and the 409 of an adopted Job
pass straight through: retrying them would only repeat the answer.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from handler.core.errors import Transient

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    #: First delay's upper bound, in seconds.
    base: float = 0.2
    #: No single delay is longer than this, in seconds.
    cap: float = 10.0
    #: Give up after this many attempts in all.
    attempts: int = 8

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (AWS architecture blog)."""
        return (rng or random).uniform(0, min(self.cap, self.base * 2**attempt))


def retrying(
    fn: Callable[[], T], backoff: Backoff, what: str, sleep: Callable[[float], None] = time.sleep
) -> T:
    """Call ``fn`` until it does not raise ``Transient``, or the attempts run out (re-raised)."""
    for attempt in range(backoff.attempts):
        try:
            return fn()
        except Transient as exc:
            if attempt == backoff.attempts - 1:
                raise
            wait = exc.retry_after if exc.retry_after is not None else backoff.delay(attempt)
            log.warning("%s failed (%s); retry %d/%d in %.2f s", what, exc, attempt + 1, backoff.attempts - 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")
