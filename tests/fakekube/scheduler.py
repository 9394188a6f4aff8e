"""One thread that runs the simulated controllers' timed work.

The Job controller and kubelet do everything here, one callback at a time, so
their bookkeeping needs no locks of its own and never races itself. Timers sit
in a heap and the thread sleeps on a Condition until the earliest is due: no
polling. Callers outside the thread (``FakeKube.finish``) use :meth:`run_sync`.
"""

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

logger = logging.getLogger(__name__)


class Timer:
    """A handle on scheduled work; :meth:`cancel` is safe from any thread."""

    __slots__ = ("due", "callback", "args", "cancelled")

    def __init__(self, due: float, callback: Callable, args: tuple):
        self.due, self.callback, self.args, self.cancelled = due, callback, args, False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """A heap of timers served by one daemon thread."""

    def __init__(self, name: str = "fakekube-scheduler"):
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopping = False
        self._ran = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        logger.debug("scheduler stopped after %d callbacks, %d pending", self._ran, len(self._heap))

    def call_later(self, delay: float, callback: Callable, *args) -> Timer:
        timer = Timer(time.monotonic() + max(0.0, delay), callback, args)
        with self._cond:
            heapq.heappush(self._heap, (timer.due, next(self._sequence), timer))
            self._cond.notify()
        return timer

    def call_soon(self, callback: Callable, *args) -> Timer:
        return self.call_later(0.0, callback, *args)

    def run_sync(self, callback: Callable, *args, timeout: float = 10.0):
        """Run ``callback`` on the scheduler thread and return (or raise) its result."""
        future: Future = Future()

        def call() -> None:
            try:
                future.set_result(callback(*args))
            except BaseException as exc:  # handed to the caller, not swallowed
                future.set_exception(exc)

        self.call_soon(call)
        return future.result(timeout)

    def _next(self) -> Timer | None:
        with self._cond:
            while not self._stopping:
                if self._heap and self._heap[0][0] <= time.monotonic():
                    return heapq.heappop(self._heap)[2]
                wait = self._heap[0][0] - time.monotonic() if self._heap else None
                self._cond.wait(wait)
            return None

    def _run(self) -> None:
        while (timer := self._next()) is not None:
            if timer.cancelled:
                continue
            self._ran += 1
            try:
                timer.callback(*timer.args)
            except Exception:
                logger.exception("scheduled callback %r failed", timer.callback)
