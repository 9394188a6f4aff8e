import pytest

from handler.core.bucketurl import (
    BucketHostNotAllowed,
    BucketUrl,
    InvalidBucketUrl,
    check_bucket_host,
    parse_bucket_url,
)
from handler.core.config import Settings

GOOD = [
    ("http://localhost:9000/test-bucket", BucketUrl("http", "localhost:9000", False, "test-bucket", "")),
    ("http://localhost:9000/test-bucket/", BucketUrl("http", "localhost:9000", False, "test-bucket", "")),
    ("https://minio.example.org/data/run-1", BucketUrl("https", "minio.example.org", True, "data", "run-1/")),
    ("http://10.0.0.5:9000/data//a/b/", BucketUrl("http", "10.0.0.5:9000", False, "data", "a/b/")),
    ("http://[::1]:9000/data/x", BucketUrl("http", "[::1]:9000", False, "data", "x/")),
    ("HTTP://minio:9000/data", BucketUrl("http", "minio:9000", False, "data", "")),
    ("http://minio:9000/data/with%20space", BucketUrl("http", "minio:9000", False, "data", "with space/")),
    ("s3://my.bucket-1", BucketUrl("s3", None, True, "my.bucket-1", "")),
    ("s3://my-bucket/requests/42", BucketUrl("s3", None, True, "my-bucket", "requests/42/")),
    ("s3://abc/", BucketUrl("s3", None, True, "abc", "")),
]


@pytest.mark.parametrize(("url", "expected"), GOOD, ids=[url for url, _ in GOOD])
def test_good_bucket_urls_parse_into_their_parts(url, expected):
    assert parse_bucket_url(url) == expected


BAD = [
    ("", "empty"),
    ("   ", "empty"),
    ("ftp://host/bucket", "scheme 'ftp'"),
    ("localhost:9000/bucket", "scheme"),
    ("/just/a/path", "scheme '(none)'"),
    ("http://user:pass@host:9000/bucket", "embeds credentials"),
    ("http://user@host:9000/bucket", "embeds credentials"),
    ("s3://key:secret@bucket/x", "embeds credentials"),
    ("http://host:9000", "names no bucket"),
    ("http://host:9000/", "names no bucket"),
    ("s3://", "names no bucket"),
    ("http:///bucket", "no host"),
    ("http://host:notaport/bucket", "malformed"),
    ("http://host:99999/bucket", "malformed"),
    ("s3://bucket:9000/x", "not a host:port"),
    ("http://host/bucket?X-Amz-Signature=abc", "query string"),
    ("http://host/bucket#frag", "fragment"),
    ("http://host/bucket?", "query string"),
    ("http://host/Bucket", "lowercase"),
    ("http://host/ab", "3 to 63"),
    ("http://host/" + "a" * 64, "3 to 63"),
    ("http://host/under_score", "lowercase"),
    ("http://host/-dash", "start and end"),
    ("http://host/dash-", "start and end"),
    ("http://host/a..b", "'..'"),
    ("http://host/a.-b", "'.-'"),
    ("http://host/192.168.1.1", "IP address"),
    ("http://host/xn--bucket", "reserves"),
    ("http://host/bucket-s3alias", "reserves"),
    ("http://host/bucket/../other", "'..' path segments"),
    ("http://host/bucket/a/%2e%2e/b", "'..' path segments"),
    ("http://host/bucket/./a", "'..' path segments"),
    ("s3://bucket/..", "'..' path segments"),
    ("http://host/bucket/a b", "whitespace"),
    ("http://host/bucket/a%00b", "control characters"),
]


@pytest.mark.parametrize(("url", "message"), BAD, ids=[url or "empty" for url, _ in BAD])
def test_bad_bucket_urls_are_rejected_saying_what_is_wrong(url, message):
    with pytest.raises(InvalidBucketUrl) as caught:
        parse_bucket_url(url)
    assert message in str(caught.value)


def test_invalid_bucket_url_is_a_value_error():
    assert issubclass(InvalidBucketUrl, ValueError)


def test_rejection_messages_never_repeat_embedded_credentials():
    with pytest.raises(InvalidBucketUrl) as caught:
        parse_bucket_url("http://minioadmin:s3cr3t@host:9000/bucket")
    assert "s3cr3t" not in str(caught.value)
    assert "minioadmin" not in str(caught.value)
    assert "***@host:9000" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["http://localhost:9000/test-bucket/", "https://minio:9000/data/a/b/", "s3://my-bucket/x/", "s3://my-bucket/"],
)
def test_a_parsed_url_prints_as_a_url_that_parses_back_to_the_same(url):
    parsed = parse_bucket_url(url)
    assert str(parsed) == url
    assert parse_bucket_url(str(parsed)) == parsed


def test_keys_are_joined_under_the_prefix():
    url = parse_bucket_url("http://h:9000/data/run-1")
    assert url.key("result.txt") == "run-1/result.txt"
    assert url.key("/sub//dir/x.bin") == "run-1/sub/dir/x.bin"


def test_keys_with_dot_segments_are_refused():
    with pytest.raises(InvalidBucketUrl, match=r"'\.\.'"):
        parse_bucket_url("http://h:9000/data").key("../escape")


def test_a_child_url_extends_the_prefix():
    url = parse_bucket_url("s3://data/requests")
    assert url.child("abc/") == BucketUrl("s3", None, True, "data", "requests/abc/")
    assert url.child("") == url


# --- bucket hosts: never link-local or a metadata service; only the allowed ones when set

FORBIDDEN_HOSTS = [
    "http://169.254.169.254/bucket",
    "http://169.254.169.254:80/bucket/latest",
    "https://169.254.170.2/bucket",
    "http://2852039166/bucket",  # 169.254.169.254 as one decimal number
    "http://0xa9fea9fe/bucket",  # ... in hex
    "http://0xA9.0xFE.0xA9.0xFE/bucket",
    "http://0251.0376.0251.0376/bucket",  # ... in octal
    "http://169.254.43518/bucket",  # ... with the last part filling two bytes
    "http://169.254.169.254./bucket",
    "http://[::ffff:169.254.169.254]/bucket",  # IPv4-mapped IPv6
    "http://[::ffff:a9fe:a9fe]/bucket",
    "http://[64:ff9b::a9fe:a9fe]/bucket",  # NAT64
    "http://[fe80::1]:9000/bucket",
    "http://[FE80::abcd%25eth0]/bucket",
    "http://[fd00:ec2::254]/bucket",  # AWS IMDS over IPv6
    "http://100.100.100.200/bucket",  # Alibaba Cloud
    "http://metadata.google.internal/bucket",
    "http://METADATA.Google.Internal./bucket",
    "http://metadata/bucket",
    "http://\uff11\uff16\uff19\u3002\uff12\uff15\uff14\u3002\uff11\uff16\uff19\u3002\uff12\uff15\uff14/bucket",  # full width
]


@pytest.mark.parametrize("url", FORBIDDEN_HOSTS)
def test_link_local_and_metadata_hosts_are_refused_in_any_notation(url):
    with pytest.raises(BucketHostNotAllowed, match="cloud metadata"):
        check_bucket_host(parse_bucket_url(url), Settings())


@pytest.mark.parametrize("url", ["http://minio:9000/bucket", "http://10.0.0.5/bucket", "http://[::1]:9000/bucket",
                                 "https://s3.example.com/bucket", "http://169.255.0.1/bucket", "s3://bucket/x"])
def test_any_other_host_passes_when_no_bucket_hosts_are_configured(url):
    check_bucket_host(parse_bucket_url(url), Settings())


ALLOWED = Settings(allowed_bucket_hosts=("MinIO:9000", "s3.example.com", "[::1]:9000"))


@pytest.mark.parametrize("url", ["http://minio:9000/bucket", "HTTP://MINIO:9000/bucket", "https://s3.example.com/b-1",
                                 "http://[::1]:9000/bucket", "s3://bucket"])
def test_an_allowed_bucket_host_matches_exactly_and_case_insensitively(url):
    check_bucket_host(parse_bucket_url(url), ALLOWED)


@pytest.mark.parametrize("url", ["http://minio:9001/bucket", "http://minio/bucket", "http://minio.evil.io:9000/bucket",
                                 "https://s3.example.com:443/bucket", "http://evil.io/bucket",
                                 "http://[::1]/bucket"])
def test_a_host_not_in_the_allowed_bucket_hosts_is_refused(url):
    with pytest.raises(BucketHostNotAllowed, match="CLOUD_WORKER_ALLOWED_BUCKET_HOSTS"):
        check_bucket_host(parse_bucket_url(url), ALLOWED)


@pytest.mark.parametrize("endpoint", ["http://minio:9000", "minio:9000", "MINIO:9000"])
def test_an_endpoint_is_checked_like_the_host_of_a_url(endpoint):
    check_bucket_host(endpoint, ALLOWED)
    with pytest.raises(BucketHostNotAllowed):
        check_bucket_host(endpoint.replace("9000", "9001"), ALLOWED)
    with pytest.raises(BucketHostNotAllowed):
        check_bucket_host(endpoint.lower().replace("minio", "169.254.169.254"), Settings())


def test_a_refused_host_is_an_invalid_bucket_url():
    assert issubclass(BucketHostNotAllowed, InvalidBucketUrl)
