"""Cluster faults: what a real cluster does to Jobs while no handler is looking. The TTL
controller deletes finished Jobs whoever is watching; a handler that dies, pauses or
hears nothing (a stalled watch, an API server restart) comes back to a cluster that has
moved on. With the reply finalizer no Job may run twice and no succeeded Job may be
reported deleted, however late the handler comes back."""

from __future__ import annotations

import time

import pytest

from tests.support.waiting import deleting, job_request, wait_until

pytestmark = pytest.mark.integration

REQUESTS = 10



def test_requests_redelivered_after_their_jobs_ttl_run_once(handlers, requester, fakekube, namespace, figures):
    cids = [requester.submit(job_request("scenario/succeed:0.5"), message_id=f"late-{i}") for i in range(REQUESTS)]
    first = handlers.spawn("--concurrency", str(REQUESTS), job_ttl_seconds=1)
    wait_until(lambda: len(fakekube.created_jobs(namespace)) == REQUESTS, "every job exists", timeout=30)
    first.kill()  # every delivery goes back to the queue while the Jobs run on
    first.wait(10)
    wait_until(lambda: all(deleting(j) for j in fakekube.jobs(namespace)),
               "the TTL controller has deleted every finished job", timeout=20)
    handlers.start(concurrency=REQUESTS, job_ttl_seconds=1)
    replies = [requester.wait_reply(cid, timeout=30)["data"] for cid in cids]
    created = fakekube.created_jobs(namespace)
    figures.update(requests=REQUESTS, jobs=len(created),
                   jobs_run_twice_after_late_redelivery=len(created) - len(set(created)),
                   succeeded=sum(r["status"] == "succeeded" for r in replies))
    assert len(created) == len(set(created)) == REQUESTS
    assert {r["status"] for r in replies} == {"succeeded"}
    wait_until(lambda: fakekube.jobs(namespace) == [], "every replied job is let go")


def test_jobs_that_succeeded_while_the_handler_heard_nothing_are_reported_succeeded(
        handlers, requester, faults, fakekube, namespace, figures):
    handlers.start(concurrency=REQUESTS, job_ttl_seconds=1, watch_timeout_seconds=1)
    cids = [requester.submit(job_request("scenario/hold")) for _ in range(REQUESTS)]
    wait_until(lambda: len(fakekube.jobs(namespace)) == REQUESTS, "every job exists", timeout=20)
    faults.silent_watch_after = 0  # the next watches connect but hear nothing
    time.sleep(2.5)
    for job in fakekube.jobs(namespace):
        fakekube.finish(namespace, job["metadata"]["name"])
    wait_until(lambda: all(deleting(j) for j in fakekube.jobs(namespace)),
               "the TTL controller has deleted every finished job", timeout=20)
    fakekube.compact()  # the handler's resume needs a re-list, as after an API server restart
    faults.silent_watch_after = None
    replies = [requester.wait_reply(cid, timeout=60)["data"] for cid in cids]
    figures.update(requests=REQUESTS,
                   succeeded_reported_as_deleted=sum(r["reason"] == "JobDeleted" for r in replies),
                   succeeded=sum(r["status"] == "succeeded" for r in replies))
    assert {(r["status"], r["reason"]) for r in replies} == {("succeeded", "Completed")}
