"""A Job's log as ``cloud-worker logs`` prints it from a cluster: its newest pod's ``job``
container, and with ``follow`` what it writes until the container ends.

The stream is asked for again when it ends early (a dropped connection, a job that was
silent past the read timeout), skipping what was already given, and a retried Job's new
pod is followed in turn. Kept apart from the Kubernetes backend's request path: it is
only ever read by a person.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from handler.adapters.kube import Kube
from handler.core.errors import NotFound, Transient
from handler.core.outcome import CONTAINER, container_status

#: Seconds between looks at a Job whose pod has not started, or whose log stream ended early.
POLL_SECONDS = 0.5


def pod_log_stream(kube: Kube, job_name: str, follow: bool, limit_bytes: int) -> Iterator[bytes]:
    """The log of the Job's newest pod (at most ``limit_bytes`` without ``follow``);
    ``NotFound`` when the Job does not exist."""
    printed: dict[str, int] = {}
    while True:
        pods, _ = kube.list("pods", f"job-name={job_name}")
        pod = max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", default=None)
        if pod is None:
            if printed:
                return  # its pod was followed, and is gone (deleted with a cancelled Job)
            if kube.read_job(job_name) is None:
                raise NotFound(f"no job {job_name}")
            if not follow:
                return
            time.sleep(POLL_SECONDS)
            continue
        name = pod["metadata"]["name"]
        state = _state(pod)
        if not follow:
            yield kube.pod_log(name, CONTAINER, limit_bytes)
            return
        if "waiting" in state or not state:
            time.sleep(POLL_SECONDS)
            continue
        seen = 0
        printed.setdefault(name, 0)
        try:
            for chunk in kube.follow_pod_log(name, CONTAINER):
                new = chunk[max(0, printed.get(name, 0) - seen):]
                seen += len(chunk)
                if new:
                    yield new
                printed[name] = max(printed.get(name, 0), seen)
        except NotFound:
            return  # the pod is gone: so is its log
        except Transient:
            pass
        if "terminated" in state:
            return
        time.sleep(POLL_SECONDS)


def _state(pod: dict[str, Any]) -> dict[str, Any]:
    return dict(container_status(pod).get("state") or {})
