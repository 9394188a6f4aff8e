"""Hypothesis strategies for whatever a queue publisher could send: bodies (plain JSON,
structured and binary CloudEvents, raw bytes, deep nesting), AMQP headers of every type
pika can carry, and request fields mixing the valid with the nearly valid, so examples
reach past the first check into every rule of ``parse_request``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from handler.core.messages import CANCEL_TYPE, Message

#: AMQP field-table keys are short strings: at most 255 bytes.
header_keys = st.text(min_size=1, max_size=24).filter(lambda k: len(k.encode()) <= 255)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=40),
                     st.binary(max_size=40))
header_values = st.recursive(
    _scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(header_keys, inner, max_size=4)),
    max_leaves=5)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=6)

images = st.one_of(
    st.sampled_from([
        "mstc/python-test:latest", "python", "registry.example.com/team/app:1",
        "registry.example.com/team/app@sha256:" + "a" * 64, "registry.example.com.evil.io/team/app",
        "registry.example.com/team/../other", "MSTC/python-test", " mstc/python-test", "mstc/python-test ",
        "mstc/python-test@sha256:abc", "mstc/python-test:tag@sha256:" + "0" * 64, "", "x" * 600, "a/" * 300,
        "localhost:5000/x", "mstc/python-test:-bad", "mstc//double",
    ]),
    st.text(max_size=40), json_values)
job_names = st.one_of(
    st.sampled_from(["test-job", "a", "Test_Job.v2", "../etc/passwd", "a/b", "name,app=evil", "x=y", "x\n",
                     "job name", "A" * 128, "A" * 129, "-x", "x-", "ünïcode", "a" * 200, "."]),
    st.text(max_size=140), json_values)
timeouts = st.one_of(st.none(), st.integers(-10**6, 10**6), st.floats(), st.text(max_size=10),
                     st.sampled_from([0, -1, 1e308, "5", "nan", "inf", True, [], {}]))
buckets = st.one_of(
    st.sampled_from(["http://minio:9000/bucket", "s3://bucket/prefix", "https://s3.example.com:443/b/p",
                     "http://user:secret@minio:9000/b", "ftp://minio/b", "http://minio/b?x=1", "http://minio/../b",
                     "s3://", "http://minio:99999/b", "http://minio:9000/b#frag", "http:///b", "s3://UPPER/b"]),
    st.text(max_size=60), json_values)
_fields = {"image": images, "jobName": job_names, "timeOut": timeouts, "inputBucketUrl": buckets,
           "outputBucketUrl": buckets, "progressEvents": st.one_of(st.booleans(), json_values)}
#: Request bodies: any subset of the documented fields with tricky values, plus extras
#: (the operator's fields among them) that must never reach the Job.
requests = st.builds(
    lambda fields, extras: {**extras, **fields},
    st.fixed_dictionaries({}, optional=_fields),
    st.dictionaries(st.one_of(st.sampled_from(["namespace", "serviceAccountName", "env", "securityContext",
                                               "hostPath", "command", "privileged", "volumes"]),
                              st.text(max_size=20)), json_values, max_size=3))
#: A valid request, for the examples that should get all the way to a Job.
valid_requests = st.fixed_dictionaries(
    {"image": st.just("mstc/python-test:latest"),
     "jobName": st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True),
     "inputBucketUrl": st.just("http://minio:9000/bucket")},
    optional={"timeOut": st.integers(0, 25), "outputBucketUrl": st.just("s3://out/prefix")})
ce_types = st.one_of(st.sampled_from([CANCEL_TYPE, "mstc.cloud.worker.job.request.v1", "", "x"]), st.text(max_size=20))
content_types = st.one_of(
    st.sampled_from(["application/json", "application/cloudevents+json", "application/cloudevents-batch+json",
                     "text/plain", "application/json; charset=utf-8", ""]),
    st.none(), st.text(max_size=30))
amqp_ids = st.one_of(st.none(), st.text(max_size=40).filter(lambda t: len(t.encode()) <= 255))


@dataclass
class Fuzzed:
    """One message as a publisher would send it (before the broker adds anything)."""

    body: bytes
    content_type: str | None
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None

    def message(self, correlation_id: str | None = None, reply_to: str | None = None) -> Message:
        return Message(self.body, self.content_type, self.headers, self.message_id, correlation_id, reply_to)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def structured_events(draw) -> Fuzzed:
    """Mostly well-formed envelopes (so the data is looked at), sometimes broken ones."""
    event: dict[str, Any] = {"specversion": "1.0", "type": draw(ce_types | st.just("mstc.request")),
                             "source": draw(st.text(min_size=1, max_size=20)),
                             "id": draw(st.text(min_size=1, max_size=20))}
    if draw(st.integers(0, 4)) == 0:  # break the envelope: drop or garble an attribute
        key = draw(st.sampled_from(sorted(event)))
        if draw(st.booleans()):
            del event[key]
        else:
            event[key] = draw(json_values)
    data = draw(st.one_of(requests, valid_requests, valid_requests, json_values,
                          st.dictionaries(st.sampled_from(["requestId", "jobName", "reason"]), json_values)))
    if draw(st.integers(0, 9)):
        event["data"] = data
    else:
        event["data_base64"] = draw(st.text(max_size=20))
    event.update(draw(st.dictionaries(st.sampled_from(["subject", "datacontenttype", "traceparent", "time",
                                                       "dataschema", "myext", "Bad_Ext"]), json_values, max_size=2)))
    return Fuzzed(_dumps(event), draw(st.sampled_from(["application/cloudevents+json",
                                                       "application/cloudevents+json; charset=utf-8"])),
                  draw(st.dictionaries(header_keys, header_values, max_size=2)), draw(amqp_ids))


@st.composite
def binary_events(draw) -> Fuzzed:
    """Mostly complete ``ce-`` headers, sometimes with a missing or oddly typed one."""
    headers: dict[str, Any] = {"ce-specversion": "1.0", "ce-id": draw(st.text(min_size=1, max_size=20)),
                               "ce-source": draw(st.text(min_size=1, max_size=20)), "ce-type": draw(ce_types)}
    if draw(st.integers(0, 4)) == 0:
        key = draw(st.sampled_from(sorted(headers)))
        if draw(st.booleans()):
            del headers[key]
        else:
            headers[key] = draw(header_values)
    headers.update(draw(st.dictionaries(st.sampled_from(["ce-subject", "ce-time", "traceparent", "tracestate",
                                                         "x-mstc-progress", "ce-myext"]), header_values, max_size=2)))
    body = draw(st.one_of(requests.map(_dumps), valid_requests.map(_dumps), st.binary(max_size=60)))
    return Fuzzed(body, draw(content_types), headers, draw(amqp_ids))


@st.composite
def plain_messages(draw) -> Fuzzed:
    body = draw(st.one_of(requests.map(_dumps), valid_requests.map(_dumps), json_values.map(_dumps),
                          st.binary(max_size=200), st.text(max_size=100).map(str.encode),
                          st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n)))
    return Fuzzed(body, draw(content_types), draw(st.dictionaries(header_keys, header_values, max_size=5)),
                  draw(amqp_ids))


messages = st.one_of(plain_messages(), structured_events(), binary_events())
