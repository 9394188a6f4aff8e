import json

import pytest
from cloudevents.core.bindings import rabbitmq
from cloudevents.core.v1.event import CloudEvent

from handler.core.config import Settings
from handler.core.errors import Rejected
from handler.core.messages import Message
from handler.core.request import parse_request, request_identity

SETTINGS = Settings.from_env({"CLOUD_WORKER_MAX_TIMEOUT_MINUTES": "60", "CLOUD_WORKER_MAX_BODY_BYTES": "4096"})
SEED = {"image": "mstc/python-test:latest", "jobName": "test-job", "inputBucketUrl": "http://hostname:9000/bucket"}


def plain(body, **props):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Message(body=raw, content_type="application/json", **props)


def test_the_seed_example_request_parses_with_defaults():
    r = parse_request(plain(SEED, correlation_id="c-1", reply_to="amq.gen-x"), SETTINGS)
    assert r.image == "mstc/python-test:latest"
    assert r.timeout_minutes == 15
    assert r.output_bucket_url == r.input_bucket_url == "http://hostname:9000/bucket"
    assert r.job_name.startswith("test-job-")
    assert (r.request_id, r.correlation_id, r.reply_to) == ("c-1", "c-1", "amq.gen-x")
    assert r.deadline_seconds == 900


def test_the_seed_optional_fields_are_honoured():
    body = dict(SEED, timeOut=5, outputBucketUrl="http://hostname:9000/out-bucket")
    r = parse_request(plain(body), SETTINGS)
    assert (r.timeout_minutes, r.output_bucket_url) == (5, "http://hostname:9000/out-bucket")


@pytest.mark.parametrize("timeout, minutes", [(0, 15), (None, 15), ("5", 5), (0.5, 0.5), (60, 60)])
def test_timeouts_in_minutes_with_zero_meaning_the_default(timeout, minutes):
    assert parse_request(plain(dict(SEED, timeOut=timeout)), SETTINGS).timeout_minutes == minutes


@pytest.mark.parametrize("body, field, reason", [
    (b"not json", "body", "InvalidJson"),
    (b"[1, 2]", "body", "InvalidBody"),
    (b"[" * 100000 + b"]" * 100000, "body", "BodyTooLarge"),
    ({k: v for k, v in SEED.items() if k != "image"}, "image", "MissingField"),
    ({k: v for k, v in SEED.items() if k != "jobName"}, "jobName", "MissingField"),
    ({k: v for k, v in SEED.items() if k != "inputBucketUrl"}, "inputBucketUrl", "MissingField"),
    (dict(SEED, image=42), "image", "InvalidField"),
    (dict(SEED, jobName="../../etc/passwd"), "jobName", "InvalidJobName"),
    (dict(SEED, jobName="a,b=c"), "jobName", "InvalidJobName"),
    (dict(SEED, image="Not An Image"), "image", "InvalidImage"),
    (dict(SEED, inputBucketUrl="ftp://host/bucket"), "inputBucketUrl", "InvalidBucketUrl"),
    (dict(SEED, inputBucketUrl="http://user:secret@host/bucket"), "inputBucketUrl", "InvalidBucketUrl"),
    (dict(SEED, outputBucketUrl="file:///etc"), "outputBucketUrl", "InvalidBucketUrl"),
    (dict(SEED, timeOut=-1), "timeOut", "InvalidTimeout"),
    (dict(SEED, timeOut=61), "timeOut", "TimeoutTooLong"),
    (dict(SEED, timeOut="soon"), "timeOut", "InvalidTimeout"),
    (dict(SEED, timeOut=True), "timeOut", "InvalidTimeout"),
    (dict(SEED, timeOut=float("nan")), "timeOut", "InvalidTimeout"),
])
def test_bad_requests_are_rejected_naming_the_field(body, field, reason):
    with pytest.raises(Rejected) as caught:
        parse_request(plain(body), SETTINGS)
    assert (caught.value.field, caught.value.reason) == (field, reason)


def test_deeply_nested_json_is_rejected_not_a_crash():
    settings = Settings.from_env({"CLOUD_WORKER_MAX_BODY_BYTES": str(10**7)})
    with pytest.raises(Rejected) as caught:
        parse_request(plain(b"[" * 1_000_000 + b"]" * 1_000_000), settings)
    assert caught.value.reason == "InvalidJson"


def test_images_outside_the_allowlist_are_rejected():
    settings = Settings.from_env({"CLOUD_WORKER_ALLOWED_IMAGES": "registry.example.com/team"})
    with pytest.raises(Rejected) as caught:
        parse_request(plain(SEED), settings)
    assert caught.value.reason == "ImageNotAllowed"


def event(**attrs):
    attributes = {"type": "mstc.cloud.worker.request.v1", "source": "/client", "id": "ev-1", **attrs}
    return CloudEvent(attributes=attributes, data=dict(SEED))


def test_a_structured_cloudevent_carries_the_request_in_its_data():
    m = rabbitmq.to_structured_event(event(traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01"))
    r = parse_request(Message(m.body, m.content_type, m.headers, correlation_id="c"), SETTINGS)
    assert (r.request_id, r.event_id, r.event_source, r.image) == ("ev-1", "ev-1", "/client", SEED["image"])
    assert r.traceparent.startswith("00-aaaa")


def test_a_binary_cloudevent_carries_the_request_in_its_body():
    m = rabbitmq.to_binary_event(event(datacontenttype="application/json"))
    r = parse_request(Message(m.body, m.content_type, m.headers), SETTINGS)
    assert (r.request_id, r.client_job_name) == ("ev-1", "test-job")


def test_a_broken_cloudevent_is_rejected():
    msg = Message(b'{"specversion": "1.0", "id": "e", "source": "/s", "type": 7, "data": {}}',
                  "application/cloudevents+json")
    with pytest.raises(Rejected) as caught:
        parse_request(msg, SETTINGS)
    assert (caught.value.field, caught.value.reason) == ("type", "InvalidCloudEvent")


@pytest.mark.parametrize("mode", ["structured", "binary"])
@pytest.mark.parametrize("missing", ["id", "source", "specversion", "type"])
def test_a_cloudevent_without_a_required_attribute_is_rejected_naming_it_rather_than_given_a_made_up_one(
        mode, missing):
    if mode == "structured":
        m = rabbitmq.to_structured_event(event())
        doc = {k: v for k, v in json.loads(m.body).items() if k != missing}
        msg = Message(json.dumps(doc).encode(), m.content_type, m.headers)
    else:
        m = rabbitmq.to_binary_event(event(datacontenttype="application/json"))
        msg = Message(m.body, m.content_type, {k: v for k, v in m.headers.items() if k != f"ce-{missing}"})
    with pytest.raises(Rejected) as caught:
        parse_request(msg, SETTINGS)
    assert (caught.value.field, caught.value.reason) == (missing, "InvalidCloudEvent")
    assert "CloudEvents 1.0 requires id, source, specversion, type" in caught.value.message


def test_binary_events_with_the_same_data_but_their_own_ids_are_told_apart_even_when_rejected():
    m = rabbitmq.to_binary_event(event(datacontenttype="application/json"))
    one = Message(m.body, m.content_type, dict(m.headers))
    other = Message(m.body, m.content_type, {**m.headers, "ce-id": "ev-2"})
    assert request_identity(one) != request_identity(other)
    assert request_identity(plain(SEED)) == request_identity(plain(SEED))  # a plain request: by its body


@pytest.mark.parametrize("props, prefix", [
    ({"message_id": "m", "correlation_id": "c"}, "mid:m"),
    ({"correlation_id": "c"}, "cid:"),
    ({}, "body:"),
])
def test_identity_prefers_message_id_then_correlation_id_then_body(props, prefix):
    assert request_identity(plain(SEED, **props)).startswith(prefix)


def test_cloudevent_identity_beats_the_amqp_properties():
    m = rabbitmq.to_structured_event(event())
    msg = Message(m.body, m.content_type, m.headers, message_id="m")
    assert parse_request(msg, SETTINGS).identity == "ce:/client:ev-1"


def test_progress_events_are_asked_for_by_header_or_field():
    assert parse_request(plain(SEED, headers={"x-mstc-progress": "true"}), SETTINGS).progress_events
    assert parse_request(plain(dict(SEED, progressEvents=True)), SETTINGS).progress_events
    assert not parse_request(plain(SEED), SETTINGS).progress_events


def test_unknown_fields_are_ignored_by_default_and_rejected_when_configured():
    body = dict(SEED, namespace="kube-system", serviceAccountName="cluster-admin")
    assert parse_request(plain(body), SETTINGS).image == SEED["image"]
    strict = Settings.from_env({"CLOUD_WORKER_UNKNOWN_FIELDS": "reject"})
    with pytest.raises(Rejected) as caught:
        parse_request(plain(body), strict)
    assert (caught.value.field, caught.value.reason) == ("namespace", "UnknownField")
    assert "'serviceAccountName'" in caught.value.message
    assert parse_request(plain(dict(SEED, timeOut=2, progressEvents=True)), strict).timeout_minutes == 2


@pytest.mark.parametrize("headers", [
    {f"x-h{i}": "v" for i in range(65)},
    {"x-big": "v" * 20_000},
    {"x-nested": [{"k": ["v" * 1000] * 5}] * 5},
])
def test_a_header_flood_is_rejected_before_the_body_is_read(headers):
    with pytest.raises(Rejected) as caught:
        parse_request(plain(b"not even json", headers=headers), SETTINGS)
    assert (caught.value.field, caught.value.reason) == ("headers", "HeadersTooLarge")


# --- the original client's form: bucket names on the handler's endpoint, and a prefix
ORIGINAL = {"image": "mstc/python-test", "jobName": "test-job", "inputBucket": "test.inputs", "prefix": "1796141366"}
MINIO = Settings.from_env({"MINIO_SERVICE_HOST": "minio.example", "MINIO_SERVICE_PORT": "9123"})


def test_the_original_clients_request_names_buckets_resolved_against_the_minio_endpoint():
    r = parse_request(plain(ORIGINAL), MINIO)
    assert r.input_bucket_url == r.output_bucket_url == "http://minio.example:9123/test.inputs"
    assert (r.input_bucket, r.output_bucket, r.file_prefix, r.named_buckets) == (
        "test.inputs", "test.inputs", "1796141366", True)
    assert r.timeout_minutes == 15
    assert r.log_key == f"1796141366-{r.job_name}.log"


def test_an_explicit_output_bucket_and_the_standard_endpoint_variable_win():
    settings = Settings.from_env({"MINIO_SERVICE_HOST": "minio.example", "AWS_ENDPOINT_URL_S3": "https://s3.example/"})
    r = parse_request(plain(dict(ORIGINAL, outputBucket="test.outputs", timeOut=2)), settings)
    assert r.input_bucket_url == "https://s3.example/test.inputs"
    assert r.output_bucket_url == "https://s3.example/test.outputs"
    assert r.timeout_minutes == 2


def test_without_a_prefix_the_log_is_named_after_the_job_alone_under_the_output_urls_path():
    assert parse_request(plain({k: v for k, v in ORIGINAL.items() if k != "prefix"}), MINIO).file_prefix is None
    r = parse_request(plain(dict(SEED, outputBucketUrl="http://hostname:9000/out/run-1")), SETTINGS)
    assert (r.file_prefix, r.named_buckets, r.output_bucket) == (None, False, "out")
    assert r.log_key == f"run-1/{r.job_name}.log"


def test_a_numeric_prefix_means_the_same_as_its_digits():
    assert parse_request(plain(dict(ORIGINAL, prefix=1796141366)), MINIO).file_prefix == "1796141366"


@pytest.mark.parametrize("changes, field, reason", [
    ({"inputBucket": "Test_Inputs"}, "inputBucket", "InvalidBucketName"),
    ({"inputBucket": "ab"}, "inputBucket", "InvalidBucketName"),
    ({"inputBucket": "192.168.1.10"}, "inputBucket", "InvalidBucketName"),
    ({"inputBucket": "../etc"}, "inputBucket", "InvalidBucketName"),
    ({"outputBucket": "out..bucket"}, "outputBucket", "InvalidBucketName"),
    ({"inputBucket": 7}, "inputBucket", "InvalidField"),
    ({"inputBucket": None, "outputBucket": "test.outputs"}, "inputBucket", "MissingField"),
    ({"prefix": "run\n1"}, "prefix", "InvalidPrefix"),
    ({"prefix": "run\x7f1"}, "prefix", "InvalidPrefix"),
    ({"prefix": "p" * 513}, "prefix", "InvalidPrefix"),
    ({"prefix": "é" * 257}, "prefix", "InvalidPrefix"),  # 257 characters, 514 bytes
    ({"prefix": ["a"]}, "prefix", "InvalidPrefix"),
    ({"prefix": "\ud800"}, "prefix", "InvalidPrefix"),
    ({"inputBucketUrl": "http://hostname:9000/bucket"}, "inputBucket", "ConflictingFields"),
    ({"inputBucket": None, "outputBucket": "out", "inputBucketUrl": "http://h:9000/b"}, "outputBucket",
     "ConflictingFields"),
])
def test_bad_bucket_names_and_prefixes_and_mixed_forms_are_rejected_naming_the_field(changes, field, reason):
    body = {k: v for k, v in dict(ORIGINAL, **changes).items() if v is not None}
    with pytest.raises(Rejected) as caught:
        parse_request(plain(body), MINIO)
    assert (caught.value.field, caught.value.reason) == (field, reason)


def test_a_prefix_of_exactly_512_bytes_is_accepted():
    assert parse_request(plain(dict(ORIGINAL, prefix="é" * 256)), MINIO).file_prefix == "é" * 256


def test_a_request_with_neither_form_says_both_ways_to_name_the_input():
    with pytest.raises(Rejected) as caught:
        parse_request(plain({"image": "mstc/python-test", "jobName": "test-job"}), MINIO)
    assert caught.value.field == "inputBucketUrl" and "inputBucket" in caught.value.message


def test_two_requesters_sharing_a_correlation_id_have_different_identities_and_jobs():
    first = parse_request(plain(SEED, correlation_id="1", reply_to="client-a"), SETTINGS)
    second = parse_request(plain(SEED, correlation_id="1", reply_to="client-b"), SETTINGS)
    assert first.identity != second.identity and first.job_name != second.job_name
    assert first.request_id == second.request_id == "1"  # what each requester knows its request by
    again = parse_request(plain(SEED, correlation_id="1", reply_to="client-a"), SETTINGS)
    assert again.identity == first.identity  # a redelivery is still the same request


# --- Job profiles: chosen by name, in the body or as a CloudEvent extension attribute

def profiles_of(settings=SETTINGS):
    from handler.core.profiles import parse_profiles

    return parse_profiles({"default": "standard", "profiles": {
        "standard": {},
        "gpu-large": {"nodeSelector": {"accelerator": "nvidia"}, "maxTimeoutMinutes": 20, "maxInFlight": 2},
        "short": {"maxTimeoutMinutes": 5, "allowedImages": ["mstc/"]},
    }}, settings, "profiles.yaml")


def test_a_request_names_its_profile_in_the_body():
    r = parse_request(plain(dict(SEED, profile="gpu-large")), SETTINGS, profiles_of())
    assert r.profile.name == "gpu-large" and r.profile.spec == {"nodeSelector": {"accelerator": "nvidia"}}


def test_a_request_that_names_no_profile_gets_the_default_one():
    assert parse_request(plain(SEED), SETTINGS, profiles_of()).profile.name == "standard"


@pytest.mark.parametrize("binary", [False, True])
def test_a_cloudevent_names_its_profile_with_the_profile_extension_attribute(binary):
    make = rabbitmq.to_binary_event if binary else rabbitmq.to_structured_event
    m = make(event(profile="gpu-large", datacontenttype="application/json"))
    assert parse_request(Message(m.body, m.content_type, m.headers), SETTINGS, profiles_of()).profile.name == \
        "gpu-large"


def test_an_unknown_profile_is_rejected_naming_the_valid_ones():
    with pytest.raises(Rejected) as caught:
        parse_request(plain(dict(SEED, profile="gpu-huge")), SETTINGS, profiles_of())
    assert (caught.value.field, caught.value.reason) == ("profile", "UnknownProfile")
    assert caught.value.message == "'gpu-huge' is not a profile of this handler; it has standard, gpu-large, short"


def test_without_a_profiles_file_only_the_built_in_default_profile_exists():
    assert not parse_request(plain(dict(SEED, profile="default")), SETTINGS).profile.configured
    with pytest.raises(Rejected) as caught:
        parse_request(plain(dict(SEED, profile="gpu-large")), SETTINGS)
    assert caught.value.message.endswith("it has default")


def test_a_profile_in_the_body_and_a_different_one_in_the_extension_is_rejected():
    m = rabbitmq.to_structured_event(CloudEvent(
        attributes={"type": "t", "source": "/s", "id": "1", "profile": "standard"},
        data=dict(SEED, profile="gpu-large")))
    with pytest.raises(Rejected) as caught:
        parse_request(Message(m.body, m.content_type, m.headers), SETTINGS, profiles_of())
    assert (caught.value.field, caught.value.reason) == ("profile", "ConflictingFields")


@pytest.mark.parametrize("value", [3, ["gpu-large"], {"name": "gpu-large"}, True])
def test_a_profile_that_is_not_a_string_is_rejected(value):
    with pytest.raises(Rejected) as caught:
        parse_request(plain(dict(SEED, profile=value)), SETTINGS, profiles_of())
    assert (caught.value.field, caught.value.reason) == ("profile", "InvalidField")


def test_a_requests_timeout_is_bounded_by_its_profile():
    profiles = profiles_of()
    assert parse_request(plain(dict(SEED, profile="gpu-large", timeOut=20)), SETTINGS, profiles).timeout_minutes == 20
    with pytest.raises(Rejected) as caught:
        parse_request(plain(dict(SEED, profile="gpu-large", timeOut=21)), SETTINGS, profiles)
    assert (caught.value.reason, caught.value.message) == (
        "TimeoutTooLong", "timeOut 21 is over the maximum of profile gpu-large of 20 minutes")
    # No timeOut: the handler's default (15), cut to a smaller bound.
    assert parse_request(plain(dict(SEED, profile="short")), SETTINGS, profiles).timeout_minutes == 5
    assert parse_request(plain(dict(SEED, profile="gpu-large")), SETTINGS, profiles).timeout_minutes == 15


def test_a_profiles_image_allowlist_narrows_the_handlers():
    profiles = profiles_of()
    assert parse_request(plain(dict(SEED, profile="short")), SETTINGS, profiles).image == SEED["image"]
    with pytest.raises(Rejected) as caught:
        parse_request(plain(dict(SEED, profile="short", image="python:3.12")), SETTINGS, profiles)
    assert (caught.value.reason, caught.value.message) == (
        "ImageNotAllowed", "'python:3.12' is not in the allowed images of profile short")
