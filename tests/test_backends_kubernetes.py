"""The Kubernetes backend through a real consumer: each kind of Job ending gets the
right reply, and the watch survives what real API servers do to watches."""

import logging
import time

import pytest

from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.integration



@pytest.mark.parametrize("image, status, reason, pod_reason, exit_code", [
    ("scenario/fail:3", "failed", "BackoffLimitExceeded", "Error", 3),
    ("scenario/oom", "failed", "BackoffLimitExceeded", "OOMKilled", 137),
    ("scenario/succeed:0.3", "succeeded", "Completed", "Completed", 0),
])
def test_each_way_a_job_ends_gets_its_outcome_and_reason(handlers, requester, image, status, reason, pod_reason,
                                                          exit_code):
    handlers.start()
    data = requester.wait_reply(requester.submit(job_request(image)))["data"]
    assert (data["status"], data["reason"], data["podReason"], data["exitCode"]) == (status, reason, pod_reason,
                                                                                     exit_code)
    assert data["logTail"]


@pytest.mark.parametrize("image, reason", [
    ("scenario/imagepull", ("ErrImagePull", "ImagePullBackOff")),
    ("scenario/invalid-image", ("InvalidImageName",)),
    ("scenario/configerror", ("CreateContainerConfigError",)),
])
def test_a_pod_that_can_never_start_fails_fast_and_its_job_is_deleted(handlers, requester, fakekube, namespace,
                                                                      image, reason):
    handlers.start(image_pull_grace_seconds=0.5)
    started = time.monotonic()
    data = requester.wait_reply(requester.submit(job_request(image)))["data"]
    assert data["status"] == "failed" and data["reason"] in reason
    assert "cannot start" in data["message"]
    assert time.monotonic() - started < 10
    wait_until(lambda: fakekube.jobs(namespace) == [], "the stuck job is deleted")


def test_a_job_past_its_deadline_times_out_and_is_deleted(handlers, requester, fakekube, namespace):
    handlers.start()
    data = requester.wait_reply(requester.submit(job_request("scenario/sleep:60", timeOut=0.02)))["data"]
    assert (data["status"], data["reason"]) == ("timedout", "DeadlineExceeded")
    assert requester.replies[-1]["type"] == "mstc.cloud.worker.job.timedout.v1"
    wait_until(lambda: fakekube.jobs(namespace) == [], "the timed-out job is deleted")


def test_the_watch_survives_streams_cut_every_event(handlers, requester, faults, fakekube, namespace):
    faults.cut_watch_after = 1
    handler = handlers.start()
    cids = [requester.submit(job_request("scenario/succeed:0.2"), correlation_id=f"cut-{i}") for i in range(3)]
    for cid in cids:
        assert requester.wait_reply(cid)["data"]["status"] == "succeeded"
    assert handler.backend.tracker.counters.restarts + handler.backend.tracker.counters.relists > 2
    assert len(fakekube.created_jobs(namespace)) == 3


def test_the_watch_relists_after_410_gone_and_still_sees_the_job_finish(handlers, requester, faults, fakekube):
    handler = handlers.start(watch_timeout_seconds=1)  # streams end every second and resume
    cid = requester.submit(job_request("scenario/hold"))
    wait_until(lambda: fakekube.jobs(handlers.namespace), "the job exists")
    relists = handler.backend.tracker.counters.relists
    fakekube.compact()
    faults.gone_on_resume = True  # every resume now gets 410 Gone
    wait_until(lambda: handler.backend.tracker.counters.relists > relists, "the watch re-lists after 410")
    fakekube.finish(handlers.namespace, fakekube.jobs(handlers.namespace)[0]["metadata"]["name"])
    assert requester.wait_reply(cid)["data"]["status"] == "succeeded"


def test_a_job_deleted_by_someone_else_gets_a_failed_reply(handlers, requester, fakekube, namespace):
    handler = handlers.start()
    cid = requester.submit(job_request("scenario/hold"))
    wait_until(lambda: fakekube.jobs(namespace), "the job exists")
    handler.backend.kube.delete_job(fakekube.jobs(namespace)[0]["metadata"]["name"])
    data = requester.wait_reply(cid)["data"]
    assert (data["status"], data["reason"]) == ("failed", "JobDeleted")


def test_the_job_records_the_confirmed_reply_and_a_redelivery_replies_again_with_the_same_id(
        handlers, requester, fakekube, namespace, caplog):
    from handler.core.manifest import ANNOTATION_REPLIED, ANNOTATION_REQUEST_ID

    caplog.set_level(logging.INFO, logger="handler.service.backends.kubernetes")
    handlers.start()
    first = requester.wait_reply(requester.submit(job_request("scenario/succeed:0.1"), message_id="m-replied"))

    def annotations():
        return fakekube.jobs(namespace)[0]["metadata"].get("annotations") or {}
    wait_until(lambda: annotations().get(ANNOTATION_REPLIED) == "succeeded", "the job records the reply")
    assert annotations()[ANNOTATION_REQUEST_ID] == "m-replied"  # a merge patch: the rest is kept
    again = requester.wait_reply(requester.submit(job_request("scenario/succeed:0.1"), message_id="m-replied"))
    assert (again["id"], again["data"]["status"]) == (first["id"], "succeeded")
    assert "already replied succeeded" in caplog.text
    assert len(fakekube.created_jobs(namespace)) == 1


def test_replied_jobs_leave_the_watch_cache_and_a_new_handler_does_not_list_them(handlers, requester, fakekube,
                                                                                namespace):
    from handler.core.manifest import LABEL_REPLIED

    first = handlers.start(job_ttl_seconds=600)
    for _ in range(3):
        requester.wait_reply(requester.submit(job_request("scenario/succeed:0")))
    wait_until(lambda: all(LABEL_REPLIED in j["metadata"]["labels"] for j in fakekube.jobs(namespace))
               and len(fakekube.jobs(namespace)) == 3, "the replies are recorded on the jobs")
    wait_until(lambda: first.backend.tracker.sizes()["jobs"] == 0, "the replied jobs leave the cache")
    assert first.backend.tracker.sizes()["pods"] == 0  # and their finished pods with them
    second = handlers.start(job_ttl_seconds=600)  # a replica starting now: the three are not listed
    assert second.backend.tracker.snapshot("any").pods == []  # (the pods' first LIST is in)
    assert second.backend.tracker.sizes() == {"jobs": 0, "pods": 0, "events": 0, "gone": 0, "remembered": 0}
    assert len(fakekube.jobs(namespace)) == 3 and len(fakekube.pods(namespace)) == 3


def test_a_job_refused_by_the_api_server_gets_a_failed_reply_with_its_message(handlers, requester, faults, fakekube,
                                                                              namespace):
    handlers.start()
    faults.reject_create_status = 403
    before = fakekube.request_count("POST", "jobs")
    cid = requester.submit(job_request("scenario/succeed:0.1"))
    data = requester.wait_reply(cid)["data"]
    assert (data["status"], data["reason"]) == ("failed", "Forbidden")
    assert "cannot create resource" in data["message"]
    assert fakekube.request_count("POST", "jobs") - before == 1  # not retried, not requeued: no crash loop
    faults.reject_create_status = None
    assert requester.wait_reply(requester.submit())["data"]["status"] == "succeeded"
    assert len(requester.replies_for(cid)) == 1 and requester.queue_depth() == 0


def test_a_finished_job_costs_one_log_read_and_its_reply_carries_the_log(handlers, requester, fakekube):
    handlers.start()
    requester.wait_reply(requester.submit(job_request("scenario/succeed:0")))  # warm: the watches are up
    before = fakekube.request_count("GET", "log")
    data = requester.wait_reply(requester.submit(job_request("scenario/succeed:0.2")))["data"]
    assert data["status"] == "succeeded" and "done" in data["logTail"]
    assert fakekube.request_count("GET", "log") - before == 1


def test_closing_the_backend_ends_its_quiet_watches_at_once(handlers):
    from handler.service.backends.kubernetes import KubernetesBackend

    backend = KubernetesBackend(handlers.settings())
    backend.start()
    time.sleep(0.3)  # both watches connected, and quiet: the fake sends a bookmark once a second
    assert backend.ready()
    started = time.monotonic()
    backend.close()
    assert time.monotonic() - started < 0.4
    assert not backend.ready()


def test_a_timed_out_reply_carries_the_pods_exit_code_and_log_tail(handlers, requester):
    handlers.start()
    data = requester.wait_reply(requester.submit(job_request("scenario/sleep:60", timeOut=0.02)))["data"]
    assert data["status"] == "timedout"
    assert data["exitCode"] == 143 and data["podReason"] == "Error"
    assert "starting scenario/sleep:60" in data["logTail"]


class _QuietKube:
    """The adapter's calls a follower may make, answering as if nothing else were there."""

    def pod_log_tail(self, *args):
        return "the log's tail"

    def read_job(self, name):
        return None

    def delete_job(self, name):
        pass

    def list(self, *args, **kwargs):
        return [], "1"

    def close(self):
        pass


def test_a_job_replied_to_by_another_delivery_keeps_its_verdict_not_job_deleted():
    """Two deliveries follow one Job (an HTTP retry on another replica, a redelivery after a
    failed ack); the first records the reply, so the Job leaves the watch (sent as DELETED
    with its last state) while the second still waits for the pod's exit code."""
    import threading

    from handler.core.config import Settings
    from handler.core.request import WorkRequest
    from handler.service.backends.kubernetes import KubernetesBackend

    backend = KubernetesBackend(Settings.from_env({}), kube=_QuietKube())
    request = WorkRequest("r1", "mid:r1", "j-abc", "j", "img", 1.0, "s3://bucket-a", "s3://bucket-a")
    job = {"metadata": {"name": "j-abc", "uid": "u", "labels": {}, "annotations": {},
                        "finalizers": ["cloud-worker.mstc.io/reply"]},
           "spec": {}, "status": {"startTime": "2025-01-01T00:00:00Z"}}
    pod = {"metadata": {"name": "j-abc-p", "labels": {"job-name": "j-abc"}, "creationTimestamp": "2025-01-01T00:00:00Z"},
           "status": {"containerStatuses": [{"name": "job", "state": {"running": {}}}]}}
    tracker = backend.tracker
    tracker._apply("jobs", {"type": "ADDED", "object": job})
    tracker._apply("pods", {"type": "ADDED", "object": pod})
    outcome = {}
    follower = threading.Thread(target=lambda: outcome.setdefault(
        "it", backend._follow(request, threading.Event(), None, {})))
    follower.start()
    time.sleep(0.2)
    deadline = {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded", "message": "deadline",
                "lastTransitionTime": "2025-01-01T00:01:00Z"}
    verdict = dict(job, status=dict(job["status"], conditions=[deadline]))
    tracker._apply("jobs", {"type": "MODIFIED", "object": verdict})
    time.sleep(0.3)  # the follower now waits for the pod's exit code
    tracker._apply("jobs", {"type": "DELETED", "object": verdict})
    follower.join(15)
    assert (outcome["it"].status.value, outcome["it"].reason) == ("timedout", "DeadlineExceeded")
