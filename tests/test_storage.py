import io
import socket
import uuid

import pytest

from handler.adapters.storage import (
    NoSuchBucket,
    S3Credentials,
    StorageConfigError,
    StorageUnavailable,
    UnsafeKey,
    open_bucket,
)
from handler.core.bucketurl import parse_bucket_url
from handler.core.config import Settings


def _bucket(s3_endpoint, url):
    return open_bucket(parse_bucket_url(url), S3Credentials.from_env(s3_endpoint.env))


def _put(s3_endpoint, url, key, body=b"x"):
    s3_endpoint.client.put_object(
        bucket_name=parse_bucket_url(url).bucket, object_name=key, data=io.BytesIO(body), length=len(body)
    )


# --- credentials


def test_credentials_come_from_the_standard_aws_variables():
    creds = S3Credentials.from_env(
        {
            "AWS_ACCESS_KEY_ID": "id",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_SESSION_TOKEN": "token",
            "AWS_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL": "https://s3.example.org",
        }
    )
    assert (creds.access_key, creds.secret_key, creds.session_token) == ("id", "secret", "token")
    assert (creds.region, creds.endpoint_url) == ("eu-west-1", "https://s3.example.org")


def test_minio_variable_names_are_accepted_and_the_s3_endpoint_wins_over_the_generic_one():
    creds = S3Credentials.from_env(
        {
            "MINIO_ACCESS_KEY": "id",
            "MINIO_SECRET_KEY": "secret",
            "AWS_ENDPOINT_URL": "https://generic",
            "AWS_ENDPOINT_URL_S3": "http://minio:9000",
        }
    )
    assert (creds.access_key, creds.secret_key, creds.endpoint_url) == ("id", "secret", "http://minio:9000")


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({}, ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]),
        ({"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": ""}, ["AWS_SECRET_ACCESS_KEY", "MINIO_SECRET_KEY"]),
        ({"MINIO_SECRET_KEY": "secret"}, ["AWS_ACCESS_KEY_ID", "MINIO_ACCESS_KEY"]),
    ],
)
def test_missing_credentials_name_the_variables_to_set(environ, named):
    with pytest.raises(StorageConfigError, match="credentials missing") as caught:
        S3Credentials.from_env(environ)
    for variable in named:
        assert variable in str(caught.value)


def test_secrets_stay_out_of_the_credentials_repr():
    creds = S3Credentials.from_env(
        {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "hunter2", "AWS_SESSION_TOKEN": "tok3n"}
    )
    assert "hunter2" not in repr(creds)
    assert "tok3n" not in repr(creds)


@pytest.mark.parametrize("endpoint", ["minio:9000", "ftp://minio", "http://minio:9000/path", "http://u:p@minio"])
def test_an_endpoint_setting_that_is_not_a_bare_http_url_is_a_configuration_error(endpoint):
    with pytest.raises(StorageConfigError, match="AWS_ENDPOINT_URL"):
        S3Credentials.from_env({"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": endpoint})


# --- the bucket adapter against moto's server


def test_ensure_bucket_creates_a_missing_bucket_and_accepts_an_existing_one(s3_endpoint, s3_bucket):
    name = parse_bucket_url(s3_bucket()).bucket + "-new"
    bucket = _bucket(s3_endpoint, s3_endpoint.bucket_url(name))
    try:
        bucket.ensure_bucket()
        bucket.ensure_bucket()
        assert s3_endpoint.client.bucket_exists(bucket_name=name)
    finally:
        s3_endpoint.client.remove_bucket(bucket_name=name)


def test_an_uploaded_directory_keeps_its_relative_paths_under_the_prefix(s3_endpoint, s3_bucket, tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub" / "deeper" / "b.json").write_text("{}")
    bucket = _bucket(s3_endpoint, s3_bucket("run-1"))

    keys = bucket.upload_dir(tmp_path, under_prefix="out")

    assert keys == ["run-1/out/a.txt", "run-1/out/sub/deeper/b.json"]
    assert bucket.list_keys() == keys
    stat = s3_endpoint.client.stat_object(bucket_name=bucket.url.bucket, object_name="run-1/out/sub/deeper/b.json")
    assert stat.content_type == "application/json"


def test_upload_dir_skips_symbolic_links(s3_endpoint, s3_bucket, tmp_path):
    secret = tmp_path / "elsewhere.txt"
    secret.write_text("not yours")
    out = tmp_path / "out"
    out.mkdir()
    (out / "real.txt").write_text("r")
    (out / "link.txt").symlink_to(secret)

    assert _bucket(s3_endpoint, s3_bucket()).upload_dir(out) == ["real.txt"]


def test_upload_file_names_the_object_after_the_file_by_default(s3_endpoint, s3_bucket, tmp_path):
    path = tmp_path / "report.csv"
    path.write_text("x,y\n")
    bucket = _bucket(s3_endpoint, s3_bucket("p"))
    assert bucket.upload_file(path) == "p/report.csv"
    assert bucket.upload_file(path, "renamed/r.csv") == "p/renamed/r.csv"


def test_upload_file_refuses_a_key_with_dot_segments(s3_endpoint, s3_bucket, tmp_path):
    path = tmp_path / "x"
    path.write_text("x")
    with pytest.raises(UnsafeKey):
        _bucket(s3_endpoint, s3_bucket()).upload_file(path, "../x")


def test_download_all_fetches_every_object_under_the_prefix_and_nothing_else(s3_endpoint, s3_bucket, tmp_path):
    url = s3_bucket("in")
    _put(s3_endpoint, url, "in/one.txt", b"1")
    _put(s3_endpoint, url, "in/nested/two.txt", b"22")
    _put(s3_endpoint, url, "in/folder-marker/", b"")
    _put(s3_endpoint, url, "other/three.txt", b"333")
    _put(s3_endpoint, url, "inside-not.txt", b"4")

    paths = _bucket(s3_endpoint, url).download_all(tmp_path / "dl")

    assert sorted(p.relative_to(tmp_path / "dl").as_posix() for p in paths) == ["nested/two.txt", "one.txt"]
    assert (tmp_path / "dl" / "nested" / "two.txt").read_bytes() == b"22"


def test_an_s3_scheme_url_uses_the_endpoint_from_the_environment(s3_endpoint, s3_bucket, tmp_path):
    http_url = s3_bucket()
    _put(s3_endpoint, http_url, "k.txt", b"k")
    name = parse_bucket_url(http_url).bucket

    paths = _bucket(s3_endpoint, f"s3://{name}").download_all(tmp_path)

    assert [p.read_bytes() for p in paths] == [b"k"]


@pytest.mark.parametrize("key", ["in/../escape.txt", "in/../../escape.txt", "in/./x/../../escape.txt", "in//etc/x"])
def test_download_refuses_keys_that_would_escape_the_local_directory(s3_endpoint, s3_bucket, tmp_path, key):
    url = s3_bucket("in")
    bucket_name = parse_bucket_url(url).bucket
    s3_endpoint.put_raw_object(bucket_name, "in/harmless.txt")
    s3_endpoint.put_raw_object(bucket_name, key)

    with pytest.raises(UnsafeKey, match="refusing to download"):
        _bucket(s3_endpoint, url).download_all(tmp_path / "dl")

    assert list((tmp_path / "dl").iterdir()) == []  # checked before anything was written
    assert not (tmp_path / "escape.txt").exists()


def test_download_refuses_to_follow_a_symlink_out_of_the_local_directory(s3_endpoint, s3_bucket, tmp_path):
    url = s3_bucket()
    _put(s3_endpoint, url, "linked/x.txt")
    (tmp_path / "dl").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "dl" / "linked").symlink_to(tmp_path / "outside")

    with pytest.raises(UnsafeKey, match="outside"):
        _bucket(s3_endpoint, url).download_all(tmp_path / "dl")
    assert list((tmp_path / "outside").iterdir()) == []


def test_a_missing_bucket_is_reported_as_no_such_bucket(s3_endpoint, tmp_path):
    with pytest.raises(NoSuchBucket, match="no-such-bucket-here"):
        _bucket(s3_endpoint, s3_endpoint.bucket_url("no-such-bucket-here")).download_all(tmp_path)


def test_an_unreachable_endpoint_is_reported_as_unavailable_with_its_cause(s3_endpoint, monkeypatch):
    monkeypatch.setattr("handler.adapters.storage.RETRIES", 0)
    with socket.socket() as sock:  # a port nobody listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bucket = _bucket(s3_endpoint, f"http://127.0.0.1:{port}/bucket")

    with pytest.raises(StorageUnavailable, match="unreachable") as caught:
        bucket.list_keys()
    assert caught.value.__cause__ is not None


# --- the handler's own credentials, and small objects (the Job's log)


def test_the_handler_uses_aws_keys_over_minio_root_ones_and_has_none_for_urls_without_either():
    both = Settings.from_env({"AWS_ACCESS_KEY_ID": "aws", "AWS_SECRET_ACCESS_KEY": "aws-secret",
                              "MINIO_ROOT_USER": "root", "MINIO_ROOT_PASSWORD": "root-secret",
                              "AWS_ENDPOINT_URL_S3": "http://s3.example:9000"})
    creds = S3Credentials.for_handler(both, named_buckets=False)
    assert (creds.access_key, creds.secret_key, creds.endpoint_url) == ("aws", "aws-secret", "http://s3.example:9000")
    minio = Settings.from_env({"MINIO_ROOT_USER": "root", "MINIO_ROOT_PASSWORD": "root-secret"})
    assert S3Credentials.for_handler(minio, named_buckets=False).access_key == "root"
    assert S3Credentials.for_handler(Settings.from_env({}), named_buckets=False) is None
    default = S3Credentials.for_handler(Settings.from_env({}), named_buckets=True)
    assert (default.access_key, default.secret_key) == ("minioadmin", "minioadmin")  # the original's default


def test_put_bytes_creates_a_missing_bucket_and_writes_the_exact_key(s3_endpoint):
    name = f"test-put-{uuid.uuid4().hex[:12]}"  # made by put_bytes itself, removed below
    bucket = _bucket(s3_endpoint, s3_endpoint.bucket_url(name))
    try:
        key = bucket.put_bytes("17-job a/b.log", b"hello\n", "text/plain; charset=utf-8")
        assert key == "17-job a/b.log"
        assert bucket.read_bytes(key) == b"hello\n"
        assert bucket.put_bytes(key, b"again") == key and bucket.read_bytes(key) == b"again"
    finally:
        for obj in s3_endpoint.client.list_objects(bucket_name=name, recursive=True):
            s3_endpoint.client.remove_object(bucket_name=name, object_name=obj.object_name)
        s3_endpoint.client.remove_bucket(bucket_name=name)


@pytest.mark.parametrize("key", ["", "/abs.log", "a\nb.log"])
def test_put_bytes_refuses_keys_it_cannot_write_as_named(s3_endpoint, s3_bucket, key):
    with pytest.raises(UnsafeKey):
        _bucket(s3_endpoint, s3_bucket()).put_bytes(key, b"x")


def test_a_name_prefix_picks_and_strips_the_requests_inputs(s3_endpoint, s3_bucket, tmp_path):
    url = s3_bucket()
    for key in ("17-a.txt", "17-sub/b.txt", "170-c.txt", "17-"):
        _put(s3_endpoint, url, key)
    paths = _bucket(s3_endpoint, url).download_all(tmp_path, name_prefix="17-")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == ["a.txt", "sub/b.txt"]
