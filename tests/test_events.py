import json
from datetime import UTC, datetime

from cloudevents.core.bindings import rabbitmq

from handler.core.config import Settings
from handler.core.errors import Rejected
from handler.core.events import LogUpload, encode, lifecycle_event, rejected_event, reply_event
from handler.core.messages import Message, event_type
from handler.core.outcome import Outcome, Status
from handler.core.request import parse_request

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SEED = {"image": "mstc/python-test:latest", "jobName": "test-job", "inputBucketUrl": "http://minio:9000/inputs"}


def request(**props):
    return parse_request(Message(json.dumps(SEED).encode(), **props), Settings.from_env({}))


def outcome(status=Status.SUCCEEDED):
    return Outcome(status, "Completed", "Job completed", exit_code=0, pod_name="p",
                   start_time=datetime(2026, 11, 27, 11, 59, 50, tzinfo=UTC), completion_time=NOW, log_tail="done\n")


def test_the_reply_is_json_a_seed_client_reads_with_json_loads():
    r = request(correlation_id="c-1")
    body = json.loads(encode(reply_event(r, outcome(), source="urn:t", namespace="ns", now=NOW)).body)
    assert body["type"] == "mstc.cloud.worker.job.succeeded.v1"
    assert body["subject"] == r.job_name
    data = body["data"]
    assert data["status"] == "succeeded" and data["exitCode"] == 0 and data["durationSeconds"] == 10
    assert data["requestId"] == "c-1" and data["namespace"] == "ns" and data["logTail"] == "done\n"
    assert data["inputBucketUrl"] == data["outputBucketUrl"] == "http://minio:9000/inputs"
    assert data["startTime"] == "2026-11-27T11:59:50Z"
    assert data["result"].startswith(f"Job {r.job_name} succeeded in 10.0 s")


def test_each_outcome_has_its_own_versioned_type():
    types = {reply_event(request(), outcome(s), source="u", namespace="n", now=NOW).get_type() for s in
             (Status.SUCCEEDED, Status.FAILED, Status.TIMEDOUT)}
    assert types == {event_type("succeeded"), event_type("failed"), event_type("timedout")}


def test_replies_to_the_same_request_share_an_id_so_clients_can_deduplicate():
    a = reply_event(request(correlation_id="c"), outcome(), source="u", namespace="n", now=NOW)
    b = reply_event(request(correlation_id="c"), outcome(), source="u", namespace="n", now=NOW.replace(minute=5))
    c = reply_event(request(correlation_id="d"), outcome(), source="u", namespace="n", now=NOW)
    assert a.get_id() == b.get_id() != c.get_id()


def test_the_rejected_reply_names_the_field():
    event = rejected_event(Rejected("timeOut", "InvalidTimeout", "timeOut -1 is negative"), identity="i",
                           request_id="r", source="u", now=NOW)
    data = json.loads(encode(event).body)["data"]
    assert (data["status"], data["field"], data["reason"]) == ("rejected", "timeOut", "InvalidTimeout")


def test_each_different_rejection_has_an_id_of_its_own_and_the_same_one_keeps_its_id():
    def rejected(field, reason, message, identity="i"):
        return rejected_event(Rejected(field, reason, message), identity=identity, request_id="r", source="u",
                              now=NOW).get_id()

    ids = {rejected("content-type", "UnsupportedMediaType", "not JSON"), rejected("body", "BodyTooLarge", "too big"),
           rejected("timeOut", "InvalidTimeout", "negative"), rejected("timeOut", "InvalidTimeout", "negative", "j")}
    assert len(ids) == 4
    assert rejected("timeOut", "InvalidTimeout", "negative") == rejected("timeOut", "InvalidTimeout", "negative")


def test_trace_context_travels_from_request_to_reply():
    tp = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    r = request(headers={"traceparent": tp})
    assert reply_event(r, outcome(), source="u", namespace="n", now=NOW).get_extension("traceparent") == tp


def test_lifecycle_events_are_typed_and_round_trip_through_the_sdk():
    enc = encode(lifecycle_event("accepted", request(), source="u", namespace="n", now=NOW))
    parsed = rabbitmq.from_structured_event(rabbitmq.RabbitMQMessage(enc.headers, enc.content_type, enc.body))
    assert parsed.get_type() == event_type("accepted") and parsed.get_data()["status"] == "accepted"


def test_the_reply_has_the_top_level_result_the_originals_client_reads_the_job_name_from():
    r = request(correlation_id="c-1")
    for status in (Status.SUCCEEDED, Status.FAILED, Status.TIMEDOUT):
        body = json.loads(encode(reply_event(r, outcome(status), source="u", namespace="n", now=NOW)).body)
        assert body["result"] == f"Job {r.job_name} {status.value}."
        assert body["result"].split(" ")[1] == r.job_name
        assert body["data"]["result"].startswith(f"Job {r.job_name} {status.value}")


def test_the_reply_with_its_result_attribute_stays_a_valid_cloudevent_for_the_sdk():
    encoded = encode(reply_event(request(), outcome(), source="u", namespace="n", now=NOW))
    event = rabbitmq.from_structured_event(
        rabbitmq.RabbitMQMessage(headers=encoded.headers, content_type=encoded.content_type, body=encoded.body))
    assert event.get_extension("result").startswith("Job test-job-")
    rejected = encode(rejected_event(Rejected("inputBucket", "InvalidBucketName", "bad"), identity="i",
                                     request_id="r", source="u", now=NOW))
    assert json.loads(rejected.body)["result"] == "Request rejected: inputBucket: bad"
    rabbitmq.from_structured_event(
        rabbitmq.RabbitMQMessage(headers=rejected.headers, content_type=rejected.content_type, body=rejected.body))


def test_the_reply_says_where_the_log_went_or_why_it_did_not():
    r = parse_request(Message(json.dumps({"image": "i", "jobName": "j", "inputBucket": "test.inputs",
                                          "prefix": "17"}).encode()), Settings.from_env({}))
    done = LogUpload(r.log_key, f"http://localhost:9000/test.inputs/{r.log_key}", size=5)
    data = reply_event(r, outcome(), source="u", namespace="n", now=NOW, log_upload=done).get_data()
    assert (data["logObject"], data["logObjectBytes"], data["logTruncated"], data["prefix"]) == (
        f"17-{r.job_name}.log", 5, False, "17")
    assert "logUploadError" not in data
    failed = LogUpload(r.log_key, done.url, error="endpoint unreachable")
    data = reply_event(r, outcome(), source="u", namespace="n", now=NOW, log_upload=failed).get_data()
    assert data["logUploadError"] == "endpoint unreachable" and "logObject" not in data


def test_replies_and_lifecycle_events_name_the_profile_of_a_handler_with_profiles():
    import dataclasses

    from handler.core.profiles import Profile

    plain = request(correlation_id="c-1")
    assert "profile" not in json.loads(encode(reply_event(plain, outcome(), source="u", namespace="n", now=NOW)).body)[
        "data"]  # without a profiles file replies stay as they were
    gpu = dataclasses.replace(plain, profile=Profile("gpu-large"))
    for event in (reply_event(gpu, outcome(), source="u", namespace="n", now=NOW),
                  lifecycle_event("accepted", gpu, source="u", namespace="n", now=NOW)):
        assert json.loads(encode(event).body)["data"]["profile"] == "gpu-large"
