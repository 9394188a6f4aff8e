"""The handler against a cluster that behaves as a real one does (issue 12): one test per
numbered case of the issue, each against ``tests/fakekube`` modelling the TTL controller,
finalizers and garbage collection, sidecars, disruptions and the Job conditions of 1.31+.

Every one of these failed before the reply finalizer, the per-requester identity, the
cancel scope, the by-name container reading, the podFailurePolicy and the interim
conditions existed (the report of issue 12 names what each used to get).
"""

import json
import time
import urllib.request

import pytest

from handler.core.manifest import FINALIZER
from tests.support.requester import Requester
from tests.support.waiting import deleting, job_request, wait_until

pytestmark = pytest.mark.integration



# --- 1. one Job per request holds past the TTL

def test_a_redelivery_after_the_ttl_adopts_the_finished_job_instead_of_running_it_again(
        handlers, requester, fakekube, namespace):
    first = handlers.spawn(job_ttl_seconds=1)
    cid = requester.submit(job_request("scenario/succeed:0.5"), message_id="m-late")
    wait_until(lambda: fakekube.jobs(namespace), "the job exists", timeout=20)
    first.kill()  # the handler dies while the Job runs; its delivery goes back to the queue
    first.wait(10)
    # The Job ends and its TTL passes while no handler runs: the TTL controller deletes it,
    # but the reply finalizer holds it, finished, until a handler has replied.
    wait_until(lambda: fakekube.created_jobs(namespace) and all(deleting(j) for j in fakekube.jobs(namespace)),
               "the TTL controller has deleted the finished job", timeout=15)
    handlers.start(job_ttl_seconds=1)
    data = requester.wait_reply(cid)["data"]
    assert data["status"] == "succeeded"
    assert len(fakekube.created_jobs(namespace)) == 1  # the work ran once
    wait_until(lambda: fakekube.jobs(namespace) == [], "the replied job is let go")


# --- 2. a succeeded Job is never reported deleted because the handler's view lagged

def test_a_job_that_succeeded_while_the_handler_was_blind_past_its_ttl_is_reported_succeeded(
        handlers, requester, faults, fakekube, namespace):
    handler = handlers.start(job_ttl_seconds=1, watch_timeout_seconds=1)
    cid = requester.submit(job_request("scenario/hold"))
    wait_until(lambda: fakekube.jobs(namespace), "the job exists")
    name = fakekube.jobs(namespace)[0]["metadata"]["name"]
    wait_until(lambda: handler.backend.tracker.snapshot(name).job is not None, "the handler sees the job")
    faults.silent_watch_after = 0  # the next watches connect but hear nothing (a stalled proxy)
    time.sleep(2.5)  # the open streams end at their 1 s timeout; the new ones are silent
    fakekube.finish(namespace, name)
    wait_until(lambda: not fakekube.jobs(namespace) or deleting(fakekube.jobs(namespace)[0]),
               "the TTL controller has deleted the finished job")
    fakekube.compact()  # and the handler's resume will need a re-list (an API server restart)
    faults.silent_watch_after = None
    data = requester.wait_reply(cid, timeout=40)["data"]
    assert (data["status"], data["reason"]) == ("succeeded", "Completed")


# --- 3. two requesters sharing a correlation_id never share a Job

def test_two_requesters_with_the_same_correlation_id_and_job_name_each_get_their_own_job(
        handlers, requester, rabbitmq, queue_name, fakekube, namespace):
    handlers.start(concurrency=2)
    other = Requester(rabbitmq, queue_name)
    try:
        mine = requester.submit(job_request("scenario/succeed:0.2", inputBucketUrl="http://minio:9000/bucket-a"),
                                correlation_id="1")
        theirs = other.submit(job_request("scenario/fail:3", inputBucketUrl="http://minio:9000/bucket-b"),
                              correlation_id="1")
        assert requester.wait_reply(mine)["data"]["status"] == "succeeded"
        data = other.wait_reply(theirs)["data"]
        assert (data["status"], data["exitCode"]) == ("failed", 3)
        assert "http://minio:9000/bucket-b" in data["logTail"]
    finally:
        other.close()
    assert len(fakekube.created_jobs(namespace)) == 2


def test_a_job_of_the_same_name_asking_for_other_work_is_not_adopted(handlers, requester, fakekube, namespace,
                                                                     caplog):
    handlers.start()
    first = requester.wait_reply(requester.submit(job_request("scenario/succeed:0.1"), message_id="m-reused"))
    assert first["data"]["status"] == "succeeded"
    again = requester.submit(job_request("scenario/fail:3"), message_id="m-reused")  # same id, other work
    data = requester.wait_reply(again)["data"]
    assert (data["status"], data["exitCode"]) == ("failed", 3)
    assert len(set(fakekube.created_jobs(namespace))) == 2
    assert "is not request m-reused's (its image is 'scenario/succeed:0.1'" in caplog.text


# --- 4. a cancel touches only the handler's own Jobs

def test_a_cancel_naming_a_job_the_handler_did_not_make_answers_not_found_and_leaves_it(
        handlers, requester, fakekube, namespace):
    from tests.test_cancel import cancel_publish
    from tests.test_kube import a_job

    handler = handlers.start()
    foreign = a_job("someone-elses", namespace)
    foreign["metadata"]["labels"] = {"app": "theirs"}
    foreign["metadata"].pop("finalizers", None)
    foreign["spec"]["template"]["metadata"]["labels"] = {"app": "theirs"}
    foreign["spec"]["template"]["spec"]["containers"][0]["image"] = "scenario/hold"
    handler.backend.kube.create_job(foreign)
    cid = cancel_publish(requester, jobName="someone-elses")
    assert requester.wait_reply(cid)["data"]["status"] == "notFound"
    job = next(j for j in fakekube.jobs(namespace) if j["metadata"]["name"] == "someone-elses")
    assert not deleting(job)


# --- 5. the container named job is ours, whatever sorts first

def test_an_injected_sidecar_sorted_first_does_not_hide_the_jobs_exit_code(handlers, requester, fakekube,
                                                                           namespace):
    from tests.fakekube.podadmission import Sidecar

    fakekube.inject_sidecar(Sidecar(image="scenario/sidecar:exits"), namespace=namespace)
    handlers.start()
    data = requester.wait_reply(requester.submit(job_request("scenario/oom")))["data"]
    assert (data["status"], data["exitCode"], data["podReason"]) == ("failed", 137, "OOMKilled")
    assert "Killed: out of memory" in data["logTail"]  # the log of the job container, not the sidecar's


# --- 6. a node disruption is retried, not a failure of the user's Job

def test_an_evicted_pod_is_retried_and_the_job_still_succeeds(handlers, requester, fakekube, namespace):
    handlers.start()
    cid = requester.submit(job_request("scenario/hold"))
    wait_until(lambda: [p for p in fakekube.pods(namespace)
                        if (p["status"].get("phase") == "Running")], "the pod runs")
    fakekube.disrupt_pod(namespace, fakekube.pods(namespace)[0]["metadata"]["name"])
    wait_until(lambda: len({p["metadata"]["name"] for p in fakekube.pods(namespace)
                            if p["status"].get("phase") == "Running" and not deleting(p)}) == 1
               and fakekube.jobs(namespace)[0]["status"].get("active"), "a replacement pod runs")
    name = fakekube.jobs(namespace)[0]["metadata"]["name"]
    wait_until(lambda: _finish_quietly(fakekube, namespace, name), "the replacement finishes")
    data = requester.wait_reply(cid)["data"]
    assert (data["status"], data["exitCode"]) == ("succeeded", 0)


def _finish_quietly(fakekube, namespace, name):
    try:
        fakekube.finish(namespace, name)
        return True
    except (LookupError, ValueError):
        return False


def test_an_exit_code_the_operator_lists_fails_the_job_at_once_despite_retries(handlers, requester, fakekube,
                                                                               namespace):
    handlers.start(job_backoff_limit=3, job_fail_fast_exit_codes="64")
    data = requester.wait_reply(requester.submit(job_request("scenario/fail:64")))["data"]
    assert (data["status"], data["reason"], data["exitCode"]) == ("failed", "PodFailurePolicy", 64)
    assert len([p for p in fakekube.created_jobs(namespace)]) == 1


# --- 7. FailedCreate and Suspended are reported with the cluster's message, never as a timeout

def test_a_job_whose_pod_the_cluster_refuses_is_reported_failed_create_with_the_message(handlers, requester,
                                                                                       fakekube, namespace):
    handlers.start(job_start_grace_seconds=0.5)
    fakekube.set_pod_quota(namespace, 0)
    started = time.monotonic()
    data = requester.wait_reply(requester.submit(job_request("scenario/succeed:0.1", timeOut=1)))["data"]
    assert (data["status"], data["reason"]) == ("failed", "FailedCreate")
    assert "exceeded quota" in data["message"]
    assert time.monotonic() - started < 20  # not the request's minute of timeout
    wait_until(lambda: fakekube.jobs(namespace) == [], "the refused job is deleted and let go")


def test_a_suspended_job_is_reported_after_the_grace_not_at_its_timeout(handlers, requester, fakekube,
                                                                       namespace):
    handlers.start(job_start_grace_seconds=2)
    fakekube.set_pod_quota(namespace, 0)  # no pod yet when the queue suspends it, as Kueue's webhook does
    cid = requester.submit(job_request("scenario/hold", timeOut=1))
    wait_until(lambda: fakekube.jobs(namespace), "the job exists")
    name = fakekube.jobs(namespace)[0]["metadata"]["name"]
    patch(fakekube, f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}", {"spec": {"suspend": True}})  # a queue
    data = requester.wait_reply(cid)["data"]
    assert (data["status"], data["reason"]) == ("failed", "Suspended")


def test_every_job_carries_the_reply_finalizer_until_its_reply_is_confirmed(handlers, requester, fakekube,
                                                                            namespace):
    handlers.start(job_ttl_seconds=600)
    cid = requester.submit(job_request("scenario/hold"))
    wait_until(lambda: fakekube.jobs(namespace), "the job exists")
    assert fakekube.jobs(namespace)[0]["metadata"]["finalizers"] == [FINALIZER]
    fakekube.finish(namespace, fakekube.jobs(namespace)[0]["metadata"]["name"])
    requester.wait_reply(cid)
    wait_until(lambda: FINALIZER not in (fakekube.jobs(namespace)[0]["metadata"].get("finalizers") or []),
               "the confirmed reply releases the job")
    assert fakekube.jobs(namespace)[0]["metadata"]["annotations"]["cloud-worker.mstc.io/replied"] == "succeeded"


def test_the_janitor_releases_a_job_whose_reply_never_came_within_the_horizon(handlers, fakekube, namespace):
    from handler.core.manifest import build_job
    from tests.test_manifest import request

    handler = handlers.start(finalizer_horizon_seconds=2, job_ttl_seconds=0)
    job = build_job(request(), handlers.settings(job_ttl_seconds=0))
    job["spec"]["template"]["spec"]["containers"][0]["image"] = "scenario/succeed:0"
    handler.backend.kube.create_job(job)  # a Job no request follows: its reply never comes
    wait_until(lambda: [j for j in fakekube.jobs(namespace) if deleting(j) and FINALIZER in j["metadata"]["finalizers"]],
               "the finished job is deleted by its TTL but held")
    wait_until(lambda: fakekube.created_jobs(namespace) and fakekube.jobs(namespace) == [],
               "the janitor lets the cluster delete it")


def test_a_stalled_watch_is_restarted_long_before_its_read_timeout(handlers, requester, faults):
    handlers.start(watch_stall_seconds=1, watch_timeout_seconds=1)
    requester.wait_reply(requester.submit(job_request("scenario/succeed:0")))  # the watches are up
    faults.silent_watch_after = 0
    time.sleep(2.5)  # the streams end at their 1 s timeout; the next ones stay open, silent
    started = time.monotonic()
    cid = requester.submit(job_request("scenario/succeed:0.1"))
    time.sleep(0.2)  # submitted while every watch is silent
    faults.silent_watch_after = None  # a restarted watch hears everything again
    data = requester.wait_reply(cid, timeout=30)["data"]
    # The stalled watches are noticed after about a second, not at their 16 s read timeout.
    assert data["status"] == "succeeded" and time.monotonic() - started < 8


def patch(fakekube, path, body):
    """A merge PATCH straight to the fake API server, as another controller (Kueue) would send."""
    request = urllib.request.Request(fakekube.url + path, json.dumps(body).encode(), method="PATCH",
                                     headers={"Content-Type": "application/merge-patch+json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)
