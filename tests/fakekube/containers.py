"""A pod's containers as the kubelet tracks them, and the status it reports for them.

Pure bookkeeping, after the kubelet's ``generateAPIPodStatus`` as the docs' "Pod
Lifecycle" and "Sidecar Containers" pages describe it:

- ``status.containerStatuses`` lists the regular containers sorted by name (so
  an injected ``istio-proxy`` comes before ``main``); ``initContainerStatuses``
  lists init containers in spec order. Plain init containers run to completion
  first (the fake completes them at once); native sidecars (init containers
  with ``restartPolicy: Always``) run alongside the regular containers.
- The phase follows the regular containers only (``restartPolicy: Never``):
  Pending while one has not started, Running while one runs, then Succeeded if
  all exited 0, else Failed. The kubelet may force Failed (node-pressure
  eviction, with ``status.reason: Evicted``).
- ``Ready`` is True only while the pod runs and every container (sidecars
  included) is running; conditions the kubelet does not own (such as
  ``DisruptionTarget``) are kept after its own.
"""

import hashlib
from dataclasses import dataclass, field

from .scenarios import Outcome, Scenario, parse

KUBELET_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
UNKNOWN_MESSAGE = "The container could not be located when the pod was terminated"


@dataclass
class ContainerRun:
    spec: dict
    kind: str  # "init" (runs to completion first), "sidecar" (native), "regular"
    scenario: Scenario
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    ran: bool = False

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return "running" in self.state

    @property
    def terminated(self) -> dict | None:
        return self.state.get("terminated")

    def start(self, now: str) -> None:
        self.state, self.ran = {"running": {"startedAt": now}}, True

    def wait(self, reason: str, message: str) -> None:
        self.state = {"waiting": {"reason": reason, "message": message}}

    def end(self, outcome: Outcome, now: str, uid: str) -> None:
        """Terminate with ``outcome``; a container that never ran is ``ContainerStatusUnknown``."""
        if self.terminated is not None:
            return
        if not self.ran:
            self.state = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                         "message": UNKNOWN_MESSAGE, "finishedAt": now}}
            return
        self.state = {"terminated": {"exitCode": outcome.exit_code, "reason": outcome.reason,
                                     "startedAt": self.state["running"]["startedAt"], "finishedAt": now,
                                     "containerID": container_id(uid, self.name)}}

    def status(self, uid: str) -> dict:
        image = self.spec.get("image", "")
        status = {"name": self.name, "image": image, "imageID": "", "ready": self.running,
                  "restartCount": 0, "started": self.running, "state": self.state, "lastState": {}}
        if self.ran:
            status["imageID"] = f"docker.io/{image}@sha256:{'0' * 64}"
            status["containerID"] = container_id(uid, self.name)
        return status


def container_id(uid: str, name: str) -> str:
    return "containerd://" + hashlib.sha256(f"{uid}/{name}".encode()).hexdigest()


@dataclass
class PodRun:
    """The kubelet's memory of one pod (by uid)."""

    uid: str
    containers: list[ContainerRun]
    pod_ip: str | None = None
    phase_override: str | None = None  # "Failed" for an evicted pod
    reason: str | None = None
    message: str | None = None

    @classmethod
    def of(cls, pod: dict, run_seconds: float, brief_seconds: float) -> "PodRun":
        spec = pod["spec"]
        runs = [ContainerRun(c, "sidecar" if c.get("restartPolicy") == "Always" else "init",
                             parse(c.get("image", ""), run_seconds, brief_seconds))
                for c in spec.get("initContainers") or []]
        runs += [ContainerRun(c, "regular", parse(c.get("image", ""), run_seconds, brief_seconds))
                 for c in spec.get("containers") or []]
        return cls(pod["metadata"]["uid"], runs)

    def of_kind(self, *kinds: str) -> list[ContainerRun]:
        return [c for c in self.containers if c.kind in kinds]

    def get(self, name: str) -> ContainerRun | None:
        return next((c for c in self.containers if c.name == name), None)

    @property
    def regular_done(self) -> bool:
        return all(c.terminated is not None for c in self.of_kind("regular"))

    def phase(self) -> str:
        if self.phase_override:
            return self.phase_override
        regular = self.of_kind("regular")
        if all(c.terminated is not None for c in regular):
            return "Succeeded" if all(c.terminated["exitCode"] == 0 for c in regular) else "Failed"
        if any(not c.ran for c in regular):
            return "Pending"
        return "Running"

    def write(self, pod: dict, now: str, host_ip: str) -> None:
        """Rewrite ``pod['status']`` from the containers (keeping conditions the kubelet does not own)."""
        status = pod["status"]
        phase = self.phase()
        status["phase"] = phase
        status.update(hostIP=host_ip, hostIPs=[{"ip": host_ip}])
        if self.pod_ip:
            status.update(podIP=self.pod_ip, podIPs=[{"ip": self.pod_ip}])
        status.setdefault("startTime", now)
        status["containerStatuses"] = sorted((c.status(self.uid) for c in self.of_kind("regular")),
                                             key=lambda s: s["name"])
        if self.of_kind("init", "sidecar"):
            status["initContainerStatuses"] = [c.status(self.uid) for c in self.of_kind("init", "sidecar")]
        if self.reason:
            status.update(reason=self.reason, message=self.message)
        kept = [c for c in status.get("conditions") or [] if c.get("type") not in KUBELET_CONDITIONS]
        status["conditions"] = self._conditions(phase, now) + kept

    def _conditions(self, phase: str, now: str) -> list[dict]:
        unready = [c.name for c in self.of_kind("regular", "sidecar") if not c.running]
        ready = phase == "Running" and not unready
        reason = message = None
        if phase in ("Succeeded", "Failed"):
            reason = "PodCompleted" if phase == "Succeeded" else "PodFailed"
        elif not ready:
            reason, message = "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"

        def condition(kind: str, ok: bool, why: str | None = None, text: str | None = None) -> dict:
            cond = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
                    "lastTransitionTime": now}
            if why:
                cond["reason"] = why
            if text:
                cond["message"] = text
            return cond

        return [condition("PodReadyToStartContainers", True), condition("Initialized", True),
                condition("Ready", ready, reason, message), condition("ContainersReady", ready, reason, message),
                condition("PodScheduled", True)]
