"""Bucket URLs: the one way a request names where a Job's inputs and outputs live.

Two forms are accepted, both naming a bucket and an optional key prefix inside it:

- ``http(s)://host[:port]/bucket[/prefix/...]``: path style, as MinIO serves it.
- ``s3://bucket[/prefix/...]``: the endpoint comes from the environment of whoever
  opens the bucket (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, default AWS).

Parsing is pure and imports no S3 library, so the handler core can reject a bad
request without loading one. Credentials never travel in URLs (they would end up in
queues, Job annotations and logs); a URL carrying them is refused, and no error
message ever repeats them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

SCHEMES = ("http", "https", "s3")

# S3 bucket naming rules (general purpose buckets):
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
_BUCKET_CHARS = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


# A ValueError on purpose: parsing is pure and callers (``request``, the client) turn it
# into their own error (``Rejected`` names the field), so it needs no place in that tree.
class InvalidBucketUrl(ValueError):
    """A bucket URL that cannot name a bucket. The message says what is wrong."""


@dataclass(frozen=True)
class BucketUrl:
    """A parsed bucket URL.

    ``endpoint`` is ``host[:port]`` for http(s) URLs and ``None`` for ``s3://`` ones.
    ``secure`` is meaningful only when ``endpoint`` is set. ``prefix`` is normalised:
    no leading slash, a trailing slash when non-empty, no empty or dot segments.
    """

    scheme: str
    endpoint: str | None
    secure: bool
    bucket: str
    prefix: str = ""

    def key(self, relative: str) -> str:
        """The object key for ``relative`` (a ``/``-separated path) under the prefix."""
        return self.prefix + _normalise_path(relative, what="key").rstrip("/")

    def child(self, relative: str) -> BucketUrl:
        """The same bucket with ``relative`` appended to the prefix."""
        return BucketUrl(self.scheme, self.endpoint, self.secure, self.bucket, self.prefix + _normalise_path(relative))

    def __str__(self) -> str:
        where = f"{self.scheme}://{self.endpoint}/{self.bucket}" if self.endpoint else f"s3://{self.bucket}"
        return f"{where}/{quote(self.prefix)}"


def parse_bucket_url(url: str) -> BucketUrl:
    """Parse ``url`` or raise ``InvalidBucketUrl`` saying what is wrong with it."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidBucketUrl("bucket URL is empty")
    if any(ch.isspace() or ord(ch) < 0x20 for ch in url):
        raise InvalidBucketUrl("bucket URL must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError as exc:
        raise InvalidBucketUrl(f"bucket URL {_redact(url)!r} is malformed: {exc}") from exc
    shown = _redact(url)
    if parts.scheme not in SCHEMES:
        raise InvalidBucketUrl(
            f"bucket URL {shown!r} has scheme {parts.scheme or '(none)'!r}; expected one of "
            "http://host[:port]/bucket[/prefix], https://... or s3://bucket[/prefix]"
        )
    if "@" in parts.netloc:
        raise InvalidBucketUrl(
            f"bucket URL {shown!r} embeds credentials; credentials never travel in messages, "
            "give them to the Job through its environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise InvalidBucketUrl(f"bucket URL {shown!r} must not have a query string or fragment")
    if parts.scheme == "s3":
        if port is not None:
            raise InvalidBucketUrl(f"bucket URL {shown!r}: s3:// URLs name a bucket, not a host:port")
        bucket, path = unquote(parts.netloc), parts.path
        endpoint, secure = None, True
    else:
        if not parts.hostname:
            raise InvalidBucketUrl(f"bucket URL {shown!r} has no host")
        bucket, _, path = parts.path.lstrip("/").partition("/")
        bucket = unquote(bucket)
        endpoint, secure = parts.netloc, parts.scheme == "https"
    if not bucket:
        raise InvalidBucketUrl(f"bucket URL {shown!r} names no bucket")
    _check_bucket_name(bucket, shown)
    try:
        prefix = _normalise_path(unquote(path))
    except InvalidBucketUrl as exc:
        raise InvalidBucketUrl(f"bucket URL {shown!r}: {exc}") from exc
    return BucketUrl(parts.scheme, endpoint, secure, bucket, prefix)


def _check_bucket_name(name: str, shown: str) -> None:
    problem = None
    if not 3 <= len(name) <= 63:
        problem = "must be 3 to 63 characters long"
    elif not _BUCKET_CHARS.fullmatch(name):
        problem = "may hold only lowercase letters, digits, '.' and '-', and must start and end with a letter or digit"
    elif ".." in name or ".-" in name or "-." in name:
        problem = "must not have '..', '.-' or '-.'"
    elif _is_ip_address(name):
        problem = "must not be formatted as an IP address"
    elif name.startswith(_RESERVED_BUCKET_PREFIXES) or name.endswith(_RESERVED_BUCKET_SUFFIXES):
        problem = "uses a prefix or suffix S3 reserves"
    if problem:
        raise InvalidBucketUrl(f"bucket URL {shown!r}: bucket name {name!r} {problem} (S3 bucket naming rules)")


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def _normalise_path(path: str, what: str = "prefix") -> str:
    """``a//b/`` → ``a/b/``; refuse ``.`` and ``..`` segments and control characters."""
    segments = [segment for segment in path.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        raise InvalidBucketUrl(f"{what} must not have '.' or '..' path segments")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in path):
        raise InvalidBucketUrl(f"{what} must not contain control characters")
    return "".join(f"{segment}/" for segment in segments)


def _redact(url: str) -> str:
    """``url`` with any ``user:password@`` replaced, safe to put in an error message."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{tail}"
