"""A Job's pod from its template, and what admission does to it before it is stored.

The Job controller builds each pod from ``spec.template`` (generated name,
controller ownerReference with ``blockOwnerDeletion``, the completion index
annotation of an Indexed Job) and creates it; on the way in:

- a mutating webhook may inject a sidecar, as Istio's injector adds
  ``istio-proxy`` to pods of a labelled namespace: a plain container (the
  classic sidecar, which keeps the pod Running after the main container ends
  unless it is told to quit) or a native sidecar (an init container with
  ``restartPolicy: Always``, Kubernetes 1.29+). Knob: :class:`Sidecar` via
  ``FakeKube.inject_sidecar``.
- validating admission may refuse it, and the controller then records a
  ``FailedCreate`` Event and retries: a ResourceQuota on ``pods``
  (``FakeKube.set_pod_quota``; only non-terminal pods count, as the quota
  controller counts them) or Pod Security at the ``restricted`` level, judged on
  the pod's securityContext (:mod:`.podsecurity`) in the namespaces where it is
  enforced (``FakeKube(pod_security="restricted")`` everywhere,
  ``FakeKube.enforce_pod_security`` per namespace). Messages are worded as the
  API server words them.
"""

import copy
from collections.abc import Callable
from dataclasses import dataclass

from .kubelet import NODE_NAME
from .objects import JOBS, random_suffix, timestamp
from .podsecurity import refusal as pod_security_refusal

INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


@dataclass(frozen=True)
class Sidecar:
    """The container a sidecar injector adds to every pod (of a namespace, or everywhere).

    ``image`` picks its behaviour like any container's (see scenarios):
    ``scenario/sidecar`` runs until stopped; ``scenario/sidecar:exits`` quits
    once the other containers have ended. ``native`` injects it as an init
    container with ``restartPolicy: Always`` instead, which the kubelet stops
    when the regular containers end.
    """

    name: str = "istio-proxy"
    image: str = "scenario/sidecar"
    native: bool = False

    def container(self) -> dict:
        container = {"name": self.name, "image": self.image, "imagePullPolicy": "IfNotPresent",
                     "resources": {}, "terminationMessagePath": "/dev/termination-log",
                     "terminationMessagePolicy": "File"}
        if self.native:
            container["restartPolicy"] = "Always"
        return container


def build_pod(job: dict, index: int | None = None) -> dict:
    """The pod the Job controller creates from ``job``'s template (not yet admitted)."""
    meta_job = job["metadata"]
    template = job["spec"]["template"]
    meta = copy.deepcopy(template.get("metadata") or {})
    meta.update(name=f"{meta_job['name']}-{random_suffix()}", generateName=f"{meta_job['name']}-",
                namespace=meta_job["namespace"], ownerReferences=[{
                    "apiVersion": JOBS.api_version, "kind": JOBS.kind, "name": meta_job["name"],
                    "uid": meta_job["uid"], "controller": True, "blockOwnerDeletion": True}])
    if index is not None:
        meta.setdefault("annotations", {})[INDEX_ANNOTATION] = str(index)
        meta.setdefault("labels", {})[INDEX_ANNOTATION] = str(index)
    spec = copy.deepcopy(template["spec"])
    spec["nodeName"] = NODE_NAME
    if index is not None:
        for container in spec.get("containers") or []:
            container.setdefault("env", []).append({"name": "JOB_COMPLETION_INDEX", "value": str(index)})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": {
        "phase": "Pending", "qosClass": "BestEffort",
        "conditions": [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                        "lastTransitionTime": timestamp()}]}}


class PodAdmission:
    """The per-namespace admission settings; set from the test thread, read by the controller."""

    def __init__(self):
        self.quotas: dict[str, tuple[str, int]] = {}  # namespace -> (quota name, hard pods)
        self.sidecars: dict[str | None, Sidecar] = {}  # namespace (None: every namespace) -> sidecar
        self.pod_security: dict[str | None, str] = {}  # namespace (None: every namespace) -> enforced level

    def refusal(self, pod: dict, used_pods: Callable[[], int]) -> str | None:
        """Why the API server would refuse to create ``pod`` (``used_pods()`` counts the pods
        charged to the namespace's quota), as its error message; None to admit it."""
        meta = pod["metadata"]
        prefix = f'pods "{meta["name"]}" is forbidden: '
        level = self.pod_security.get(meta["namespace"], self.pod_security.get(None, "privileged"))
        if level == "restricted" and (refused := pod_security_refusal(pod)):
            return refused
        quota = self.quotas.get(meta["namespace"])
        used = used_pods() if quota is not None else 0
        if quota is not None and used + 1 > quota[1]:
            name, hard = quota
            return f"{prefix}exceeded quota: {name}, requested: pods=1, used: pods={used}, limited: pods={hard}"
        return None

    def mutate(self, pod: dict) -> None:
        """The mutating webhooks: inject the namespace's sidecar, if any."""
        sidecar = self.sidecars.get(pod["metadata"]["namespace"], self.sidecars.get(None))
        if sidecar is None:
            return
        spec = pod["spec"]
        key = "initContainers" if sidecar.native else "containers"
        if all(c.get("name") != sidecar.name for c in spec.get(key) or []):
            containers = spec.setdefault(key, [])
            if sidecar.native:
                containers.insert(0, sidecar.container())
            else:
                containers.append(sidecar.container())
            pod["metadata"].setdefault("annotations", {})["sidecar.istio.io/status"] = (
                f'{{"containers":["{sidecar.name}"]}}')
