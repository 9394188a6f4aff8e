"""W3C trace context: carried unchanged from an AMQP request to its Job and reply, and
an OpenTelemetry span per Job, a child of the request's traceparent, when OTel is there.
(The HTTP path's trace context is tested in test_http.)"""

import json

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from handler.core.config import Settings
from handler.core.manifest import ANNOTATION_TRACEPARENT, ANNOTATION_TRACESTATE
from handler.core.messages import Message
from handler.core.outcome import Outcome, Status
from handler.core.request import parse_request
from handler.service import tracing
from handler.service.handling import RequestHandler
from tests.support.backends import StubBackend
from tests.support.requester import SEED_REQUEST
from tests.support.waiting import job_request

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
TRACESTATE = "vendor=opaque"

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans():
    """Finished spans, recorded by an SDK provider installed once for the test process
    (OTel allows one global provider; the handler only ever uses the global one)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def traced_message(**headers):
    return Message(json.dumps(SEED_REQUEST).encode(), "application/json",
                   {"traceparent": TRACEPARENT, "tracestate": TRACESTATE, **headers}, correlation_id="c-7")


def test_each_job_gets_a_span_that_continues_the_requests_trace(spans):
    outcome = Outcome(Status.SUCCEEDED, "Completed", "ok")
    RequestHandler(Settings.from_env({}), StubBackend(outcome)).process(traced_message(), stop=None)
    (span,) = spans.get_finished_spans()
    assert span.name == "cloud-worker job" and span.kind is trace.SpanKind.CONSUMER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.attributes["cloud_worker.status"] == "succeeded"
    assert span.attributes["messaging.message.conversation_id"] == "c-7"
    assert span.attributes["cloud_worker.job_name"].startswith("test-job-")


def test_a_request_without_trace_context_starts_a_new_trace(spans):
    RequestHandler(Settings.from_env({}), StubBackend(Outcome(Status.FAILED, "Error", "x"))).process(
        Message(json.dumps(SEED_REQUEST).encode(), "application/json"), stop=None)
    (span,) = spans.get_finished_spans()
    assert span.parent is None and format(span.context.trace_id, "032x") != TRACE_ID


def test_without_opentelemetry_the_span_is_none_and_recording_is_a_no_op(monkeypatch):
    monkeypatch.setattr(tracing, "trace", None)
    request = parse_request(traced_message(), Settings.from_env({}))
    with tracing.job_span(request) as span:
        tracing.record_status(span, "succeeded")
    assert span is None


@pytest.mark.integration
def test_trace_context_from_amqp_headers_reaches_the_job_and_the_reply_unchanged(handlers, requester, fakekube,
                                                                                 namespace):
    handlers.start()
    cid = requester.submit(job_request("scenario/succeed:0.1"),
                           headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE})
    reply = requester.wait_reply(cid)
    assert (reply["traceparent"], reply["tracestate"]) == (TRACEPARENT, TRACESTATE)
    job = fakekube.jobs(namespace)[0]
    annotations = job["metadata"]["annotations"]
    assert (annotations[ANNOTATION_TRACEPARENT], annotations[ANNOTATION_TRACESTATE]) == (TRACEPARENT, TRACESTATE)
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TRACEPARENT"] == TRACEPARENT
