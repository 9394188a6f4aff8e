"""Injected failures for chaos tests of the handler, switchable while serving.

A plain mutable dataclass the test holds (``fk.faults.error_rate = 0.3``); the
HTTP layer consults it on every request. Randomness comes from a private
``random.Random`` seeded by ``seed`` (re-seeded whenever ``seed`` changes), so
a chaos run is repeatable; assigning ``seed`` restarts the sequence. Faults only touch HTTP traffic, never the
``FakeKube`` Python methods.
"""

import random
import threading
from dataclasses import dataclass, field


@dataclass
class Faults:
    # Fraction of non-watch resource requests answered 500 InternalError.
    error_rate: float = 0.0
    # Fraction of non-watch resource requests answered 429 with Retry-After: 1.
    throttle_rate: float = 0.0
    # Seconds added before answering every request (watches included).
    latency: float = 0.0
    # Close each watch stream abruptly (no final chunk) after this many events.
    cut_watch_after: int | None = None
    # Let each new watch stream send this many events (0: none), then fall silent: the
    # connection stays open but nothing more comes, not even bookmarks or the end at
    # timeoutSeconds, until the client gives up (its read timeout) or the server stops.
    silent_watch_after: int | None = None
    # Answer every watch that resumes from a resourceVersion (not "" or "0") with 410.
    gone_on_resume: bool = False
    # Answer every Job create with this status (403 Forbidden as from RBAC, 422 Invalid).
    reject_create_status: int | None = None
    seed: int = 0
    _rng: random.Random = field(default_factory=random.Random, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._rng.seed(self.seed)

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name == "seed" and "_rng" in vars(self):
            with self._lock:
                self._rng.seed(value)

    def roll(self) -> str | None:
        """``"error"``, ``"throttle"`` or None for one request, per the configured rates."""
        if self.error_rate <= 0 and self.throttle_rate <= 0:
            return None
        with self._lock:
            draw = self._rng.random()
        if draw < self.error_rate:
            return "error"
        if draw < self.error_rate + self.throttle_rate:
            return "throttle"
        return None

    def clear(self) -> None:
        """Switch every fault off again."""
        self.error_rate = self.throttle_rate = self.latency = 0.0
        self.cut_watch_after = self.silent_watch_after = None
        self.gone_on_resume = False
        self.reject_create_status = None
