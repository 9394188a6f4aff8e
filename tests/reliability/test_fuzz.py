"""Fuzzing: thousands of arbitrary messages through the worker in-process (a stub
backend, so each takes a millisecond), and a few hundred through the real broker and
handler. Every one must get a reply (or a dead-letter copy); the handler must never
raise, hang, or build a Job the API server could refuse or misread."""

from __future__ import annotations

import collections
import json
import re
import threading

import pika
import pytest
from hypothesis import HealthCheck, given, settings

from handler.core.config import Settings
from handler.core.manifest import build_job
from handler.core.messages import TYPE_PREFIX, CancelOutcome, CancelStatus
from handler.core.outcome import Outcome, Status
from handler.service.handling import RequestHandler
from tests.reliability.fuzzing import Fuzzed, messages
from tests.support.waiting import wait_until

IN_PROCESS_EXAMPLES = 2500
BROKER_EXAMPLES = 300
REPLY_QUEUE, DEAD_LETTERS = "fuzz.replies", "fuzz.dead"
SETTINGS = Settings.from_env({"CLOUD_WORKER_DEAD_LETTER_QUEUE": DEAD_LETTERS, "CLOUD_WORKER_NAMESPACE": "fuzz"})
#: What the API server accepts: DNS-1123 names (at most 63), label values.
DNS_1123 = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
TERMINAL = {"succeeded", "rejected", "notFound", "cancelled", "finished"}
#: Reproducible examples (and figures): the same cases on every run.
FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class StubBackend:
    """Every Job succeeds at once; every cancel finds nothing."""

    namespace = "fuzz"

    def __init__(self) -> None:
        self.requests = []

    def run(self, request, stop, progress=None):
        self.requests.append(request)
        if progress:
            progress("accepted", {})
        return Outcome(Status.SUCCEEDED, "Completed", "Job completed", exit_code=0)

    def cancel(self, target):
        return CancelOutcome(CancelStatus.NOT_FOUND, None, f"no Job for {target.target}")

    def stop(self, request, reason):
        return CancelOutcome(CancelStatus.NOT_FOUND, None, f"no Job for request {request.request_id}")

    def mark_replied(self, request, status, release=True):
        pass

    def wake(self):
        pass


def encodable(pub) -> None:
    """The broker can carry it: pika encodes its properties (headers of any depth and type)."""
    pika.BasicProperties(content_type=pub.content_type or None, correlation_id=pub.correlation_id,
                         headers=dict(pub.headers) or None, delivery_mode=2).encode()


def check_manifest(request) -> None:
    job = build_job(request, SETTINGS)
    meta, spec = job["metadata"], job["spec"]["template"]["spec"]
    assert DNS_1123.fullmatch(meta["name"]), meta["name"]
    assert meta["namespace"] == "fuzz"
    assert all(LABEL_VALUE.fullmatch(v) for v in meta["labels"].values()), meta["labels"]
    assert all(isinstance(v, str) for v in meta["annotations"].values())
    assert set(spec) == {"restartPolicy", "automountServiceAccountToken", "securityContext", "containers"}
    (container,) = spec["containers"]
    assert set(container) <= {"name", "image", "imagePullPolicy", "env", "securityContext"}
    assert container["image"] == request.image
    assert {e["name"] for e in container["env"]} <= {"INPUT_BUCKET_URL", "OUTPUT_BUCKET_URL", "INPUT_BUCKET",
                                                     "OUTPUT_BUCKET", "MSTC_JOB", "MSTC_REQUEST_ID", "TRACEPARENT",
                                                     "FILE_PREFIX", "MINIO_SERVICE_HOST", "MINIO_SERVICE_PORT"}


@pytest.mark.slow  # about half a minute; `make test` runs it, `make test-fast` leaves it out
def test_thousands_of_fuzzed_messages_never_crash_the_worker_and_each_get_an_answer(figures):
    backend = StubBackend()
    worker = RequestHandler(SETTINGS, backend)
    counts: collections.Counter = collections.Counter()

    @settings(FUZZ, max_examples=IN_PROCESS_EXAMPLES)
    @given(fuzzed=messages)
    def one(fuzzed: Fuzzed) -> None:
        emitted = []
        result = worker.process(fuzzed.message("cid-1", REPLY_QUEUE), threading.Event(), emitted.append)
        pubs = emitted + result.publications
        for pub in pubs:
            encodable(pub)
        replies = [json.loads(p.body) for p in pubs if p.routing_key == REPLY_QUEUE]
        terminal = [r for r in replies if r["data"]["status"] in TERMINAL]
        assert len(terminal) == 1, replies
        assert all(r["type"].startswith(TYPE_PREFIX) for r in replies)
        dead = [p for p in pubs if p.routing_key == DEAD_LETTERS]
        if result.status == "rejected":
            assert len(dead) == 1 and dead[0].body == fuzzed.body
            assert dead[0].headers["x-rejected-reason"] == terminal[0]["data"]["reason"]
            counts[f"rejected {terminal[0]['data']['field']}: {terminal[0]['data']['reason']}"] += 1
        else:
            assert not dead
            counts[result.status] += 1
        if result.request is not None:
            check_manifest(result.request)

    one()
    cases = sum(counts.values())
    figures.update(cases=cases, crashes=0, hangs=0, accepted=counts["succeeded"], distinct_outcomes=len(counts),
                   outcomes=dict(counts.most_common()))
    assert cases >= IN_PROCESS_EXAMPLES * 0.9
    assert counts["succeeded"] > 20  # the strategies do reach all the way to a Job


@pytest.mark.integration
def test_hundreds_of_fuzzed_messages_through_the_broker_each_get_a_reply_or_a_dead_letter(
        handlers, requester, fakekube, namespace, figures):
    dead_letters = f"{handlers.queue}.dead"
    handler = handlers.start(concurrency=8, dead_letter_queue=dead_letters,
                             allowed_images="mstc,registry.example.com/team")  # scenario/* would hold Jobs open
    sent: list[str] = []

    @settings(FUZZ, max_examples=BROKER_EXAMPLES)
    @given(fuzzed=messages)
    def publish(fuzzed: Fuzzed) -> None:
        cid = f"fz-{len(sent)}"
        requester.publish(fuzzed.body, correlation_id=cid, content_type=fuzzed.content_type,
                          headers=fuzzed.headers or None, message_id=fuzzed.message_id)
        sent.append(cid)

    publish()
    wait_until(lambda: requester.collect(0.2) or all(requester.terminal_replies_for(c) for c in sent),
               "every fuzzed message is answered", timeout=60)
    dead = []
    while (got := requester.get_one(dead_letters)) is not None:
        dead.append(got[0].correlation_id)
    statuses = collections.Counter(requester.terminal_replies_for(c)[0]["data"]["status"] for c in sent)
    figures.update(cases=len(sent), dead_letters=len(dead), outcomes=dict(statuses),
                   jobs=len(fakekube.created_jobs(namespace)), handler_alive=handler.thread.is_alive())
    rejected = [c for c in sent if requester.terminal_replies_for(c)[0]["data"]["status"] == "rejected"]
    assert sorted(dead) == sorted(rejected)
    assert handler.thread.is_alive() and handler.consumer.stats.requeued == 0
    assert requester.queue_depth() == 0
