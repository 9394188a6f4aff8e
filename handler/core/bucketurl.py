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

import functools
import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from handler.core.config import Settings

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
    """Parse ``url`` or raise ``InvalidBucketUrl`` saying what is wrong with it.

    Remembered (the result is immutable): a request's URLs are parsed when it is read, when
    its Job is built and when its reply is, five times in all, each ~40 µs, three of them
    on the path from the delivery to the Job's creation. A URL refused is parsed again."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidBucketUrl("bucket URL is empty")
    return _parse_bucket_url(url)


@functools.lru_cache(maxsize=256)
def _parse_bucket_url(url: str) -> BucketUrl:
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


class BucketHostNotAllowed(InvalidBucketUrl):
    """A bucket host a Job must never be sent to: link-local or a cloud metadata
    service (always), or not in ``CLOUD_WORKER_ALLOWED_BUCKET_HOSTS`` when that is set."""


#: Cloud metadata services by name: a Job pod asked to fetch from one would hand its
#: node's or its service account's credentials to whoever reads the Job's log tail.
METADATA_HOSTS = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal",
    "metadata.azure.com", "metadata.tencentyun.com", "metadata.platformequinix.com",
})
#: ... and by address, besides all of link-local (169.254.0.0/16 and fe80::/10, where
#: AWS, GCP, Azure, OCI and OpenStack serve theirs at 169.254.169.254).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "fd00:ec2::254", "fd00:ec2::23", "100.100.100.200", "192.0.0.192",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IDNA_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def check_bucket_host(url_or_endpoint: str | BucketUrl, settings: Settings) -> None:
    """Refuse a bucket host a Job must not be sent to, or raise nothing.

    ``url_or_endpoint`` is a bucket URL (parsed or not), an endpoint URL
    (``http://minio:9000``) or ``host[:port]``. ``s3://`` URLs pass: their endpoint is
    the operator's (the Job's environment), not the request's. The check is on the
    literal host, with no DNS look-up (that would be I/O, and the answer could change
    before the pod asks): link-local and metadata addresses in any notation a URL
    parser or ``inet_aton`` accepts (``2852039166``, ``0xa9.0xfe.0xa9.0xfe``,
    ``[::ffff:169.254.169.254]``, ...) and metadata names are always refused; with
    ``settings.allowed_bucket_hosts`` set (``CLOUD_WORKER_ALLOWED_BUCKET_HOSTS``:
    ``host[:port]`` entries, an exact, case-insensitive match) every other host is too.
    Raises ``BucketHostNotAllowed``; a caller that has a field names it in its rejection.
    """
    allowed = settings.allowed_bucket_hosts
    if isinstance(url_or_endpoint, BucketUrl):
        if url_or_endpoint.endpoint is None:
            return
        endpoint = url_or_endpoint.endpoint
    elif "://" in url_or_endpoint:
        parts = urlsplit(url_or_endpoint)
        if parts.scheme.lower() == "s3":
            return
        endpoint = parts.netloc.rpartition("@")[2]
    else:
        endpoint = url_or_endpoint
    host, port = split_host_port(endpoint)
    shown = endpoint[:100]
    if host in METADATA_HOSTS:
        raise BucketHostNotAllowed(f"bucket host {shown!r} is a cloud metadata service; Jobs never fetch from one")
    for address in _addresses(host):
        if address.is_link_local or address in METADATA_ADDRESSES:
            raise BucketHostNotAllowed(
                f"bucket host {shown!r} is a link-local or cloud metadata address ({address}); Jobs never fetch "
                "from one")
    if allowed and not _in_allowed_hosts(host, port, settings):
        raise BucketHostNotAllowed(
            f"bucket host {shown!r} is not one of this handler's bucket hosts (CLOUD_WORKER_ALLOWED_BUCKET_HOSTS)")


def split_host_port(endpoint: str) -> tuple[str, int | None]:
    """``Host:9000`` → ``("host", 9000)``; ``[::1]`` → ``("::1", None)``: lower case,
    no trailing dot, percent-decoded (a URL's ``%25`` in an IPv6 zone), and with
    Unicode folded as IDNA folds it before a look-up (full-width digits, ideographic dots)."""
    endpoint = unicodedata.normalize("NFKC", unquote(endpoint)).translate(_IDNA_DOTS).strip().lower()
    if endpoint.startswith("["):
        host, _, rest = endpoint[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif endpoint.count(":") == 1:
        host, _, port_text = endpoint.partition(":")
    else:
        host, port_text = endpoint, ""
    try:
        port = int(port_text) if port_text else None
    except ValueError:
        port = -1  # matches no allowed entry
    return host.rstrip("."), port


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address ``host`` denotes as a literal, as each parser that might read it would."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    try:
        found.append(ipaddress.ip_address(host))
    except ValueError:
        pass
    legacy = _legacy_ipv4(host)
    if legacy is not None:
        found.append(legacy)
    for address in list(found):
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                found.append(address.ipv4_mapped)
            if address in _NAT64 or int(address) >> 32 == 0:  # NAT64, or the old IPv4-compatible form
                found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address of ``host`` read as ``inet_aton`` and the WHATWG URL parser read
    it (1 to 4 parts, each decimal, ``0x`` hex or ``0`` octal; the last fills the rest),
    or None when it is not one."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        try:
            if part[:2] in ("0x", "0X"):
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part, 8))
            else:
                numbers.append(int(part, 10) if part.isascii() and part.isdigit() else -1)
        except ValueError:
            return None
    if any(n < 0 for n in numbers) or any(n > 255 for n in numbers[:-1]):
        return None
    if numbers[-1] >= 256 ** (5 - len(numbers)):
        return None
    value = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _check_bucket_name(name: str, shown: str) -> None:
    problem = bucket_name_problem(name)
    if problem:
        raise InvalidBucketUrl(f"bucket URL {shown!r}: bucket name {name!r} {problem} (S3 bucket naming rules)")


def bucket_name_problem(name: str) -> str | None:
    """What breaks the S3 bucket naming rules in ``name`` (e.g. "must be 3 to 63
    characters long"), or None for a valid name."""
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
    return problem


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


def trusted_with_keys(url: BucketUrl, settings: Settings) -> bool:
    """The handler may sign requests to ``url``'s endpoint with its own bucket keys: it is
    the handler's own S3 endpoint (``Settings.s3_endpoint_url``), or an entry of
    ``CLOUD_WORKER_ALLOWED_BUCKET_HOSTS``. ``s3://`` URLs go to the operator's endpoint.
    Any other host a request names gets no signature of the handler's keys."""
    if url.endpoint is None:
        return True
    own = urlsplit(settings.s3_endpoint_url)
    default = 443 if url.secure else 80
    host, port = split_host_port(url.endpoint)
    own_host, own_port = split_host_port(own.netloc.rpartition("@")[2])
    own_default = 443 if own.scheme.lower() == "https" else 80
    if (host, port or default) == (own_host, own_port or own_default):
        return True
    return _in_allowed_hosts(host, port, settings)


def _in_allowed_hosts(host: str, port: int | None, settings: Settings) -> bool:
    """``host[:port]`` is an entry of ``CLOUD_WORKER_ALLOWED_BUCKET_HOSTS`` (exact, case-insensitive)."""
    return (host, port) in {split_host_port(entry) for entry in settings.allowed_bucket_hosts}
