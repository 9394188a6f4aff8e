"""Progress of a submission on a console, for ``cloud-worker submit`` and the demo.

On a terminal: one status line, redrawn ten times a second with a spinner, the request's
state and the elapsed time (plain ANSI: carriage return and erase-line). Anywhere else
(a pipe, a CI log): one plain, timestamped line per change of state, nothing redrawn.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

#: What each state of a submission (see ``handler.tools.client.OnEvent``) is shown as.
STATES = {
    "uploading": "uploading inputs",
    "uploaded": "inputs uploaded",
    "published": "queued, waiting for a handler",
    "accepted": "accepted, job created",
    "started": "running",
}
_UNICODE_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_ASCII_FRAMES = "|/-\\"
_ERASE_LINE = "\r\x1b[2K"


def describe(state: str, event: dict[str, Any] | None) -> str:
    """``state`` in words, with the job's name once the handler has named it."""
    text = STATES.get(state, state)
    data = (event or {}).get("data") or {}
    if data.get("jobName"):
        text += f" ({data['jobName']})"
    return text


class StatusDisplay:
    def __init__(self, stream: TextIO, interactive: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.interactive = stream.isatty() if interactive is None else interactive
        self.clock = clock
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        self.frames = _UNICODE_FRAMES if encoding == "utf8" else _ASCII_FRAMES
        self._started = clock()
        self._text = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StatusDisplay:
        self._started = self.clock()
        if self.interactive:
            self._thread = threading.Thread(target=self._spin, name="status-line", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            with self._lock:
                self.stream.write(_ERASE_LINE)
                self.stream.flush()

    @property
    def elapsed(self) -> float:
        return self.clock() - self._started

    def update(self, text: str) -> None:
        """A new state: redrawn on a terminal, one line otherwise."""
        with self._lock:
            if text == self._text:
                return
            self._text = text
            if not self.interactive:
                self.stream.write(f"[{self.elapsed:6.1f} s] {text}\n")
                self.stream.flush()

    def line(self, text: str) -> None:
        """A line that stays (above the status line on a terminal)."""
        with self._lock:
            self.stream.write((_ERASE_LINE if self.interactive else "") + text + "\n")
            self.stream.flush()

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(0.1):
            with self._lock:
                self.stream.write(f"{_ERASE_LINE}{self.frames[frame % len(self.frames)]} {self._text}  "
                                  f"{self.elapsed:.1f} s")
                self.stream.flush()
            frame += 1
