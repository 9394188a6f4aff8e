"""Cancellation: the cancel event's parsing (pure), and a cancel over the real broker
deleting a running Job, with ``cancelled`` told to the requester and the canceller."""

import json
import logging
import signal
import time
import uuid
from datetime import UTC, datetime

import pika
import pytest

from handler.core.config import Settings
from handler.core.errors import Rejected
from handler.core.events import cancel_result_event as result_event
from handler.core.manifest import ANNOTATION_CANCELLED, ANNOTATION_REPLIED, cancelled_outcome
from handler.core.messages import CANCEL_RESULT_TYPE as RESULT_TYPE
from handler.core.messages import CANCEL_TYPE, CancelOutcome, CancelStatus, Message
from handler.core.request import is_cancel, parse_cancel
from tests.support.waiting import job_request, wait_until

SETTINGS = Settings.from_env({})
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def cancel_body(**data):
    return {"specversion": "1.0", "type": CANCEL_TYPE, "source": "urn:test", "id": uuid.uuid4().hex,
            "datacontenttype": "application/json", "data": data}


def structured(body, **props):
    return Message(json.dumps(body).encode(), "application/cloudevents+json", **props)


def binary(data, **headers):
    ce = {"ce-specversion": "1.0", "ce-type": CANCEL_TYPE, "ce-source": "urn:test", "ce-id": "c-1"}
    return Message(json.dumps(data).encode(), "application/json", headers={**ce, **headers})


# --- pure: recognising and parsing a cancel

def test_a_cancel_is_recognised_in_structured_and_binary_mode_and_nothing_else_is():
    assert is_cancel(structured(cancel_body(requestId="r-1")))
    assert is_cancel(binary({"requestId": "r-1"}))
    work = dict(cancel_body(requestId="r-1"), type="mstc.cloud.worker.job.request.v1")
    assert not is_cancel(structured(work))
    assert not is_cancel(Message(json.dumps({"type": CANCEL_TYPE}).encode(), "application/json"))
    assert not is_cancel(Message(b"{not json " + CANCEL_TYPE.encode(), "application/cloudevents+json"))


def test_a_cancel_names_a_request_or_a_job_by_data_or_subject():
    target = parse_cancel(structured(cancel_body(requestId="r-1", reason="user asked"), reply_to="q",
                                     correlation_id="c"), SETTINGS)
    assert (target.request_id, target.job_name, target.reason, target.reply_to) == ("r-1", None, "user asked", "q")
    by_subject = dict(cancel_body(), subject="test-job-0123456789")
    del by_subject["data"]
    assert parse_cancel(structured(by_subject), SETTINGS).job_name == "test-job-0123456789"
    assert parse_cancel(binary({"jobName": "x-1"}), SETTINGS).job_name == "x-1"


@pytest.mark.parametrize("data, field", [
    ({}, "requestId"),
    ({"requestId": 7}, "requestId"),
    ({"jobName": "../etc/passwd"}, "jobName"),
    ({"jobName": "Job,app=evil"}, "jobName"),
    ({"requestId": "x" * 5000}, "requestId"),
])
def test_a_cancel_that_names_nothing_usable_is_rejected(data, field):
    with pytest.raises(Rejected) as caught:
        parse_cancel(structured(cancel_body(**data)), SETTINGS)
    assert caught.value.field == field


def test_only_a_marked_job_counts_as_cancelled():
    job = {"metadata": {"name": "j-1", "annotations": {}}, "status": {"startTime": "2025-01-01T00:00:00Z"}}
    assert cancelled_outcome(job, NOW) is None
    job["metadata"]["annotations"][ANNOTATION_CANCELLED] = "user asked"
    outcome = cancelled_outcome(job, NOW)
    assert (outcome.status.value, outcome.reason) == ("cancelled", "Cancelled")
    assert "user asked" in outcome.message and outcome.start_time is not None


def test_the_result_event_of_the_same_cancel_has_the_same_id():
    target = parse_cancel(structured(cancel_body(requestId="r-1")), SETTINGS)
    outcome = CancelOutcome(CancelStatus.NOT_FOUND, None, "no Job")
    first, again = (result_event(target, outcome, source="urn:x", now=NOW) for _ in range(2))
    assert first.get_type() == RESULT_TYPE and first.get_id() == again.get_id()
    assert first.get_data()["status"] == "notFound"


def test_the_worker_cancels_for_any_transport():
    from handler.service.handling import RequestHandler

    class NoJobs:
        namespace = "ns"

        def cancel(self, target):
            return CancelOutcome(CancelStatus.NOT_FOUND, None, f"no Job for {target.target}")

    target = parse_cancel(structured(cancel_body(requestId="r-1"), reply_to="q", correlation_id="c"), SETTINGS)
    result = RequestHandler(SETTINGS, NoJobs()).cancel(target)
    assert result.status == "cancel-notFound" and result.reply.get_type() == RESULT_TYPE
    assert [(p.routing_key, p.correlation_id) for p in result.publications] == [("q", "c")]


# --- over the broker: a running Job cancelled

def cancel_publish(requester, **data):
    return requester.publish(cancel_body(**data), content_type="application/cloudevents+json")


@pytest.mark.integration
def test_a_cancel_deletes_the_running_job_and_the_requester_hears_cancelled(handlers, requester, fakekube, namespace):
    handlers.start(concurrency=2)
    cid = requester.submit(job_request("scenario/hold"))
    wait_until(lambda: fakekube.pods(namespace), "the job's pod runs")
    cancel_cid = cancel_publish(requester, requestId=cid, reason="changed my mind")
    answer = requester.wait_reply(cancel_cid)
    assert answer["type"] == RESULT_TYPE and answer["data"]["status"] == "cancelled"
    reply = requester.wait_reply(cid)
    assert reply["type"] == "mstc.cloud.worker.job.cancelled.v1"
    assert "changed my mind" in reply["data"]["message"]
    wait_until(lambda: fakekube.jobs(namespace) == [] and fakekube.pods(namespace) == [],
               "the job and its pod are deleted")
    requester.collect(0.5)
    replies = requester.replies_for(cid)
    assert {r["data"]["status"] for r in replies} == {"cancelled"}  # never failed: JobDeleted
    assert len({r["id"] for r in replies}) == 1  # the canceller's and the follower's copies share the id
    assert requester.queue_depth() == 0
    assert len(fakekube.created_jobs(namespace)) == 1


@pytest.mark.integration
def test_a_cancel_by_job_name_in_binary_mode_works_too(handlers, requester, fakekube, namespace):
    handlers.start(concurrency=2)
    cid = requester.submit(job_request("scenario/hold"))
    wait_until(lambda: fakekube.jobs(namespace), "the job exists")
    name = fakekube.jobs(namespace)[0]["metadata"]["name"]
    headers = {"ce-specversion": "1.0", "ce-type": CANCEL_TYPE, "ce-source": "urn:test", "ce-id": "b-1",
               "ce-subject": name}
    cancel_cid = requester.publish(b"", content_type="application/json", headers=headers)
    assert requester.wait_reply(cancel_cid)["data"]["status"] == "cancelled"
    assert requester.wait_reply(cid)["data"]["status"] == "cancelled"


@pytest.mark.integration
def test_cancelling_an_unknown_or_finished_request_changes_nothing(handlers, requester, fakekube, namespace):
    handlers.start()
    cid = requester.submit(job_request("scenario/succeed:0.1"))
    assert requester.wait_reply(cid)["data"]["status"] == "succeeded"
    wait_until(lambda: ANNOTATION_REPLIED in (fakekube.jobs(namespace)[0]["metadata"].get("annotations") or {}),
               "the job records its reply")
    finished = requester.wait_reply(cancel_publish(requester, requestId=cid))
    unknown = requester.wait_reply(cancel_publish(requester, requestId="no-such-request"))
    assert (finished["data"]["status"], unknown["data"]["status"]) == ("finished", "notFound")
    assert len(fakekube.jobs(namespace)) == 1
    assert [r["data"]["status"] for r in requester.replies_for(cid)] == ["succeeded"]


@pytest.mark.integration
def test_a_marked_job_left_behind_by_a_dead_canceller_is_deleted_by_its_follower(handlers, requester, fakekube,
                                                                                 namespace):
    handler = handlers.start()
    cid = requester.submit(job_request("scenario/hold"))
    wait_until(lambda: fakekube.jobs(namespace), "the job exists")
    name = fakekube.jobs(namespace)[0]["metadata"]["name"]
    handler.backend.kube.patch_job_annotations(name, {ANNOTATION_CANCELLED: "canceller died before deleting"})
    assert requester.wait_reply(cid)["data"]["status"] == "cancelled"
    wait_until(lambda: fakekube.jobs(namespace) == [], "the follower deletes the marked job")


@pytest.mark.integration
def test_a_cancelled_request_redelivered_after_its_job_is_gone_does_not_run_again(handlers, requester, fakekube,
                                                                                  namespace, caplog):
    caplog.set_level(logging.INFO, logger="handler.service.backends.kubernetes")
    first = handlers.spawn()
    cid = requester.submit(job_request("scenario/hold"), message_id="m-cancel-redelivery")
    wait_until(lambda: fakekube.jobs(namespace), "the job exists", timeout=20)
    second = handlers.start(concurrency=2)
    first.send_signal(signal.SIGSTOP)  # the follower freezes: it never sees the deletion
    cancel_publish(requester, requestId="m-cancel-redelivery")
    # The cancel deletes the Job, which its reply finalizer keeps (marked cancelled) until
    # the request's own delivery has replied.
    wait_until(lambda: [j for j in fakekube.jobs(namespace) if j["metadata"].get("deletionTimestamp")
                        and ANNOTATION_CANCELLED in j["metadata"]["annotations"]], "the cancel deletes the job")
    first.kill()  # only now does its delivery go back to the queue, to the second handler
    first.wait(10)
    wait_until(lambda: second.consumer.stats.received >= 2 and second.consumer.inflight == 0
               and requester.queue_depth() == 0, "the redelivered request is handled", timeout=20)
    requester.collect(0.5)
    assert {r["data"]["status"] for r in requester.terminal_replies_for(cid)} == {"cancelled"}
    assert len(fakekube.created_jobs(namespace)) == 1
    assert "adopting it" in caplog.text
    wait_until(lambda: fakekube.jobs(namespace) == [], "the replied job is let go")


# --- the cancel lane: answered however busy the handler is, never acting late

def client_for(rabbitmq, queue_name):
    from handler.tools.client import Client

    return Client(rabbitmq, "mstc.exchange", queue_name)


@pytest.mark.integration
def test_a_cancel_is_answered_while_every_slot_is_busy(handlers, requester, fakekube, namespace, rabbitmq,
                                                       queue_name):
    handlers.start()  # concurrency 1: one slot, taken by the held job
    cid = requester.submit(job_request("scenario/hold"))
    wait_until(lambda: fakekube.pods(namespace), "the job's pod runs")
    waiting = requester.submit(job_request("scenario/succeed:0.1"))  # queued behind it
    with client_for(rabbitmq, queue_name) as client:
        answer = client.cancel(cid, "changed my mind", wait_seconds=10)
    assert answer["data"]["status"] == "cancelled"
    assert requester.wait_reply(cid)["data"]["status"] == "cancelled"
    assert requester.wait_reply(waiting)["data"]["status"] == "succeeded"  # the slot freed, the queue moved on


@pytest.mark.integration
def test_a_request_sent_to_the_cancel_queue_is_rejected_not_run(handlers, requester, fakekube, namespace, queue_name):
    handler = handlers.start()
    wait_until(lambda: handler.consumer.broker.is_open, "the handler consumes both lanes")
    requester.channel.basic_publish("mstc.exchange", f"{queue_name}.cancel", json.dumps(job_request("x")).encode(),
                                    pika.BasicProperties(correlation_id="misrouted", reply_to=requester.reply_queue))
    reply = requester.wait_reply("misrouted")
    assert (reply["data"]["status"], reply["data"]["reason"]) == ("rejected", "NotACancel")
    assert fakekube.created_jobs(namespace) == []


@pytest.mark.integration
def test_a_cancel_nobody_answered_in_time_never_acts_later(handlers, requester, fakekube, namespace, rabbitmq,
                                                           queue_name):
    from handler.tools.client import NoReply

    first = handlers.start()
    cid = requester.submit(job_request("scenario/hold"))
    wait_until(lambda: fakekube.pods(namespace), "the job's pod runs")
    first.stop()  # nobody consumes now; the request goes back to the queue, its Job runs on
    with client_for(rabbitmq, queue_name) as client, pytest.raises(NoReply):
        client.cancel(cid, wait_seconds=1)
    time.sleep(1.5)  # past the cancel's expiration
    handlers.start()
    job_name = fakekube.created_jobs(namespace)[0]
    fakekube.finish(namespace, job_name)
    assert requester.wait_reply(cid)["data"]["status"] == "succeeded"  # never cancelled
    assert requester.queue_depth(f"{queue_name}.cancel") == 0


@pytest.mark.integration
def test_a_busy_local_handler_answers_a_cancel_and_stops_the_running_job(handlers, requester, rabbitmq, queue_name,
                                                                         tmp_path):
    images = tmp_path / "images.toml"
    images.write_text('[images."local/sleep"]\ncommand = ["sleep", "60"]\n')
    proc = handlers.spawn(backend="local", local_images=str(images))
    cid = requester.submit(job_request("local/sleep"))
    time.sleep(2)  # the one slot takes it
    with client_for(rabbitmq, queue_name) as client:
        answer = client.cancel(cid, "stop it", wait_seconds=20)
    assert answer["data"]["status"] == "cancelled", handlers.log_of()
    assert requester.wait_reply(cid)["data"]["status"] == "cancelled"
    assert proc.poll() is None
