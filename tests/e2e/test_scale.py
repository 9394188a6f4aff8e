"""200 Jobs in flight at once from one handler at --concurrency 200, on the real control plane.

The handler's API requests are counted by the API server itself: a FlowSchema routes every
request of the handler's ServiceAccount (and only those) to a priority level of its own, and
``apiserver_flowcontrol_dispatched_requests_total`` of that flow schema counts them, but for
the long-running ones (log reads), which API Priority and Fairness does not dispatch.
``apiserver_request_total`` (which has no label for the user) counts those, and the creates
and PATCHes of Jobs, which only the handler makes here.
"""

from __future__ import annotations

import time

import pytest

from tests.support.cluster import total
from tests.support.kubeapi import KubeApi
from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.e2e

IN_FLIGHT = 200


@pytest.fixture
def own_flow_schema(cluster, release):
    name = f"mstc-e2e-{release.namespace}"
    account = next(o["metadata"]["name"] for o in release.objects
                   if o["kind"] == "ServiceAccount" and not o["metadata"]["name"].endswith("-job"))
    base = "/apis/flowcontrol.apiserver.k8s.io/v1"
    cluster.admin.post(f"{base}/prioritylevelconfigurations", {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
        "metadata": {"name": name},
        "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 100,
                                                "limitResponse": {"type": "Queue", "queuing": {
                                                    "queues": 16, "handSize": 4, "queueLengthLimit": 500}}}}})
    cluster.admin.post(f"{base}/flowschemas", {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": name},
        "spec": {"priorityLevelConfiguration": {"name": name}, "matchingPrecedence": 500,
                 "distinguisherMethod": {"type": "ByUser"},
                 "rules": [{"subjects": [{"kind": "ServiceAccount", "serviceAccount": {
                     "name": account, "namespace": release.namespace}}],
                     "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                        "namespaces": ["*"], "clusterScope": True}],
                     "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}})
    yield name
    cluster.admin.delete(f"{base}/flowschemas/{name}")
    cluster.admin.delete(f"{base}/prioritylevelconfigurations/{name}")


@pytest.mark.timeout(900)
def test_two_hundred_jobs_in_flight_are_all_replied_once_with_few_api_requests_each(
        cluster, namespace, handlers, requester, recorder, own_flow_schema):
    before = cluster.metrics()
    started = time.monotonic()
    handlers.spawn(concurrency=IN_FLIGHT, job_ttl_seconds=600)
    cids = [requester.submit(job_request("e2e/ok:20", jobName=f"scale-{i}")) for i in range(IN_FLIGHT)]
    for cid in cids:
        assert requester.wait_reply(cid, timeout=600)["data"]["status"] == "succeeded"
    took = time.monotonic() - started
    requester.collect(3)
    assert sorted(len(requester.terminal_replies_for(cid)) for cid in cids) == [1] * IN_FLIGHT
    assert len(recorder.jobs) == IN_FLIGHT and len(recorder.pods) == IN_FLIGHT
    # Each request ends with the PATCH that records the reply and releases the finalizer.
    wait_until(lambda: not [j for j in cluster.admin.list_items(KubeApi.jobs(namespace))
                            if j["metadata"].get("finalizers")], "every Job released", timeout=120)
    after = cluster.metrics()

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    dispatched = delta("apiserver_flowcontrol_dispatched_requests_total", flow_schema=own_flow_schema)
    creates = delta("apiserver_request_total", verb="POST", resource="jobs", code="201")
    patches = delta("apiserver_request_total", verb="PATCH", resource="jobs", subresource="")
    logs = delta("apiserver_request_total", verb="CONNECT", resource="pods", subresource="log") + delta(
        "apiserver_request_total", verb="GET", resource="pods", subresource="log")
    # Log reads are long-running requests, which API Priority and Fairness does not dispatch;
    # only the handler reads logs.
    handler_requests = dispatched + logs
    print(f"\n{IN_FLIGHT} Jobs in {took:.0f} s: {handler_requests:.0f} handler API requests "  # noqa: T201
          f"({handler_requests / IN_FLIGHT:.2f} per Job): {creates:.0f} Job creates, {patches:.0f} Job patches, "
          f"{logs:.0f} log reads")
    assert creates == IN_FLIGHT and patches >= IN_FLIGHT
    assert logs == IN_FLIGHT
    # One create, one log read and one PATCH (the reply recorded, the finalizer released) per
    # Job, and a handful of LISTs and watches for all of them.
    assert 3 * IN_FLIGHT <= handler_requests <= 3 * IN_FLIGHT + 20, handler_requests
