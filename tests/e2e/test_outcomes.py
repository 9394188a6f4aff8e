"""Each outcome of a Job, decided by the real Job controller and reported by the deployed handler.

kwok plays the kubelet by the pod's image (scripts/cluster/stages/): ``e2e/ok:N`` runs N s and
exits 0, ``e2e/exit-3`` exits 3, ``e2e/forever`` runs until deleted, ``e2e/pull-error`` never
starts. Each test asserts the reply, how many Jobs (and pods) were created, and what is left.
"""

from __future__ import annotations

import time

import pytest

from handler.core.messages import CANCEL_TYPE
from tests.e2e.conftest import remaining_jobs, remaining_pods
from tests.support.kubeapi import KubeApi
from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.e2e


def cancel_event(request_id: str) -> dict:
    return {"specversion": "1.0", "type": CANCEL_TYPE, "source": "urn:e2e", "id": f"cancel-{request_id}",
            "datacontenttype": "application/json", "data": {"requestId": request_id, "reason": "e2e asked"}}


def gone(cluster, namespace: str) -> bool:
    return not remaining_jobs(cluster, namespace) and not remaining_pods(cluster, namespace)


def test_a_job_that_exits_0_is_replied_succeeded_with_its_pod_log_then_deleted_by_the_ttl_controller(
        cluster, namespace, handlers, requester, recorder):
    handlers.spawn(job_ttl_seconds=2)
    cid = requester.submit(job_request("e2e/ok:2"))
    reply = requester.wait_reply(cid, timeout=90)
    data = reply["data"]
    assert (data["status"], data["reason"], data["exitCode"]) == ("succeeded", "Completed", 0), data
    # The log came through the API server's pods/log from kwok (scripts/cluster/logs/job.log).
    assert "e2e job: done" in data["logTail"], data["logTail"]
    assert len(recorder.jobs) == 1 and len(recorder.pods) == 1
    # Replied, the finalizer is released: the real TTL controller deletes the Job and its pod.
    wait_until(lambda: gone(cluster, namespace), "the TTL controller deleted the Job and its pod", timeout=60)
    assert requester.queue_depth() == 0


def test_a_job_whose_container_exits_3_is_replied_failed_with_exit_code_3(
        cluster, namespace, handlers, requester, recorder):
    handlers.spawn(job_ttl_seconds=2)
    cid = requester.submit(job_request("e2e/exit-3"))
    data = requester.wait_reply(cid, timeout=90)["data"]
    assert data["status"] == "failed", data
    assert (data["reason"], data["podReason"], data["exitCode"]) == ("BackoffLimitExceeded", "Error", 3), data
    assert len(recorder.jobs) == 1 and len(recorder.pods) == 1  # backoffLimit 0: no retry
    wait_until(lambda: gone(cluster, namespace), "the TTL controller deleted the failed Job", timeout=60)


def test_a_job_past_its_deadline_is_replied_timedout_from_the_job_controllers_deadline_exceeded(
        cluster, namespace, handlers, requester, recorder):
    handlers.spawn()
    cid = requester.submit(job_request("e2e/forever", timeOut=0.1))  # activeDeadlineSeconds 6
    started = time.monotonic()
    data = requester.wait_reply(cid, timeout=90)["data"]
    assert (data["status"], data["reason"]) == ("timedout", "DeadlineExceeded"), data
    assert time.monotonic() - started >= 6  # the cluster's deadline, not an early guess
    assert len(recorder.jobs) == 1 and len(recorder.pods) == 1
    # A timed-out Job is deleted by the handler; its pod was killed by the Job controller.
    wait_until(lambda: gone(cluster, namespace), "the timed-out Job and its pod are gone", timeout=60)


def test_a_pod_that_cannot_pull_its_image_is_reported_failed_within_the_grace_not_as_a_timeout(
        cluster, namespace, handlers, requester, recorder):
    handlers.spawn(image_pull_grace_seconds=3)
    cid = requester.submit(job_request("e2e/pull-error", timeOut=5))
    started = time.monotonic()
    data = requester.wait_reply(cid, timeout=60)["data"]
    assert data["status"] == "failed", data
    assert data["reason"] in ("ErrImagePull", "ImagePullBackOff"), data
    assert "e2e/pull-error" in data["message"], data
    assert time.monotonic() - started < 30  # the grace (3 s), far from the 5-minute deadline
    assert len(recorder.jobs) == 1
    wait_until(lambda: gone(cluster, namespace), "the stuck Job was deleted", timeout=60)


def test_a_cancel_deletes_the_running_job_and_both_requests_are_answered(
        cluster, namespace, handlers, requester, recorder):
    handlers.spawn(concurrency=2)
    cid = requester.submit(job_request("e2e/forever", timeOut=5))
    wait_until(lambda: any(p for p in remaining_pods(cluster, namespace)
                           if p.get("status", {}).get("phase") == "Running"), "the Job's pod runs", timeout=60)
    cancel = requester.publish(cancel_event(cid), content_type="application/cloudevents+json")
    data = requester.wait_reply(cid, timeout=60)["data"]
    assert (data["status"], data["reason"]) == ("cancelled", "Cancelled"), data
    answer = requester.wait_reply(cancel, timeout=30)
    assert answer["data"]["status"] == "cancelled", answer
    assert len(recorder.jobs) == 1 and len(recorder.pods) == 1
    wait_until(lambda: gone(cluster, namespace), "the cancelled Job and its pod are gone", timeout=60)


def test_a_job_refused_by_pod_security_is_reported_failed_create_with_the_admission_message(
        cluster, namespace, handlers, requester, recorder):
    # Root breaks the namespace's `restricted` level: the API server admits the Job but refuses
    # its pod; the Job controller records FailedCreate events, which the handler reports.
    handlers.spawn(job_run_as_user=0, job_start_grace_seconds=3)
    cid = requester.submit(job_request("e2e/ok", timeOut=5))
    started = time.monotonic()
    data = requester.wait_reply(cid, timeout=60)["data"]
    assert (data["status"], data["reason"]) == ("failed", "FailedCreate"), data
    assert "violates PodSecurity" in data["message"] and "runAsUser=0" in data["message"], data["message"]
    assert time.monotonic() - started < 40
    assert len(recorder.jobs) == 1 and not recorder.pods
    events = cluster.admin.list_items(KubeApi.events(namespace), fieldSelector="reason=FailedCreate")
    assert events and all(e["involvedObject"]["kind"] == "Job" for e in events)
    wait_until(lambda: not remaining_jobs(cluster, namespace), "the refused Job was deleted", timeout=60)
