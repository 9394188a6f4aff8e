"""Crashes on both sides: the handler SIGKILLed, the API server SIGKILLed, etcd compacted under
a watch. The Job is the durable state; the broker redelivers what was never acked; no reply is
lost or doubled, and no work runs twice."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request

import pytest

from tests.e2e.conftest import remaining_jobs, remaining_pods
from tests.support.cluster import total
from tests.support.kubeapi import KubeApi
from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.e2e

FINALIZER = "cloud-worker.mstc.io/reply"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def handler_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_a_handler_killed_mid_job_leaves_it_to_a_new_handler_that_adopts_it_one_job_one_reply(
        cluster, namespace, handlers, requester, recorder):
    first = handlers.spawn()
    cid = requester.submit(job_request("e2e/ok:6"))
    wait_until(lambda: remaining_jobs(cluster, namespace), "the first handler created the Job", timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    handlers.spawn()
    data = requester.wait_reply(cid, timeout=90)["data"]
    assert data["status"] == "succeeded", data
    requester.collect(3)
    assert len(requester.terminal_replies_for(cid)) == 1
    assert len(recorder.jobs) == 1 and len(recorder.pods) == 1, (recorder.jobs, recorder.pods)
    assert data["jobName"] in recorder.jobs.values()
    assert requester.queue_depth() == 0


@pytest.mark.timeout(240)
def test_a_job_held_past_its_ttl_by_the_finalizer_is_adopted_by_the_redelivery_never_rerun(
        cluster, namespace, handlers, requester, recorder):
    """The TTL controller deletes in the foreground: the pods go, the Job waits for its reply."""
    first = handlers.spawn(job_ttl_seconds=1)
    cid = requester.submit(job_request("e2e/ok:1"))
    wait_until(lambda: remaining_jobs(cluster, namespace), "the Job was created", timeout=60)
    first.send_signal(signal.SIGKILL)  # nobody will reply for now
    first.wait(10)

    def held() -> dict | None:
        jobs = remaining_jobs(cluster, namespace)
        deleting = [j for j in jobs if j["metadata"].get("deletionTimestamp")]
        return deleting[0] if deleting and not remaining_pods(cluster, namespace) else None

    wait_until(held, "the TTL controller deleted the pod and marked the Job for deletion", timeout=60)
    time.sleep(5)  # well past the TTL: the finalizer holds the Job, with its status
    job = held()
    assert job is not None, remaining_jobs(cluster, namespace)
    assert FINALIZER in job["metadata"]["finalizers"]
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])

    handlers.spawn(job_ttl_seconds=1)  # the broker redelivers the unacked request to it
    data = requester.wait_reply(cid, timeout=60)["data"]
    # Succeeded, from the Job's own status; the pod (its exit code, its log) went with the TTL.
    assert (data["status"], data["reason"], data["exitCode"]) == ("succeeded", "Completed", None), data
    assert len(recorder.jobs) == 1 and len(recorder.pods) == 1, "the work ran again"
    wait_until(lambda: not remaining_jobs(cluster, namespace), "the released Job is deleted", timeout=60)
    requester.collect(2)
    assert len(requester.terminal_replies_for(cid)) == 1
    assert requester.queue_depth() == 0


@pytest.mark.timeout(400)
def test_the_api_server_killed_and_restarted_mid_flight_loses_and_doubles_no_reply(
        cluster, namespace, handlers, requester, recorder):
    handlers.spawn(concurrency=20)
    cids = [requester.submit(job_request("e2e/ok:8", jobName=f"flight-{i}")) for i in range(20)]
    wait_until(lambda: len(remaining_jobs(cluster, namespace)) == 20, "20 Jobs exist", timeout=120)
    cluster.kill("kube-apiserver")
    time.sleep(5)
    cluster.start()
    for cid in cids:
        assert requester.wait_reply(cid, timeout=180)["data"]["status"] == "succeeded"
    requester.collect(3)
    assert sorted(len(requester.terminal_replies_for(cid)) for cid in cids) == [1] * 20
    # One Job per request. Pods may be more: a pod the Job controller created as the API
    # server died, its answer lost, is created again (the Job still ends once, by the first).
    assert len(recorder.jobs) == 20 and len(recorder.pods) >= 20
    assert requester.queue_depth() == 0


@pytest.mark.timeout(300)
def test_a_watch_resumed_after_an_etcd_compaction_gets_410_and_relists_losing_nothing(
        cluster, namespace, handlers, requester, recorder):
    port = free_port()
    handlers.spawn(http_port=port, watch_timeout_seconds=30)
    cid = requester.submit(job_request("e2e/ok:10"))
    wait_until(lambda: remaining_pods(cluster, namespace), "the Job's pod exists", timeout=60)
    time.sleep(1)
    relists = total(handler_metrics(port), "cloud_worker_watch_relists_total")
    # The handler's watch is cut with the API server; meanwhile etcd moves on and is compacted,
    # so the resourceVersion the handler resumes from no longer exists anywhere.
    cluster.kill("kube-apiserver")
    for i in range(20):
        cluster.etcd_put(f"/e2e-filler/{namespace}/{i}", "x")
    cluster.etcd_compact(cluster.etcd_revision())
    cluster.start()
    data = requester.wait_reply(cid, timeout=120)["data"]
    assert data["status"] == "succeeded", data
    assert total(handler_metrics(port), "cloud_worker_watch_relists_total") > relists
    requester.collect(2)
    assert len(requester.terminal_replies_for(cid)) == 1
    assert len(recorder.jobs) == 1


def test_the_watch_cache_answers_410_for_a_compacted_resource_version(cluster, namespace):
    """The API-level fact behind the previous test, without a handler."""
    before = cluster.admin.get(KubeApi.jobs(namespace))["metadata"]["resourceVersion"]
    for i in range(5):
        cluster.etcd_put(f"/e2e-filler/{namespace}/{i}", "x")
    cluster.etcd_compact(cluster.etcd_revision())
    cluster.kill("kube-apiserver")
    cluster.start()
    events = list(cluster.admin.watch(KubeApi.jobs(namespace), timeout=5, resourceVersion=before))
    assert events and events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410, events
