"""Job profiles on the real control plane: the real scheduler places a profile's pod by the
profile's nodeSelector, tolerations and resources, and a profile no node can take is reported
``Unschedulable`` within the grace, not as a timeout.

Each test adds a kwok node of its own (``kwok.x-k8s.io/node: fake``, so kwok runs its pods with
the Stages of scripts/cluster/stages/): labelled ``e2e.mstc.io/pool=<its name>``, tainted
``nvidia.com/gpu=present:NoSchedule`` and advertising 4 ``nvidia.com/gpu`` in its status (as a
device plugin would), and deletes it afterwards. The taint keeps every other test's pods off
it. The profiles come from the chart's ``profiles`` value (the rendered ConfigMap's file is the
one the handler loads), the handler runs as the e2e suite runs it (tests/e2e/conftest.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.e2e

GPUS = "4"
POOL_LABEL = "e2e.mstc.io/pool"
TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture
def gpu_node(cluster) -> Iterator[str]:
    """A Ready kwok node with the pool label, the GPU taint and 4 GPUs; its name is its pool."""
    name = f"e2e-gpu-{uuid.uuid4().hex[:8]}"
    cluster.admin.post("/api/v1/nodes", {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                     "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64", POOL_LABEL: name}},
        "spec": {"taints": [TAINT]},
    })
    try:
        wait_until(lambda: _ready(cluster.admin.get(f"/api/v1/nodes/{name}")), f"kwok makes node {name} Ready",
                   timeout=60)
        # What a device plugin does: advertise the extended resource in the node's status.
        cluster.admin.merge_patch(f"/api/v1/nodes/{name}/status", {"status": {
            "capacity": {"nvidia.com/gpu": GPUS}, "allocatable": {"nvidia.com/gpu": GPUS}}})
        yield name
    finally:
        cluster.admin.delete(f"/api/v1/nodes/{name}")


def _ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in (node.get("status") or {}).get("conditions")
               or ())


def profiles_for(pool: str) -> dict[str, Any]:
    """The chart's ``profiles`` value: a GPU profile that fits the pool's node, and two no node can take."""
    gpu = {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi", "nvidia.com/gpu": 1}},
           "nodeSelector": {POOL_LABEL: pool}, "tolerations": [TOLERATION], "maxInFlight": 2}
    return {"default": "standard", "profiles": {
        "standard": {},
        "gpu": gpu,
        "nowhere": {"nodeSelector": {POOL_LABEL: f"{pool}-absent"}, "tolerations": [TOLERATION]},
        "too-many-gpus": {**gpu, "resources": {"limits": {"nvidia.com/gpu": 8}}},
    }}


@pytest.fixture
def profiled(cluster, namespace: str, tmp_path: Path, rabbitmq: str, queue_name: str, gpu_node: str):
    """The chart applied with the profiles value, and handlers loading the file it renders."""
    from tests.e2e.conftest import DeployedHandlers, Release

    values = tmp_path / "profiles-values.yaml"
    values.write_text(yaml.safe_dump({"profiles": profiles_for(gpu_node)}))
    release = Release(cluster, namespace, tmp_path, rabbitmq, "--values", str(values))
    (rendered,) = [o for o in release.objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith(
        "-profiles")]
    assert release.settings["CLOUD_WORKER_PROFILES_FILE"].endswith("/profiles.yaml")
    # The handler runs outside the cluster: the file the pods would mount, as a local file.
    local = tmp_path / "profiles.yaml"
    local.write_text(rendered["data"]["profiles.yaml"])
    handlers = DeployedHandlers(release, rabbitmq, queue_name, tmp_path)
    handlers.extra_queues.update({f"{queue_name}.cancel", f"{queue_name}.profile.gpu",
                                  f"{queue_name}.profile.too-many-gpus"})
    yield handlers, local
    handlers.close()


def pods_of(cluster, namespace: str, profile: str) -> list[dict[str, Any]]:
    return cluster.admin.list_items(f"/api/v1/namespaces/{namespace}/pods",
                                    labelSelector=f"cloud-worker.mstc.io/profile={profile}")


def test_the_real_scheduler_places_a_gpu_profiles_pod_on_the_node_with_its_label_taint_and_gpus(
        cluster, namespace, profiled, requester, gpu_node):
    handlers, profiles = profiled
    handlers.spawn(profiles_file=profiles, job_ttl_seconds=300)  # keep the pods to look at
    gpu = requester.submit(job_request("e2e/ok:1", profile="gpu"))
    plain = requester.submit(job_request("e2e/ok:1"))
    gpu_data, plain_data = requester.wait_reply(gpu, timeout=90)["data"], requester.wait_reply(plain, timeout=90)["data"]
    assert (gpu_data["status"], gpu_data["profile"], gpu_data["exitCode"]) == ("succeeded", "gpu", 0), gpu_data
    assert (plain_data["status"], plain_data["profile"]) == ("succeeded", "standard"), plain_data
    (gpu_pod,) = pods_of(cluster, namespace, "gpu")
    (plain_pod,) = pods_of(cluster, namespace, "standard")
    # Placed by the scheduler (the Job's template names no node), on the one node that fits.
    scheduled = next(c for c in gpu_pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert scheduled["status"] == "True" and gpu_pod["spec"]["nodeName"] == gpu_node
    assert gpu_pod["spec"]["nodeSelector"] == {POOL_LABEL: gpu_node} and TOLERATION in gpu_pod["spec"]["tolerations"]
    (container,) = [c for c in gpu_pod["spec"]["containers"] if c["name"] == "job"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"  # an extended resource's request is its limit
    # Without the profile's toleration a pod never lands on the tainted node.
    assert plain_pod["spec"]["nodeName"] != gpu_node


@pytest.mark.parametrize("profile, why", [
    ("nowhere", "didn't match Pod's node affinity/selector"),
    ("too-many-gpus", "Insufficient nvidia.com/gpu"),
])
def test_a_profile_no_node_can_take_is_reported_unschedulable_within_the_grace_not_as_a_timeout(
        cluster, namespace, profiled, requester, profile, why):
    handlers, profiles = profiled
    handlers.spawn(profiles_file=profiles, unschedulable_grace_seconds=3)
    cid = requester.submit(job_request("e2e/ok:1", profile=profile, timeOut=5))
    started = time.monotonic()
    data = requester.wait_reply(cid, timeout=60)["data"]
    took = time.monotonic() - started
    assert (data["status"], data["reason"], data["profile"]) == ("failed", "Unschedulable", profile), data
    assert why in data["message"] and data["message"].startswith("pod "), data["message"]
    assert took < 30, took  # the grace (3 s) and the scheduler's retries, far from the 5-minute deadline
    # The Job was deleted, and its pod never got a node.
    wait_until(lambda: not cluster.admin.list_items(f"/apis/batch/v1/namespaces/{namespace}/jobs"),
               "the unschedulable Job is deleted", timeout=60)
    assert all(not p["spec"].get("nodeName") for p in pods_of(cluster, namespace, profile))
