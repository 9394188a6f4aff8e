"""Disrupting a running pod, as the cluster's disruptors do it (``FakeKube.disrupt_pod``).

Follows the docs' "Disruptions" page (Pod disruption conditions, GA in 1.31):
before it removes a pod, the disruptor adds the pod condition
``DisruptionTarget`` (status True) whose reason says who did it:

=========================  ==========================================================
``EvictionByEvictionAPI``  the Eviction API (``kubectl drain``): condition, then a
                           graceful delete; containers get SIGTERM (exit 143)
``PreemptionByScheduler``  the scheduler making room: the same
``DeletionByTaintManager`` a NoExecute taint on the node: the same
``TerminationByKubelet``   node-pressure eviction by the kubelet: containers killed,
                           the pod kept with ``phase: Failed``, ``reason: Evicted``
                           and the kubelet's message
``DeletionByPodGC``        the pod GC after the node vanished: ``phase: Failed``,
                           then a force delete (grace 0)
=========================  ==========================================================

The Job controller then sees a failed pod carrying the condition, which a
``podFailurePolicy`` rule ``onPodConditions: [{type: DisruptionTarget}]`` can
``Ignore`` (see :mod:`tests.fakekube.failurepolicy`).
"""

from . import deletion
from .kubelet import Kubelet, add_condition, disruption_condition, is_terminal
from .objects import PODS
from .store import Store

NODE_PRESSURE_MESSAGE = ("The node was low on resource: memory. Threshold quantity: 100Mi, available: 42Mi. "
                         "Container main was using 1536Mi, request is 0, has larger consumption of memory. ")
MESSAGES = {
    "EvictionByEvictionAPI": "Eviction API: evicting",
    "PreemptionByScheduler": "{scheduler}: preempting to accommodate a higher priority pod",
    "DeletionByTaintManager": "Taint manager: deleting due to NoExecute taint",
    "TerminationByKubelet": NODE_PRESSURE_MESSAGE,
    "DeletionByPodGC": "PodGC: node no longer exists",
}


def disrupt(store: Store, kubelet: Kubelet, namespace: str, name: str, reason: str, message: str | None,
            exit_code: int) -> None:
    """Disrupt the running pod; scheduler thread only. Raises LookupError, ValueError."""
    if reason not in MESSAGES:
        raise ValueError(f"unknown disruption reason {reason!r}: one of {', '.join(MESSAGES)}")
    pod = store.get(PODS, namespace, name)
    if pod is None:
        raise LookupError(f"no pod {namespace}/{name}")
    if is_terminal(pod):
        raise ValueError(f"pod {namespace}/{name} has already ended")
    uid = pod["metadata"]["uid"]
    text = message or MESSAGES[reason].format(scheduler=pod["spec"].get("schedulerName", "default-scheduler"))
    if reason == "TerminationByKubelet":
        kubelet.evict(namespace, name, uid, reason, text, exit_code)
        return
    if reason == "DeletionByPodGC":
        kubelet.evict(namespace, name, uid, reason, text, exit_code, evicted=False)
        deletion.delete(store, PODS, namespace, name, "Background", grace=0, uid=uid)
        return
    condition = disruption_condition(reason, text)
    store.update(PODS, namespace, name, lambda p: add_condition(p, condition), uid=uid)
    kubelet.stop_with(uid, exit_code)
    deletion.delete(store, PODS, namespace, name, "Background", uid=uid)
