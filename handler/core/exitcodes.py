"""The exit codes of every ``cloud-worker`` command, defined once (the README's tables).

A shell script or a Kubernetes ``restartPolicy`` tells failures apart by these numbers,
so each names one thing to do next.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    #: ``submit``/``demo``: the Job failed.
    FAILED = 1
    USAGE = 2
    CONFIG = 3
    BROKER_UNREACHABLE = 4
    KUBE_UNREACHABLE = 5
    #: ``submit``: the Job ran past its timeout.
    TIMEDOUT = 6
    #: ``submit``: the handler rejected the request.
    REJECTED = 7
    #: ``submit``/``demo``: no reply within the wait.
    NO_REPLY = 8
    #: ``submit``: an S3 upload or download failed.
    STORAGE = 9
    #: ``submit``/``status``: the request was cancelled (``cloud-worker cancel``).
    CANCELLED = 10
    #: ``status``/``logs``/``cancel``: no job for that request id or Job name.
    NOT_FOUND = 11
    #: A second signal, or Ctrl-C: stopped at once.
    INTERRUPTED = 130
