"""Work requests: from an incoming message (any transport) to a validated ``WorkRequest``.

The request format is the seed's contract: a JSON body ``{"image", "jobName",
"timeOut"?, "inputBucketUrl", "outputBucketUrl"?}``, or the original client's later
form that names buckets on the handler's MinIO endpoint instead: ``{"image", "jobName",
"inputBucket", "outputBucket"?, "prefix"?}`` (resolved here to URLs against
``Settings.s3_endpoint_url``, so everything downstream deals in one form). The same
fields may arrive as the ``data`` of a CloudEvent in structured or binary mode. Parsing is a pure function of
the message and the settings; every way a request can be wrong raises ``Rejected``
naming the field, so the requester learns exactly what to fix.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cloudevents.core.bindings import rabbitmq

from handler.core.bucketurl import (
    BucketHostNotAllowed,
    BucketUrl,
    InvalidBucketUrl,
    bucket_name_problem,
    check_bucket_host,
    parse_bucket_url,
)
from handler.core.config import Settings
from handler.core.errors import Rejected
from handler.core.images import InvalidImage, check_allowed, parse_image
from handler.core.messages import CANCEL_TYPE, CancelRequest, Message
from handler.core.naming import is_valid_client_name, is_valid_job_name, job_name
from handler.core.profiles import BUILTIN, NAME, Profile, Profiles

STRUCTURED_CONTENT_TYPE = "application/cloudevents"
#: The attributes every CloudEvent carries (CloudEvents 1.0, "REQUIRED Attributes"). The
#: SDK makes up a missing ``id`` (a fresh uuid each time it reads the event) and assumes a
#: missing ``specversion``: a redelivered event without an id would be a new request.
REQUIRED_ATTRIBUTES = ("id", "source", "specversion", "type")
#: Asking for lifecycle events (accepted, started) besides the terminal reply:
#: this AMQP/HTTP header set to "true", or the request field ``progressEvents: true``.
PROGRESS_HEADER = "x-mstc-progress"
#: Longest string value accepted for any request field (bucket URLs, image names).
MAX_FIELD_CHARS = 2048
#: The documented request fields. Nothing else in a request can reach the Job: the
#: namespace, service account, security context, volumes and env are the operator's.
KNOWN_FIELDS = frozenset({"image", "jobName", "timeOut", "inputBucketUrl", "outputBucketUrl", "inputBucket",
                          "outputBucket", "prefix", "progressEvents", "profile"})
#: The request field, and the CloudEvents extension attribute, that names the Job profile.
PROFILE_FIELD = "profile"
#: Longest ``prefix`` accepted, in UTF-8 bytes: it starts object keys (at most 1024 bytes
#: in S3) and the Job's log key, with room left for the file names after it.
MAX_PREFIX_BYTES = 512
#: Most message headers (AMQP) accepted, and their total size in bytes. A request needs a
#: handful (binary CloudEvents about ten); a flood is refused before anything reads it.
MAX_HEADERS = 64
MAX_HEADER_BYTES = 16 * 1024

#: Cancels: a reason is kept to this many characters; one without is "cancelled on request".
DEFAULT_CANCEL_REASON = "cancelled on request"
MAX_CANCEL_REASON_CHARS = 256
#: A cancel is a few short fields: a bigger body is not looked into (it is then refused
#: as a request), so recognising cancels never parses a large body twice.
MAX_CANCEL_BYTES = 64 * 1024


@dataclass(frozen=True)
class WorkRequest:
    request_id: str
    #: What makes two deliveries the same request (see ``request_identity``).
    identity: str
    job_name: str
    client_job_name: str
    image: str
    timeout_minutes: float
    input_bucket_url: str
    output_bucket_url: str
    reply_to: str | None = None
    correlation_id: str | None = None
    #: The request came as a CloudEvent (its id/source/type), else None.
    event_id: str | None = None
    event_source: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    progress_events: bool = False
    #: The request's ``prefix``: its files are ``<prefix>-<file>`` in the buckets.
    file_prefix: str | None = None
    #: The request named its buckets (``inputBucket``), the original client's form.
    named_buckets: bool = False
    #: The Job profile the request chose (or the default one): the shape of its Job.
    profile: Profile = BUILTIN

    @property
    def deadline_seconds(self) -> int:
        """activeDeadlineSeconds for the Job: the timeout, rounded up to whole seconds."""
        return max(1, math.ceil(self.timeout_minutes * 60))

    @property
    def input_bucket(self) -> str:
        return _bucket_part(self.input_bucket_url).bucket

    @property
    def output_bucket(self) -> str:
        return _bucket_part(self.output_bucket_url).bucket

    @property
    def log_key(self) -> str:
        """Where the Job's log goes in the output bucket: ``<prefix>-<job name>.log``
        (``<job name>.log`` without a prefix), as the original names it, under the output
        URL's own path if it has one."""
        name = f"{self.file_prefix}-{self.job_name}.log" if self.file_prefix else f"{self.job_name}.log"
        return _bucket_part(self.output_bucket_url).prefix + name


def request_identity(message: Message, event_id: str | None = None, event_source: str | None = None) -> str:
    """What makes two deliveries 'the same request', and no two requesters' requests the same.

    A CloudEvent's id is unique within its ``source``, and an AMQP ``message_id`` is meant
    to be unique: either names the request. A ``correlation_id`` is only unique per
    requester (two clients may both count from 1), so without an id the identity is a hash
    of the whole request: where the reply goes, the correlation id and the body. A
    redelivery is byte for byte the same message, so it still maps to the same Job.
    """
    if event_id:
        return f"ce:{event_source or ''}:{event_id}"
    if message.message_id:
        return f"mid:{message.message_id}"
    digest = hashlib.sha256()
    # A binary-mode event's id and source are headers: two events with the same data are two requests.
    names = [str(_header(message, f"ce-{name}") or "") for name in ("source", "id")]
    for part in ((message.reply_to or "").encode(), (message.correlation_id or "").encode(), message.body,
                 *(name.encode("utf-8", "surrogatepass") for name in names if any(names))):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return ("cid:" if message.correlation_id else "body:") + digest.hexdigest()


def parse_request(message: Message, settings: Settings, profiles: Profiles | None = None) -> WorkRequest:
    """Validate a message into a WorkRequest, or raise ``Rejected`` saying what is wrong.
    ``profiles`` are the handler's (None: the built-in one, the settings as they are)."""
    check_headers(message)
    check_body_size(len(message.body), settings)
    data, event = _payload(message)
    unknown = sorted(k for k in data if k not in KNOWN_FIELDS)
    if unknown and settings.unknown_fields == "reject":
        shown = ", ".join(repr(k[:64]) for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise Rejected(unknown[0][:64], "UnknownField",
                       f"unknown field(s) {shown}; a request has only {', '.join(sorted(KNOWN_FIELDS))}")
    image = _required_str(data, "image")
    client_name = _required_str(data, "jobName")
    if not is_valid_client_name(client_name):
        raise Rejected(
            "jobName", "InvalidJobName",
            f"{client_name!r} cannot become a Kubernetes name: use 1-128 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit",
        )
    profile = choose_profile(requested_profile(data, event), profiles or Profiles.builtin())
    try:
        ref = parse_image(image)
    except InvalidImage as exc:
        raise Rejected("image", "InvalidImage", str(exc)) from exc
    if not check_allowed(ref, settings.allowed_images):
        raise Rejected("image", "ImageNotAllowed", f"{image!r} is not in the allowed images of this handler")
    if not check_allowed(ref, profile.allowed_images):
        raise Rejected("image", "ImageNotAllowed", f"{image!r} is not in the allowed images of profile {profile.name}")
    input_url, output_url, named = _buckets(data, settings)
    prefix = _prefix(data)
    timeout = _timeout(data.get("timeOut"), settings, profile)
    event_id = event.get_id() if event is not None else None
    event_source = event.get_source() if event is not None else None
    identity = request_identity(message, event_id, event_source)
    return WorkRequest(
        request_id=event_id or message.message_id or message.correlation_id or identity,
        identity=identity,
        job_name=job_name(client_name, identity),
        client_job_name=client_name,
        image=image,
        timeout_minutes=timeout,
        input_bucket_url=input_url,
        output_bucket_url=output_url,
        reply_to=message.reply_to or None,
        correlation_id=message.correlation_id or None,
        event_id=event_id,
        event_source=event_source,
        traceparent=_trace(event, message, "traceparent"),
        tracestate=_trace(event, message, "tracestate"),
        progress_events=_wants_progress(message, data),
        file_prefix=prefix,
        named_buckets=named,
        profile=profile,
    )


def profile_of(message: Message, settings: Settings, profiles: Profiles) -> Profile:
    """The profile a message's request chooses, from its fields alone (cheap: the
    transport routes by it before the request is run); ``Rejected`` as ``parse_request``
    would say for a message it cannot read or a profile it does not know."""
    check_headers(message)
    check_body_size(len(message.body), settings)
    data, event = _payload(message)
    return choose_profile(requested_profile(data, event), profiles)


def requested_profile(data: Mapping[str, Any], event: Any) -> str | None:
    """The profile name a request gives: its ``profile`` field, or its CloudEvent's
    ``profile`` extension attribute (both: they must agree); None when it gives none."""
    named = data.get(PROFILE_FIELD)
    extension = event.get_extension(PROFILE_FIELD) if event is not None else None
    for where, value in (("profile", named), ("profile (CloudEvent extension)", extension)):
        if value is not None and value != "" and not isinstance(value, str):
            raise Rejected("profile", "InvalidField", f"{where} must be a string, got {type(value).__name__}")
    named, extension = named or None, extension or None
    if named is not None and extension is not None and named != extension:
        raise Rejected("profile", "ConflictingFields", f"the profile field ({named[:64]!r}) and the CloudEvent's "
                       f"profile extension ({extension[:64]!r}) differ: give one, or the same in both")
    return named or extension


def choose_profile(name: str | None, profiles: Profiles) -> Profile:
    """The profile a request runs with: the one it names, else the default; ``Rejected``
    naming the valid profiles when it names none of them."""
    if name is None:
        return profiles.default
    found = profiles.get(name)
    if found is None:
        shown = repr(name[:64]) if NAME.fullmatch(name) else f"{name[:64]!r} (not even a profile name)"
        raise Rejected("profile", "UnknownProfile",
                       f"{shown} is not a profile of this handler; it has {', '.join(profiles.names)}")
    return found


def check_headers(message: Message) -> None:
    """Refuse a header flood (too many headers, or too many bytes in them) first of all,
    so nothing downstream (CloudEvent parsing, the dead-letter copy) handles it."""
    if len(message.headers) > MAX_HEADERS:
        raise Rejected("headers", "HeadersTooLarge",
                       f"{len(message.headers)} headers is over the limit of {MAX_HEADERS}")
    size = _size(message.headers, MAX_HEADER_BYTES)
    if size > MAX_HEADER_BYTES:
        raise Rejected("headers", "HeadersTooLarge", f"headers of over {MAX_HEADER_BYTES} bytes")


def check_body_size(size: int | None, settings: Settings) -> None:
    """Refuse a body over ``max_body_bytes`` (``size`` None: a body cut at the limit)."""
    if size is None or size > settings.max_body_bytes:
        shown = f"{size} bytes" if size is not None else "the body"
        raise Rejected("body", "BodyTooLarge", f"{shown} is over the limit of {settings.max_body_bytes}")


def _size(value: Any, limit: int) -> int:
    """Approximate encoded size of a header value (nested tables and arrays included),
    counted without recursion and only until it passes ``limit``."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, Mapping):
            for key, inner in item.items():
                total += len(str(key)) + 2
                stack.append(inner)
        elif isinstance(item, (list, tuple)):
            total += 1
            stack.extend(item)
        elif isinstance(item, (str, bytes)):
            total += len(item) + 1
        else:
            total += 9
    return total


def is_cloudevent(message: Message) -> bool:
    """Structured mode (its content type), or binary mode: any of the required attributes as a
    ``ce-`` header (one without the others is a CloudEvent missing them, not a plain request)."""
    content_type = (message.content_type or "").lower()
    return content_type.startswith(STRUCTURED_CONTENT_TYPE) or any(
        _header(message, f"ce-{name}") is not None for name in REQUIRED_ATTRIBUTES)


def check_required_attributes(message: Message) -> None:
    """Refuse a CloudEvent without one of its required attributes, naming it. Read from the
    message itself, before the SDK, which would make up an id and a specversion."""
    if (message.content_type or "").lower().startswith(STRUCTURED_CONTENT_TYPE):
        try:
            doc = json.loads(message.body)
        except (ValueError, RecursionError):
            return  # not JSON: the SDK says so
        if not isinstance(doc, dict):
            return
        values = {name: doc.get(name) for name in REQUIRED_ATTRIBUTES}
    else:
        values = {name: _header(message, f"ce-{name}") for name in REQUIRED_ATTRIBUTES}
    for name, value in values.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if value is None:
            raise Rejected(name, "InvalidCloudEvent", f"the CloudEvent has no {name!r} attribute; CloudEvents 1.0 "
                                                      f"requires {', '.join(REQUIRED_ATTRIBUTES)}")
        if not isinstance(value, str) or not value:
            raise Rejected(name, "InvalidCloudEvent", f"the CloudEvent's {name!r} attribute must be a non-empty "
                                                      "string")


def read_cloudevent(message: Message) -> Any:
    """The CloudEvent a message carries (structured or binary mode), or ``Rejected``."""
    check_required_attributes(message)
    try:
        return rabbitmq.from_rabbitmq_event(
            rabbitmq.RabbitMQMessage(
                headers={k: str(v) for k, v in message.headers.items() if isinstance(k, str)},
                content_type=message.content_type,
                body=message.body,
            )
        )
    except Exception as exc:  # noqa: BLE001 - see below
        # The SDK parses untrusted bytes and is not strict about what it raises on bad
        # input (AttributeError for a JSON array, found by the fuzz suite); whatever it
        # raises, the message is not a CloudEvent it can read. Letting one escape would
        # requeue the message for ever.
        raise Rejected("cloudevent", "InvalidCloudEvent", f"not a valid CloudEvent: {exc}") from exc


def _payload(message: Message) -> tuple[dict[str, Any], Any]:
    """The request fields, and the CloudEvent they came in (or None)."""
    if not is_cloudevent(message):
        return _json_object(message.body, "body"), None
    event = read_cloudevent(message)
    data = event.get_data()
    if isinstance(data, Mapping):
        return dict(data), event
    if isinstance(data, (bytes, str)):
        return _json_object(data.encode() if isinstance(data, str) else data, "data"), event
    raise Rejected("data", "InvalidBody", "the CloudEvent carries no request data")


def _json_object(raw: bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise Rejected(where, "InvalidJson", f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise Rejected(where, "InvalidBody", f"must be a JSON object, got {type(value).__name__}")
    return value


def _required_str(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None or value == "":
        raise Rejected(name, "MissingField", f"{name} is required")
    if not isinstance(value, str):
        raise Rejected(name, "InvalidField", f"{name} must be a string, got {type(value).__name__}")
    if len(value) > MAX_FIELD_CHARS:
        raise Rejected(name, "InvalidField", f"{name} is longer than {MAX_FIELD_CHARS} characters")
    return value


def _bucket_url(data: Mapping[str, Any], name: str, required: bool, settings: Settings) -> str | None:
    if not required and data.get(name) in (None, ""):
        return None
    url = _required_str(data, name)
    try:
        check_bucket_host(parse_bucket_url(url), settings)
    except BucketHostNotAllowed as exc:
        raise Rejected(name, "BucketHostNotAllowed", str(exc)) from exc
    except InvalidBucketUrl as exc:
        raise Rejected(name, "InvalidBucketUrl", str(exc)) from exc
    return url


def _buckets(data: Mapping[str, Any], settings: Settings) -> tuple[str, str, bool]:
    """The input and output bucket URLs, from either form, and whether buckets were named.

    One form per request: mixing them would leave it unclear which endpoint is meant. A
    named bucket lives on the handler's endpoint, which the operator chose, so it needs
    no host check.
    """
    named = [name for name in ("inputBucket", "outputBucket") if data.get(name) not in (None, "")]
    urls = [name for name in ("inputBucketUrl", "outputBucketUrl") if data.get(name) not in (None, "")]
    if named and urls:
        raise Rejected(named[0], "ConflictingFields",
                       f"{named[0]} and {urls[0]} given together: name the buckets (inputBucket, outputBucket) "
                       "or give their URLs (inputBucketUrl, outputBucketUrl), not both")
    if not named:
        if data.get("inputBucketUrl") in (None, ""):
            raise Rejected("inputBucketUrl", "MissingField",
                           "inputBucketUrl is required (or inputBucket, naming a bucket on this handler's S3 endpoint)")
        input_url = _bucket_url(data, "inputBucketUrl", required=True, settings=settings)
        assert input_url is not None  # required: a value or Rejected
        output_url = _bucket_url(data, "outputBucketUrl", required=False, settings=settings) or input_url
        return input_url, output_url, False
    input_name = _bucket_name(data, "inputBucket", required=True)
    assert input_name is not None  # required: a value or Rejected
    output_name = _bucket_name(data, "outputBucket", required=False) or input_name
    endpoint = settings.s3_endpoint_url
    input_url, output_url = f"{endpoint}/{input_name}", f"{endpoint}/{output_name}"
    try:
        parse_bucket_url(input_url)
    except InvalidBucketUrl as exc:  # the handler's endpoint setting is wrong, not the request
        raise Rejected("inputBucket", "InvalidBucketUrl",
                       f"this handler's S3 endpoint {endpoint!r} cannot hold buckets: {exc}") from exc
    return input_url, output_url, True


def _bucket_name(data: Mapping[str, Any], name: str, required: bool) -> str | None:
    if not required and data.get(name) in (None, ""):
        return None
    value = _required_str(data, name)
    problem = bucket_name_problem(value)
    if problem:
        raise Rejected(name, "InvalidBucketName", f"{name} {value[:80]!r} is not a valid S3 bucket name: it {problem}")
    return value


def _prefix(data: Mapping[str, Any]) -> str | None:
    """The ``prefix`` of the request's files (``<prefix>-<file>``), or None."""
    value = data.get("prefix")
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Rejected("prefix", "InvalidPrefix", f"prefix must be a string, got {type(value).__name__}")
    value = str(value)  # the original's client sends digits; as a JSON number they mean the same
    if any(ord(ch) < 0x20 or 0x7f <= ord(ch) < 0xa0 for ch in value):
        raise Rejected("prefix", "InvalidPrefix", "prefix must not contain control characters")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate (JSON "\ud800"): no S3 key or env value can hold it
        raise Rejected("prefix", "InvalidPrefix", "prefix is not valid Unicode text") from exc
    if size > MAX_PREFIX_BYTES:
        raise Rejected("prefix", "InvalidPrefix", f"prefix is {size} bytes, over the limit of {MAX_PREFIX_BYTES}")
    return value


def _bucket_part(url: str) -> BucketUrl:
    """The parsed bucket URL, or an empty one for a URL read back from a damaged Job."""
    try:
        return parse_bucket_url(url)
    except InvalidBucketUrl:
        return BucketUrl("s3", None, True, "")


def _timeout(value: Any, settings: Settings, profile: Profile = BUILTIN) -> float:
    """timeOut in minutes: absent, null or 0 → the default (cut to the profile's bound);
    numbers or numeric strings, at most the profile's ``maxTimeoutMinutes``."""
    default, bound = profile.default_timeout(settings), profile.timeout_bound(settings)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise Rejected("timeOut", "InvalidTimeout", "timeOut must be a number of minutes")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError as exc:
            raise Rejected("timeOut", "InvalidTimeout", f"timeOut {value!r} is not a number of minutes") from exc
    if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise Rejected("timeOut", "InvalidTimeout", "timeOut must be a finite number of minutes")
    # Compared before any conversion to float: a 400-digit integer is too long, not an OverflowError.
    shown = f"{value:g}" if isinstance(value, float) else (str(value) if abs(value) < 10**12 else "a huge number")
    if value < 0:
        raise Rejected("timeOut", "InvalidTimeout", f"timeOut {shown} is negative")
    if value > bound:
        of = f" of profile {profile.name}" if profile.max_timeout_minutes is not None else ""
        raise Rejected("timeOut", "TimeoutTooLong", f"timeOut {shown} is over the maximum{of} of {bound:g} minutes")
    return float(value) or default


def _header(message: Message, name: str) -> Any:
    for key, value in message.headers.items():
        if isinstance(key, str) and key.lower() == name:
            return value
    return None


def _trace(event: Any, message: Message, name: str) -> str | None:
    """W3C trace context: the CloudEvents distributed-tracing extension, else the header.
    A ``traceparent`` not in the W3C format is dropped (as the spec says a tracer must),
    so nothing but hex digits and dashes reaches the Job's env from it."""
    value = event.get_extension(name) if event is not None else None
    value = value or _header(message, name)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    value = str(value)[:512] if value else None
    if name == "traceparent" and value is not None and not is_valid_traceparent(value):
        return None
    return value


_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


def is_valid_traceparent(value: str) -> bool:
    """``value`` is a W3C ``traceparent`` (https://www.w3.org/TR/trace-context/#traceparent-header):
    version 00 exactly, a later version followed by nothing or by ``-`` and printable ASCII."""
    match = _TRACEPARENT.match(value)
    if match is None or match[1] == "ff" or set(match[2]) == {"0"} or set(match[3]) == {"0"}:
        return False
    rest = value[match.end():]
    if match[1] == "00":
        return rest == ""
    return rest == "" or (rest[0] == "-" and all(0x20 < ord(ch) < 0x7f for ch in rest))


def _wants_progress(message: Message, data: Mapping[str, Any]) -> bool:
    header = _header(message, PROGRESS_HEADER)
    if isinstance(header, bytes):
        header = header.decode("ascii", "replace")
    return str(header).lower() == "true" or data.get("progressEvents") is True


# --- cancels (see README, "Cancel")
def is_cancel(message: Message) -> bool:
    """The message is a cancel event (cheap: the type must appear in the body or headers)."""
    if not is_cloudevent(message):
        return False
    for key, value in message.headers.items():
        if isinstance(key, str) and key.lower() == "ce-type":
            return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)) == CANCEL_TYPE
    if len(message.body) > MAX_CANCEL_BYTES or CANCEL_TYPE.encode() not in message.body:
        return False
    try:
        body = json.loads(message.body)
    except (ValueError, RecursionError):
        return False
    return isinstance(body, dict) and body.get("type") == CANCEL_TYPE


def parse_cancel(message: Message, settings: Settings) -> CancelRequest:
    """Validate a cancel event, or raise ``Rejected`` saying what is wrong."""
    check_headers(message)
    check_body_size(len(message.body), settings)
    event = read_cloudevent(message)
    data = event.get_data()
    if isinstance(data, (bytes, str)):
        data = _json_object(data.encode() if isinstance(data, str) else data, "data")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise Rejected("data", "InvalidBody", f"must be a JSON object, got {type(data).__name__}")
    request_id = _optional_str(data, "requestId")
    job_name = _optional_str(data, "jobName") or event.get_subject() or None
    if job_name is not None and not is_valid_job_name(job_name):
        raise Rejected("jobName", "InvalidJobName", f"{job_name[:80]!r} is not the name of a Job of this handler")
    if request_id is None and job_name is None:
        raise Rejected("requestId", "MissingField",
                       "a cancel names the request (data.requestId) or its Job (subject or data.jobName)")
    reason = (_optional_str(data, "reason") or DEFAULT_CANCEL_REASON)[:MAX_CANCEL_REASON_CHARS]
    return CancelRequest(request_id=request_id, job_name=job_name, reason=reason, event_id=event.get_id(),
                         event_source=event.get_source(), reply_to=message.reply_to or None,
                         correlation_id=message.correlation_id or None)


def _optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_FIELD_CHARS:
        raise Rejected(name, "InvalidField", f"{name} must be a string of at most {MAX_FIELD_CHARS} characters")
    return value
