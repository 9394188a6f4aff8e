"""The simulated kubelet: acts out each container's scenario on its pod's status.

A pod is created Pending by the Job controller; shortly after, the kubelet
starts its containers (each acts out its own image, see scenarios), or parks
them in the waiting states their images name. Status is rebuilt from the
containers every time (see :mod:`tests.fakekube.containers`), and the Job
controller observes it through the store's events, exactly as in a cluster.

Deletion, as the kubelet sees it: a pod marked with a ``deletionTimestamp``
(graceful deletion) has its containers stopped after
``Timings.pod_termination_grace`` — SIGTERM, exit 143, or 0 for a sidecar that
handles it — and once it has ended, the kubelet's final delete (grace 0)
removes it, or leaves it to its finalizers. :meth:`Kubelet.evict` is the
kubelet's own node-pressure eviction: the pod stays, ``Failed`` with reason
``Evicted``.
"""

import itertools
import logging

from . import deletion
from .containers import ContainerRun, PodRun
from .objects import PODS, being_deleted, timestamp
from .scenarios import Outcome, Waiting, end_lines, start_lines
from .scheduler import Scheduler, Timer
from .store import Event, Store
from .timings import Timings

logger = logging.getLogger(__name__)

NODE_NAME = "fakekube-node"
HOST_IP = "10.0.0.2"
TERMINAL_PHASES = ("Succeeded", "Failed")
SIGTERM = Outcome(143, "Error")
STOPPED = Outcome(0, "Completed")


def is_terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


class Kubelet:
    """Runs every pod's lifecycle on the scheduler thread."""

    def __init__(self, store: Store, scheduler: Scheduler, timings: Timings, run_seconds: float):
        self._store, self._scheduler, self._timings = store, scheduler, timings
        self._run_seconds = run_seconds
        self._pods: dict[str, PodRun] = {}
        self._timers: dict[str, list[Timer]] = {}
        self._stopping: set[str] = set()  # uids whose containers are being stopped for deletion
        self._removing: set[str] = set()  # uids with the final delete scheduled
        self._linger: dict[str, float] = {}  # uid -> seconds to keep the ended pod before removing it
        self._exit_codes: dict[str, int] = {}  # uid -> exit code when stopped for deletion
        self._addresses = itertools.count(10)

    def on_event(self, event: Event) -> None:
        """Store listener (runs under the store lock): only hands the event over."""
        if event.resource is PODS and (event.type != "MODIFIED" or being_deleted(event.object)):
            self._scheduler.call_soon(self._handle, event)

    def _handle(self, event: Event) -> None:
        meta = event.object["metadata"]
        uid = meta["uid"]
        args = (meta["namespace"], meta["name"], uid)
        if event.type == "ADDED":
            self._later(uid, self._timings.start_delay, self._start, *args)
        elif event.type == "DELETED":
            for timer in self._timers.pop(uid, []):
                timer.cancel()
            for table in (self._pods, self._linger, self._exit_codes):
                table.pop(uid, None)
            self._stopping.discard(uid)
            self._removing.discard(uid)
        elif not is_terminal(event.object) and uid not in self._stopping:
            self._stopping.add(uid)
            forced = meta.get("deletionGracePeriodSeconds") == 0
            self._later(uid, 0.0 if forced else self._timings.pod_termination_grace, self._stop_for_deletion, *args)
        elif is_terminal(event.object) and uid not in self._removing:
            self._removing.add(uid)
            self._scheduler.call_later(self._linger.pop(uid, 0.0), self._final_delete, *args)

    def linger(self, uid: str, seconds: float) -> None:
        """Keep the pod ``seconds`` after it ended before the final delete (the Job controller's
        tracking finalizer, as seen from outside); scheduler thread only."""
        self._linger[uid] = seconds

    def _later(self, uid: str, delay: float, callback, *args) -> None:
        self._timers.setdefault(uid, []).append(self._scheduler.call_later(delay, callback, *args))

    def _pod(self, namespace: str, name: str, uid: str) -> dict | None:
        pod = self._store.get(PODS, namespace, name)
        return pod if pod is not None and pod["metadata"]["uid"] == uid else None

    def _write(self, namespace: str, name: str, run: PodRun, also=None) -> None:
        now = timestamp()

        def apply(pod: dict) -> None:
            if also is not None:
                also(pod)
            run.write(pod, now, HOST_IP)

        self._store.update(PODS, namespace, name, apply, uid=run.uid)

    def _start(self, namespace: str, name: str, uid: str) -> PodRun | None:
        pod = self._pod(namespace, name, uid)
        if uid in self._pods or pod is None or is_terminal(pod) or being_deleted(pod):
            return self._pods.get(uid)
        run = self._pods[uid] = PodRun.of(pod, self._run_seconds, self._timings.brief_run)
        now = timestamp()
        for container in run.of_kind("init"):
            container.start(now)
            container.end(STOPPED, now, uid)
        for container in run.of_kind("sidecar", "regular"):
            if container.scenario.waiting and container.kind == "regular":
                self._wait(namespace, name, uid, container.name, container.scenario.waiting, write=False)
                continue
            container.start(now)
            self._store.append_log(namespace, name, container.name, start_lines(container.spec))
            seconds = container.scenario.run_seconds
            if container.kind == "regular" and seconds is not None:
                self._later(uid, seconds, self._container_ended, namespace, name, uid, container.name,
                            container.scenario.outcome)
        if any(c.ran for c in run.of_kind("regular")):
            run.pod_ip = f"10.244.0.{next(self._addresses) % 250 + 2}"
        self._write(namespace, name, run)
        return run

    def _wait(self, namespace: str, name: str, uid: str, container: str, states: tuple[Waiting, ...],
              write: bool = True) -> None:
        run = self._pods.get(uid)
        target = run.get(container) if run else None
        if target is None or target.ran or target.terminated is not None:
            return
        target.wait(states[0].reason, states[0].message)
        if write:
            self._write(namespace, name, run)
        if states[1:]:
            self._later(uid, self._timings.pull_backoff, self._wait, namespace, name, uid, container, states[1:])

    def _container_ended(self, namespace: str, name: str, uid: str, container: str, outcome: Outcome) -> None:
        run = self._pods.get(uid)
        target = run.get(container) if run else None
        if target is None or target.terminated is not None:
            return
        self._end(namespace, name, run, [(target, outcome)])

    def _end(self, namespace: str, name: str, run: PodRun, ends: list[tuple[ContainerRun, Outcome]],
             also=None) -> None:
        """Terminate each container with its outcome, then whatever the pod's rules stop with them."""
        now = timestamp()
        for container, outcome in ends:
            if container.terminated is None:
                if container.ran:
                    self._store.append_log(namespace, name, container.name, end_lines(outcome))
                container.end(outcome, now, run.uid)
        regular = run.of_kind("regular")
        for container in regular:  # a sidecar told to quit once the others have ended
            if (container.scenario.exits_with_others and container.terminated is None
                    and all(c.terminated is not None for c in regular if c is not container)):
                container.end(STOPPED, now, run.uid)
        if run.regular_done:
            for sidecar in run.of_kind("sidecar"):
                sidecar.end(STOPPED if sidecar.scenario.sidecar else SIGTERM, now, run.uid)
            for timer in self._timers.pop(run.uid, []):
                timer.cancel()
        self._write(namespace, name, run, also)
        logger.debug("pod %s/%s: %s ended, phase %s", namespace, name,
                     ",".join(f"{c.name}={o.exit_code}" for c, o in ends), run.phase())

    def _stop_for_deletion(self, namespace: str, name: str, uid: str) -> None:
        pod = self._pod(namespace, name, uid)
        if pod is None or is_terminal(pod):
            return
        run = self._pods.get(uid) or self._pods.setdefault(uid, PodRun.of(pod, self._run_seconds,
                                                                          self._timings.brief_run))
        killed = Outcome(self._exit_codes.get(uid, SIGTERM.exit_code), "Error")
        self._end(namespace, name, run, [(c, STOPPED if c.scenario.sidecar else killed)
                                         for c in run.of_kind("regular") if c.terminated is None])

    def _final_delete(self, namespace: str, name: str, uid: str) -> None:
        deletion.delete(self._store, PODS, namespace, name, None, grace=0, uid=uid)

    def finish(self, namespace: str, name: str, uid: str, outcome: Outcome) -> bool:
        """End the pod's (non-sidecar) regular containers now with ``outcome``, as if they had
        run — even one still waiting to start; False if there was none to end."""
        run = self._start(namespace, name, uid)
        targets = [c for c in run.of_kind("regular") if c.terminated is None and not c.scenario.sidecar] if run else []
        if not targets:
            return False
        now = timestamp()
        for container in targets:
            if not container.ran:
                container.start(now)
                self._store.append_log(namespace, name, container.name, start_lines(container.spec))
        run.pod_ip = run.pod_ip or f"10.244.0.{next(self._addresses) % 250 + 2}"
        self._end(namespace, name, run, [(c, outcome) for c in targets])
        return True

    def stop_with(self, uid: str, exit_code: int) -> None:
        """Stop this pod's containers with ``exit_code`` when it is deleted (instead of 143)."""
        self._exit_codes[uid] = exit_code

    def evict(self, namespace: str, name: str, uid: str, reason: str, message: str, exit_code: int,
              evicted: bool = True) -> None:
        """Fail the pod now: the DisruptionTarget condition (``reason``), containers killed with
        ``exit_code``, phase ``Failed`` — with ``status.reason: Evicted`` and ``message`` for
        the kubelet's node-pressure eviction (``evicted``). The pod stays."""
        run = self._start(namespace, name, uid)
        if run is None:
            raise ValueError(f"pod {namespace}/{name} is being deleted or has ended")
        run.phase_override = "Failed"
        if evicted:
            run.reason, run.message = "Evicted", message
        condition = disruption_condition(reason, message)
        self._end(namespace, name, run, [(c, Outcome(exit_code, "Error")) for c in run.of_kind("regular", "sidecar")],
                  also=lambda p: add_condition(p, condition))


def disruption_condition(reason: str, message: str) -> dict:
    return {"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message,
            "lastProbeTime": None, "lastTransitionTime": timestamp()}


def add_condition(pod: dict, condition: dict) -> None:
    conditions = [c for c in pod["status"].get("conditions") or [] if c.get("type") != condition["type"]]
    pod["status"]["conditions"] = conditions + [condition]
