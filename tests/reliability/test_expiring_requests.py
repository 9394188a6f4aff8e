"""A request published with an AMQP ``expiration`` means "drop it if nobody takes it in
time", never "drop it once taken": RabbitMQ keeps a requeued message's original expiry
and drops it when it passes, so once its Job may exist the handler must not depend on the
broker handing the message back. Over the real RabbitMQ (3.10: a requeued message keeps
its expiry) and the fake API server.
"""

from __future__ import annotations

import time

import pytest

from handler.core.manifest import ANNOTATION_REPLIED, FINALIZER, LABEL_REPLIED
from handler.core.unanswered import ANNOTATION_CLAIMED
from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.integration


def the_job(fakekube, namespace: str) -> dict:
    (job,) = fakekube.jobs(namespace)
    return job


def held(fakekube, namespace: str) -> bool:
    """The namespace's one Job exists and carries the reply finalizer."""
    return any(FINALIZER in (job["metadata"].get("finalizers") or []) for job in fakekube.jobs(namespace))


def test_a_request_that_expires_after_going_back_to_the_queue_is_answered_from_its_job(
        handlers, requester, fakekube, namespace, figures):
    first = handlers.start(unanswered_after_seconds=1)
    published = time.monotonic()
    cid = requester.submit(job_request("scenario/hold"), expiration="3000")
    wait_until(lambda: fakekube.created_jobs(namespace), "the request's job exists")
    first.stop()  # past its 2 s grace: the delivery goes back to the queue, keeping its expiry
    wait_until(lambda: requester.queue_depth() == 0, "the broker dropped the expired request", timeout=15)
    dropped_after = time.monotonic() - published

    second = handlers.start(unanswered_after_seconds=1)
    job_name = fakekube.created_jobs(namespace)[0]
    fakekube.finish(namespace, job_name)
    reply = requester.wait_reply(cid, timeout=20)

    assert (reply["data"]["status"], reply["data"]["jobName"]) == ("succeeded", job_name)
    assert fakekube.created_jobs(namespace) == [job_name]
    job = the_job(fakekube, namespace)  # kept, replied, for a redelivery that may still come
    assert FINALIZER in job["metadata"]["finalizers"]
    assert job["metadata"]["annotations"][ANNOTATION_REPLIED] == "succeeded"
    assert LABEL_REPLIED not in job["metadata"]["labels"]
    assert second.consumer.handler.metrics.value("cloud_worker_unanswered_jobs_total") == 1
    requester.collect(1.0)
    figures.update(expired_in_queue_after_s=round(dropped_after, 1), replies=len(requester.terminal_replies_for(cid)),
                   jobs=len(fakekube.created_jobs(namespace)))
    assert len(requester.terminal_replies_for(cid)) == 1


def test_a_late_redelivery_of_an_answered_job_adopts_it_and_lets_it_go(handlers, requester, fakekube, namespace):
    """The Job answered from the cluster stays: the request's message, had it come back after
    all, finds it, replies again with the same event id, and releases it."""
    first = handlers.start(unanswered_after_seconds=1)
    cid = requester.submit(job_request("scenario/hold"), expiration="3000", message_id="late-1")
    wait_until(lambda: fakekube.created_jobs(namespace), "the request's job exists")
    first.stop()
    wait_until(lambda: requester.queue_depth() == 0, "the broker dropped the expired request", timeout=15)
    second = handlers.start(unanswered_after_seconds=1)
    fakekube.finish(namespace, fakekube.created_jobs(namespace)[0])
    answered = requester.wait_reply(cid, timeout=20)

    assert held(fakekube, namespace)
    requester.submit(job_request("scenario/hold"), message_id="late-1", correlation_id=cid)  # the same request
    _, again = requester.wait_replies(cid, 2)
    assert again["id"] == answered["id"] and len(fakekube.created_jobs(namespace)) == 1
    wait_until(lambda: not held(fakekube, namespace), "the job is let go")
    second.stop()


def test_two_replicas_answer_an_unanswered_job_once(handlers, requester, fakekube, namespace, figures):
    first = handlers.start(unanswered_after_seconds=1)
    cid = requester.submit(job_request("scenario/hold"), expiration="3000")
    wait_until(lambda: fakekube.created_jobs(namespace), "the request's job exists")
    first.stop()
    wait_until(lambda: requester.queue_depth() == 0, "the broker dropped the expired request", timeout=15)
    replicas = [handlers.start(unanswered_after_seconds=1) for _ in range(3)]
    fakekube.finish(namespace, fakekube.created_jobs(namespace)[0])
    requester.wait_reply(cid, timeout=20)
    requester.collect(3.0)  # a dozen sweeps of each replica
    answered = sum(r.consumer.handler.metrics.value("cloud_worker_unanswered_jobs_total") for r in replicas)
    figures.update(replicas=len(replicas), replies=len(requester.terminal_replies_for(cid)), answered_by=answered)
    assert len(requester.terminal_replies_for(cid)) == 1 and answered == 1


def test_the_sweep_never_answers_a_job_its_follower_answered(handlers, requester, fakekube, namespace):
    handler = handlers.start(unanswered_after_seconds=0.3)
    cid = requester.submit(job_request("scenario/succeed:0.5"), expiration="60000")
    assert requester.wait_reply(cid)["data"]["status"] == "succeeded"
    requester.collect(2.0)  # several sweeps, each long past the Job's end
    assert len(requester.terminal_replies_for(cid)) == 1
    assert handler.consumer.handler.metrics.value("cloud_worker_unanswered_jobs_total") == 0
    assert not held(fakekube, namespace)  # released by its follower


def test_a_retry_copy_of_an_expiring_request_does_not_expire(handlers, requester, fakekube, namespace, faults):
    """Taken is taken: the copy put back for a later attempt carries no expiration, so a
    request whose attempts outlast its expiration is still answered."""
    faults.reject_create_status = 503
    handlers.start(max_attempts=3, retry_delay_seconds=1.5)
    cid = requester.submit(job_request("scenario/succeed:0.2"), expiration="1000")
    time.sleep(2.5)  # past the expiration, while the copies wait for their attempts
    faults.reject_create_status = None
    reply = requester.wait_reply(cid, timeout=30)
    assert reply["data"]["status"] == "succeeded" and len(fakekube.created_jobs(namespace)) == 1


def test_a_sweep_claims_each_job_only_as_it_comes_to_answer_it(handlers, requester, fakekube, namespace):
    """A claim lapses after CLOUD_WORKER_UNANSWERED_AFTER_SECONDS, and answering a Job may take
    a while (its log's upload, its reply's publication): claiming them all first would let the
    last claims lapse, and another replica answer those Jobs a second time."""
    first = handlers.start(unanswered_after_seconds=1, concurrency=2)
    for i in range(2):
        requester.submit(job_request("scenario/hold"), expiration="3000", message_id=f"exp-{i}")
    wait_until(lambda: len(fakekube.created_jobs(namespace)) == 2, "both requests' jobs exist")
    first.stop()
    wait_until(lambda: requester.queue_depth() == 0, "the broker dropped both expired requests", timeout=15)
    for name in fakekube.created_jobs(namespace):
        fakekube.finish(namespace, name)
    second = handlers.start(unanswered_after_seconds=3600)  # its own sweep stays out of the way

    def ended_in_its_cache() -> int:
        return sum(any(c["type"] == "Complete" and c["status"] == "True" for c in j.get("status", {}).get("conditions", []))
                   for j in second.backend.tracker.jobs())

    def claimed() -> int:
        return sum(ANNOTATION_CLAIMED in j["metadata"].get("annotations", {}) for j in fakekube.jobs(namespace))

    wait_until(lambda: ended_in_its_cache() == 2, "the second handler sees both jobs ended")
    time.sleep(1.1)
    sweep = iter(second.backend.unanswered(1.0))
    next(sweep)
    assert claimed() == 1
    next(sweep)
    assert claimed() == 2
    assert next(sweep, None) is None
    second.stop()
