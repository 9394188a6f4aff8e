"""Giving up on a request stops that request's own Job and nothing else: a Job of the same
name made for another request (the same message id, other work) runs on. Over the real
RabbitMQ and the fake API server."""

from __future__ import annotations

import pytest

from handler.core.manifest import ANNOTATION_CANCELLED
from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.integration


def test_giving_up_on_a_request_never_cancels_another_requests_job(handlers, requester, fakekube, namespace, faults,
                                                                  figures):
    handlers.start(concurrency=2, max_attempts=2, retry_delay_seconds=0.2)
    a = requester.submit(job_request("scenario/hold", inputBucketUrl="http://minio:9000/bucket-a"), message_id="42")
    wait_until(lambda: fakekube.created_jobs(namespace), "request A's job runs")
    (a_job,) = fakekube.created_jobs(namespace)
    faults.reject_create_status = 503  # request B's job can never be created
    b = requester.submit(job_request("scenario/hold", inputBucketUrl="http://minio:9000/bucket-b"), message_id="42")
    b_reply = requester.wait_reply(b, timeout=60)
    faults.reject_create_status = None

    assert (b_reply["data"]["status"], b_reply["data"]["reason"]) == ("failed", "RetriesExhausted")
    (job,) = fakekube.jobs(namespace)
    assert job["metadata"]["name"] == a_job and not job["metadata"].get("deletionTimestamp")
    assert ANNOTATION_CANCELLED not in job["metadata"]["annotations"]
    assert requester.terminal_replies_for(a) == []
    fakekube.finish(namespace, a_job)
    assert requester.wait_reply(a)["data"]["status"] == "succeeded"
    figures.update(other_jobs_cancelled=0, jobs=len(fakekube.created_jobs(namespace)))


def test_giving_up_on_a_request_stops_its_own_job(handlers, requester, fakekube, namespace, faults, monkeypatch):
    """Its Job exists (created before the API server went bad) and must not run on writing
    outputs nobody waits for."""
    backend = handlers.start(max_attempts=1).backend
    real_follow = backend._follow

    def follow_then_fail(request, stop, progress, early_logs):
        wait_until(lambda: fakekube.pods(namespace), "the job's pod runs")
        raise RuntimeError("a bug of ours once the Job exists")

    monkeypatch.setattr(backend, "_follow", follow_then_fail)
    cid = requester.submit(job_request("scenario/hold"))
    reply = requester.wait_reply(cid, timeout=30)
    monkeypatch.setattr(backend, "_follow", real_follow)
    assert (reply["data"]["status"], reply["data"]["reason"]) == ("failed", "RetriesExhausted")
    # Cancelled (deleted, its pod with it), then let go once the failed reply was acked.
    wait_until(lambda: not fakekube.jobs(namespace) and not fakekube.pods(namespace), "the job and its pod are gone")
    assert len(fakekube.created_jobs(namespace)) == 1
