"""The simulated kubelet: acts out each pod's scenario on its status.

A pod is created Pending by the Job controller; shortly after, the kubelet
either starts it (Running, ready, start lines logged, an end timer armed) or
parks it in the waiting states its image names. Termination writes the
container's ``terminated`` state and the pod phase, which the Job controller
observes through the store's events, exactly as in a cluster.
"""

import itertools
import logging

from .objects import PODS, timestamp
from .scenarios import Outcome, Waiting, end_lines, parse, start_lines
from .scheduler import Scheduler, Timer
from .store import Event, Store
from .timings import Timings

logger = logging.getLogger(__name__)

NODE_NAME = "fakekube-node"
HOST_IP = "10.0.0.2"
TERMINAL_PHASES = ("Succeeded", "Failed")


def is_terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def _condition(kind: str, ok: bool, now: str, reason: str | None = None) -> dict:
    condition = {"type": kind, "status": "True" if ok else "False", "lastProbeTime": None,
                 "lastTransitionTime": now}
    if reason:
        condition["reason"] = reason
    return condition


def _conditions(now: str, ready: bool, reason: str | None = None) -> list[dict]:
    not_ready = None if ready else reason or "ContainersNotReady"
    return [_condition("PodReadyToStartContainers", True, now), _condition("Initialized", True, now),
            _condition("Ready", ready, now, not_ready), _condition("ContainersReady", ready, now, not_ready),
            _condition("PodScheduled", True, now)]


def _container_statuses(pod: dict, state: dict, ran: bool, ready: bool) -> list[dict]:
    statuses = []
    for container in pod["spec"]["containers"]:
        status = {"name": container["name"], "image": container["image"], "imageID": "",
                  "ready": ready, "restartCount": 0, "started": ready, "state": state, "lastState": {}}
        if ran:
            status["imageID"] = f"docker.io/{container['image']}@sha256:{'0' * 64}"
            status["containerID"] = f"containerd://{pod['metadata']['uid'].replace('-', '')}"
        statuses.append(status)
    return statuses


class Kubelet:
    """Runs every pod's lifecycle on the scheduler thread."""

    def __init__(self, store: Store, scheduler: Scheduler, timings: Timings, run_seconds: float):
        self._store, self._scheduler, self._timings = store, scheduler, timings
        self._run_seconds = run_seconds
        self._timers: dict[str, list[Timer]] = {}
        self._started: dict[str, str] = {}  # pod uid -> container startedAt
        self._addresses = itertools.count(10)

    def on_event(self, event: Event) -> None:
        """Store listener (runs under the store lock): only hands the event over."""
        if event.resource is PODS and event.type in ("ADDED", "DELETED"):
            self._scheduler.call_soon(self._handle, event)

    def _handle(self, event: Event) -> None:
        meta = event.object["metadata"]
        if event.type == "ADDED":
            self._later(meta["uid"], self._timings.start_delay, self._start, meta["namespace"],
                        meta["name"], meta["uid"])
        else:
            for timer in self._timers.pop(meta["uid"], []):
                timer.cancel()
            self._started.pop(meta["uid"], None)

    def _later(self, uid: str, delay: float, callback, *args) -> None:
        self._timers.setdefault(uid, []).append(self._scheduler.call_later(delay, callback, *args))

    def _start(self, namespace: str, name: str, uid: str) -> None:
        pod = self._store.get(PODS, namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid or is_terminal(pod):
            return
        container = pod["spec"]["containers"][0]
        scenario = parse(container["image"], self._run_seconds, self._timings.brief_run)
        if scenario.waiting:
            self._wait(namespace, name, uid, scenario.waiting)
            return
        now = timestamp()
        pod_ip = f"10.244.0.{next(self._addresses) % 250 + 2}"

        def running(pod: dict) -> None:
            status = pod["status"]
            status.update(phase="Running", hostIP=HOST_IP, hostIPs=[{"ip": HOST_IP}], podIP=pod_ip,
                          podIPs=[{"ip": pod_ip}], conditions=_conditions(now, True))
            status.setdefault("startTime", now)
            status["containerStatuses"] = _container_statuses(
                pod, {"running": {"startedAt": now}}, ran=True, ready=True)

        self._store.update(PODS, namespace, name, running, uid=uid)
        self._log_start(pod, now)
        if scenario.run_seconds is not None:
            self._later(uid, scenario.run_seconds, self.terminate, namespace, name, uid, scenario.outcome)

    def _wait(self, namespace: str, name: str, uid: str, states: tuple[Waiting, ...]) -> None:
        now, waiting = timestamp(), states[0]

        def parked(pod: dict) -> None:
            status = pod["status"]
            status.update(hostIP=HOST_IP, hostIPs=[{"ip": HOST_IP}], conditions=_conditions(now, False))
            status.setdefault("startTime", now)
            status["containerStatuses"] = _container_statuses(
                pod, {"waiting": {"reason": waiting.reason, "message": waiting.message}},
                ran=False, ready=False)

        if self._store.update(PODS, namespace, name, parked, uid=uid) is not None and states[1:]:
            self._later(uid, self._timings.pull_backoff, self._wait, namespace, name, uid, states[1:])

    def _log_start(self, pod: dict, now: str) -> None:
        meta = pod["metadata"]
        if meta["uid"] not in self._started:
            self._started[meta["uid"]] = now
            self._store.append_log(meta["namespace"], meta["name"], start_lines(pod["spec"]["containers"][0]))

    def terminate(self, namespace: str, name: str, uid: str, outcome: Outcome, deleting: bool = False) -> bool:
        """End the pod's container with ``outcome``; False if it already ended or is gone."""
        pod = self._store.get(PODS, namespace, name)
        if pod is None or pod["metadata"]["uid"] != uid or is_terminal(pod):
            return False
        now = timestamp()
        self._log_start(pod, now)
        started = self._started[uid]
        self._store.append_log(namespace, name, end_lines(outcome))

        def terminated(pod: dict) -> None:
            phase = "Succeeded" if outcome.succeeded else "Failed"
            state = {"terminated": {"exitCode": outcome.exit_code, "reason": outcome.reason,
                                    "startedAt": started, "finishedAt": now,
                                    "containerID": f"containerd://{uid.replace('-', '')}"}}
            status = pod["status"]
            status.update(phase=phase, conditions=_conditions(now, False, "PodCompleted" if
                                                              outcome.succeeded else "PodFailed"))
            status.setdefault("startTime", now)
            status["containerStatuses"] = _container_statuses(pod, state, ran=True, ready=False)
            if deleting:
                pod["metadata"].update(deletionTimestamp=now, deletionGracePeriodSeconds=30)

        for timer in self._timers.pop(uid, []):
            timer.cancel()
        self._store.update(PODS, namespace, name, terminated, uid=uid)
        logger.debug("pod %s/%s terminated: exit %d (%s)", namespace, name, outcome.exit_code, outcome.reason)
        return True
