"""``RequestHandler`` on its own, over a stub backend: what each kind of message turns into.
No broker and no API server: these are the request handler's rules, not the transport's."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

from handler.core.config import Settings
from handler.core.errors import Transient
from handler.core.messages import Message
from handler.core.outcome import Outcome, Status
from handler.service.handling import ATTEMPTS_HEADER, RequestHandler, attempts_of
from tests.support.backends import StubBackend
from tests.support.requester import SEED_REQUEST

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SUCCEEDED = Outcome(Status.SUCCEEDED, "Completed", "Job completed", exit_code=0, log_tail="hello\n")


def handler_for(outcome=SUCCEEDED, **settings) -> RequestHandler:
    s = Settings.from_env({}, {"dead_letter_queue": "dead", **settings})
    return RequestHandler(s, StubBackend(outcome), clock=lambda: NOW)


def message(body=None, **props) -> Message:
    raw = body if isinstance(body, bytes) else json.dumps(SEED_REQUEST if body is None else body).encode()
    return Message(raw, "application/json", **{"reply_to": "replies", "correlation_id": "c-1", **props})


def test_a_request_that_runs_is_answered_with_one_reply_to_its_reply_to():
    result = handler_for().process(message(), threading.Event())
    assert result.status == "succeeded"
    [reply] = result.publications
    assert (reply.routing_key, reply.correlation_id) == ("replies", "c-1")
    assert json.loads(reply.body)["data"]["logTail"] == "hello\n"


def test_a_handler_without_bucket_credentials_says_in_the_reply_why_the_log_object_is_missing():
    result = handler_for().process(message(), threading.Event())
    data = json.loads(result.publications[0].body)["data"]
    assert "logObject" not in data and "no bucket credentials" in data["logUploadError"]


def test_a_rejected_request_is_answered_and_copied_to_the_dead_letter_queue_with_the_reason():
    result = handler_for().process(message(dict(SEED_REQUEST, timeOut=-1)), threading.Event())
    reply, copy = result.publications
    assert json.loads(reply.body)["data"]["reason"] == "InvalidTimeout"
    assert copy.routing_key == "dead" and copy.headers["x-rejected-field"] == "timeOut"


def test_an_unexpected_error_while_reading_a_request_rejects_it_as_internal_error(monkeypatch):
    def broken(message_, settings_):
        raise OverflowError("a bug")

    monkeypatch.setattr("handler.service.handling.parse_request", broken)
    result = handler_for().process(message(), threading.Event())
    reply, copy = result.publications
    assert json.loads(reply.body)["data"]["reason"] == "InternalError"
    assert copy.headers["x-rejected-reason"] == "InternalError"


def test_a_transient_failure_of_the_backend_is_left_to_the_transport():
    handler = handler_for()

    def down(request, stop, progress=None):
        raise Transient("503")

    handler.backend.run = down
    try:
        handler.process(message(), threading.Event())
    except Transient:
        pass
    else:
        raise AssertionError("a transient failure must reach the transport, which decides on a retry")


def test_giving_up_answers_failed_with_the_last_error_and_keeps_a_dead_letter_copy():
    handler = handler_for()
    result = handler.give_up(message(), Transient("503 the API server is restarting"), attempts=5)
    reply, copy = result.publications
    assert handler.backend.stopped[0] == result.request  # its own Job must not run on
    data = json.loads(reply.body)["data"]
    assert (data["status"], data["reason"]) == ("failed", "RetriesExhausted")
    assert "503 the API server is restarting" in data["message"] and "5 attempt" in data["message"]
    assert copy.headers[ATTEMPTS_HEADER] == 5 and copy.headers["x-failed-reason"] == "RetriesExhausted"


def test_a_retry_copy_keeps_the_request_and_counts_its_attempts():
    original = message(headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}, message_id="m-1")
    copy = handler_for().retry_copy(original, "mstc.exchange", "mstc.queue.work", attempts=2)
    again = Message(copy.body, copy.content_type, copy.headers, copy.message_id, copy.correlation_id, copy.reply_to)
    assert attempts_of(again) == 2 and again.message_id == "m-1" and again.headers["traceparent"]
    assert copy.body == original.body and (copy.exchange, copy.routing_key) == ("mstc.exchange", "mstc.queue.work")


def test_an_attempts_header_that_is_not_a_number_counts_as_a_first_attempt():
    assert attempts_of(message(headers={ATTEMPTS_HEADER: "lots"})) == 0
    assert attempts_of(message(headers={ATTEMPTS_HEADER: 10**9})) == 1000
    assert attempts_of(message()) == 0


def test_the_reply_is_recorded_on_the_job_only_when_the_transport_says_so():
    handler = handler_for()
    result = handler.process(message(), threading.Event())
    assert not hasattr(handler.backend, "replied")
    handler.replied(result)
    assert handler.backend.replied == (result.request.request_id, "succeeded")


def test_an_attempts_header_in_another_case_or_out_of_range_cannot_put_the_last_attempt_off():
    spoofed = message(headers={"X-Cloud-Worker-Attempts": 0, ATTEMPTS_HEADER: 3})
    assert attempts_of(spoofed) == 3
    copy = handler_for().retry_copy(spoofed, "x", "q", attempts=4)
    assert [k for k in copy.headers if k.lower() == ATTEMPTS_HEADER] == [ATTEMPTS_HEADER]
    assert attempts_of(message(headers={ATTEMPTS_HEADER: float("inf")})) == 0
