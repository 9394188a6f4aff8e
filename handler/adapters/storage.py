"""S3 adapter: the only module that imports an S3 library.

It speaks to any S3-compatible endpoint (MinIO, AWS, moto's server in tests) through
the ``minio`` SDK, which is much lighter to import than boto3 and does path-style
requests to a ``host:port`` out of the box. Everything above it deals in
``BucketUrl`` (see ``handler.core.bucketurl``), ``S3Credentials`` and ``Bucket``; minio and
urllib3 errors never leave this module untranslated.

Credentials come from the standard environment variables (MinIO's names as fallbacks),
read from a mapping the caller passes in (``S3Credentials.from_env(os.environ)`` is
called at the CLI edge), or, for the handler itself, from its ``Settings``
(``S3Credentials.for_handler``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import mimetypes
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from handler.core.bucketurl import BucketUrl, InvalidBucketUrl
from handler.core.config import Settings
from handler.core.errors import (
    NoSuchBucket,
    StorageAccessDenied,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
    UnsafeKey,
)

log = logging.getLogger(__name__)

#: Endpoint for ``s3://`` URLs when no AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL is set.
AWS_ENDPOINT = "s3.amazonaws.com"
#: Seconds to wait for a TCP connect. A reachable endpoint answers in milliseconds;
#: 10 s still covers a cold DNS lookup or a pod network that is coming up.
CONNECT_TIMEOUT_SECONDS = 10.0
#: Seconds to wait between bytes of a response (not for a whole transfer), generous
#: enough for a busy MinIO yet short of hanging a Job until its deadline.
READ_TIMEOUT_SECONDS = 120.0
#: Retries after the first attempt on connection errors and 5xx. Three (backoff sleeps of
#: 0, 0.4 and 0.8 s) ride out a restarting endpoint without stretching a dead one into minutes.
RETRIES = 3

_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
_BUSY = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed"}


@dataclass(frozen=True)
class S3Credentials:
    """Static credentials plus the endpoint and region settings that go with them."""

    access_key: str
    secret_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str | None = None
    #: Endpoint for ``s3://`` URLs (http(s)://host[:port]); None: AWS.
    endpoint_url: str | None = None
    #: CA bundle for https endpoints; None: certifi's.
    ca_bundle: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> S3Credentials:
        """Read the standard AWS variables (MinIO's legacy names as a fallback)."""

        def first(*names: str) -> str | None:
            return next((environ[name] for name in names if environ.get(name)), None)

        access_key = first("AWS_ACCESS_KEY_ID", "MINIO_ACCESS_KEY", "MINIO_ROOT_USER")
        secret_key = first("AWS_SECRET_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_ROOT_PASSWORD")
        if access_key is None or secret_key is None:
            missing = [
                label
                for label, value in (
                    ("AWS_ACCESS_KEY_ID (or MINIO_ACCESS_KEY, MINIO_ROOT_USER)", access_key),
                    ("AWS_SECRET_ACCESS_KEY (or MINIO_SECRET_KEY, MINIO_ROOT_PASSWORD)", secret_key),
                )
                if value is None
            ]
            raise StorageConfigError(f"S3 credentials missing: set {' and '.join(missing)} in the environment")
        endpoint_url = first("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        if endpoint_url is not None:
            _endpoint_from_url(endpoint_url)  # fail now, not at the first request
        return cls(
            access_key=access_key,
            secret_key=secret_key,
            session_token=first("AWS_SESSION_TOKEN"),
            region=first("AWS_REGION", "AWS_DEFAULT_REGION"),
            endpoint_url=endpoint_url,
            ca_bundle=first("AWS_CA_BUNDLE", "SSL_CERT_FILE"),
        )


    @classmethod
    def for_handler(cls, settings: Settings, named_buckets: bool) -> S3Credentials | None:
        """The handler's own bucket credentials (``Settings.s3_keys``: AWS_* win over
        MINIO_ROOT_*), with AWS_ENDPOINT_URL_S3 for ``s3://`` URLs; None when it has none."""
        keys = settings.s3_keys(named_buckets)
        if keys is None:
            return None
        return cls(access_key=keys[0], secret_key=keys[1],
                   endpoint_url=settings.aws_endpoint_url_s3 or settings.aws_endpoint_url or None)


def open_bucket(url: BucketUrl, creds: S3Credentials, timeout: float | None = None) -> Bucket:
    """A ``Bucket`` for ``url``. No request is made until the first operation. With
    ``timeout`` (seconds), every request must be done within it, and a request that timed
    out reading is not tried again (a slow endpoint stays slow; the handler's own uploads
    have a deadline, not a job's transfers)."""
    if url.endpoint is not None:
        endpoint, secure = url.endpoint, url.secure
    elif creds.endpoint_url is not None:
        endpoint, secure = _endpoint_from_url(creds.endpoint_url)
    else:
        endpoint, secure = AWS_ENDPOINT, True
    if timeout is None:
        limits = urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS)
    else:
        limits = urllib3.Timeout(connect=min(CONNECT_TIMEOUT_SECONDS, timeout), read=timeout, total=timeout)
    http = urllib3.PoolManager(
        timeout=limits,
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=creds.ca_bundle or certifi.where(),
        # No redirects: a bucket host's 3xx must not send a signed request, with its body, elsewhere.
        retries=urllib3.Retry(total=RETRIES, redirect=False, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504],
                              read=0 if timeout is not None else None),
    )
    try:
        client = Minio(
            endpoint,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            session_token=creds.session_token,
            secure=secure,
            region=creds.region,
            http_client=http,
        )
    except ValueError as exc:
        raise StorageConfigError(f"cannot use S3 endpoint {endpoint!r}: {exc}") from exc
    return Bucket(client, url, endpoint, limits)


class Bucket:
    """One bucket and key prefix; every key argument and result is under that prefix."""

    def __init__(self, client: Minio, url: BucketUrl, endpoint: str = "",
                 limits: urllib3.Timeout | None = None) -> None:
        self._client = client
        self.url = url
        #: ``host[:port]`` of the S3 endpoint (for ``s3://`` URLs, the one their credentials name).
        self._endpoint = endpoint or url.endpoint or AWS_ENDPOINT
        #: The timeouts its requests have, to say which one ran out.
        self._limits = limits or urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=READ_TIMEOUT_SECONDS)

    def __repr__(self) -> str:
        return f"Bucket({str(self.url)!r})"

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (losing a creation race to ourselves is fine;
        ``BucketAlreadyExists`` means someone else owns the name, and stays an error)."""
        with self._errors("create bucket"):
            if self._client.bucket_exists(bucket_name=self.url.bucket):
                return
            try:
                self._client.make_bucket(bucket_name=self.url.bucket)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":
                    raise
                return
        log.info("created bucket %s", self.url.bucket)

    def require(self) -> None:
        """Raise ``NoSuchBucket`` unless the bucket exists (the endpoint's errors as ``_errors`` says)."""
        with self._errors("look for the bucket"):
            exists = self._client.bucket_exists(bucket_name=self.url.bucket)
        if not exists:
            raise NoSuchBucket(f"bucket {self.url.bucket!r} does not exist at {self._endpoint}")

    def put_bytes(self, relative_key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Write ``data`` as the object ``prefix + relative_key`` (taken as it is, not
        normalised, so the key is exactly the one the caller named); return the key. A
        missing bucket is created and the write tried once more."""
        if not relative_key or relative_key.startswith("/") or any(ord(ch) < 0x20 or ch == "\x7f" for ch in relative_key):
            raise UnsafeKey(f"cannot write an object named {relative_key[:80]!r}")
        key = self.url.prefix + relative_key

        def put() -> None:
            self._client.put_object(bucket_name=self.url.bucket, object_name=key, data=io.BytesIO(data),
                                    length=len(data), content_type=content_type)

        try:
            with self._errors(f"write {key}"):
                put()
        except NoSuchBucket:
            self.ensure_bucket()
            with self._errors(f"write {key}"):
                put()
        return key

    def read_bytes(self, relative_key: str) -> bytes:
        """The object ``prefix + relative_key``, whole (for small objects: logs, tests)."""
        key = self.url.prefix + relative_key
        with self._errors(f"read {key}"):
            response = self._client.get_object(bucket_name=self.url.bucket, object_name=key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def list_keys(self) -> list[str]:
        """Every object key under the prefix (full keys, prefix included), sorted."""
        with self._errors("list objects"):
            objects = self._client.list_objects(bucket_name=self.url.bucket, prefix=self.url.prefix, recursive=True)
            return sorted(obj.object_name for obj in objects if obj.object_name)

    def upload_file(self, local_path: Path, relative_key: str | None = None) -> str:
        """Upload one file as ``prefix + relative_key`` (default: its name); return the key."""
        local_path = Path(local_path)
        try:
            key = self.url.key(relative_key if relative_key is not None else local_path.name)
        except InvalidBucketUrl as exc:
            raise UnsafeKey(f"cannot upload {local_path} as {relative_key!r}: {exc}") from exc
        content_type = mimetypes.guess_type(local_path.name)[0] or "application/octet-stream"
        with self._errors(f"upload {key}"):
            self._client.fput_object(
                bucket_name=self.url.bucket, object_name=key, file_path=str(local_path), content_type=content_type
            )
        return key

    def upload_dir(self, local_dir: Path, under_prefix: str = "", name_prefix: str = "") -> list[str]:
        """Upload every regular file below ``local_dir``, keeping relative paths; return the keys.

        ``name_prefix`` starts every key after the URL's prefix (the original's
        ``<prefix>-<file>`` naming). Symbolic links are skipped: they may point anywhere
        on the machine, and what a Job uploads should be what it wrote.
        """
        local_dir = Path(local_dir)
        try:
            target = self.url.child(name_prefix + under_prefix)
        except InvalidBucketUrl as exc:
            raise UnsafeKey(f"cannot upload under {name_prefix + under_prefix!r}: {exc}") from exc
        below = target.prefix[len(self.url.prefix) :] if under_prefix else name_prefix
        keys: list[str] = []
        size = 0
        for path in _files_below(local_dir):
            keys.append(self.upload_file(path, below + path.relative_to(local_dir).as_posix()))
            size += path.stat().st_size
        log.info("uploaded %d files (%d bytes) from %s to %s", len(keys), size, local_dir, target)
        return keys

    def download_all(self, local_dir: Path, name_prefix: str = "") -> list[Path]:
        """Download every object under the prefix into ``local_dir``, keeping relative paths.

        With ``name_prefix``, only the objects whose names (after the URL's prefix) start
        with it, saved without it: ``<prefix>-data.csv`` becomes ``data.csv``.

        All keys are checked before anything is written: one that would land outside
        ``local_dir`` (``..``, an absolute path, a symlink already there) refuses the
        whole download with ``UnsafeKey``. "Directory" marker objects (keys ending in
        ``/``) are skipped.
        """
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        root = local_dir.resolve()
        start = len(self.url.prefix) + len(name_prefix)
        plan = [
            (key, _local_path_for(root, key, key[start:]))
            for key in self.list_keys()
            if not key.endswith("/") and key[len(self.url.prefix) :].startswith(name_prefix) and key[start:]
        ]
        paths = []
        for key, path in plan:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._errors(f"download {key}"):
                self._client.fget_object(bucket_name=self.url.bucket, object_name=key, file_path=str(path))
            paths.append(path)
        log.info(
            "downloaded %d objects (%d bytes) from %s to %s",
            len(paths),
            sum(path.stat().st_size for path in paths),
            self.url,
            local_dir,
        )
        return paths

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate minio/urllib3 errors raised inside into ``StorageError`` classes."""
        where = f"{action} in {self.url}"
        try:
            yield
        except S3Error as exc:
            message = f"{where}: {exc.code}: {exc.message}"
            if exc.code == "NoSuchBucket":
                raise NoSuchBucket(message) from exc
            if exc.code in _DENIED:
                raise StorageAccessDenied(message) from exc
            if exc.code in _BUSY:
                raise StorageUnavailable(message) from exc
            raise StorageError(message) from exc
        except ServerError as exc:
            raise StorageUnavailable(f"{where}: server error {exc.status_code}: {exc}") from exc
        except InvalidResponseError as exc:
            # Usually not S3 at all (a proxy's HTML error page, a wrong port).
            raise StorageError(f"{where}: the endpoint did not answer like S3: {exc}") from exc
        except MinioException as exc:
            raise StorageError(f"{where}: {exc}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StorageUnavailable(f"{where}: the S3 endpoint {self._endpoint} is unreachable "
                                     f"({unreachable_because(exc, self._limits)})") from exc


def unreachable_because(exc: BaseException, limits: urllib3.Timeout | None = None) -> str:
    """urllib3's failure in a few words (``connection refused``, ``no answer within 10 s``),
    not its ``HTTPConnectionPool(host=..., port=...): Max retries exceeded ...``."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    # (NameResolutionError is a NewConnectionError, which is a ConnectTimeoutError: most specific first.)
    if isinstance(exc, urllib3.exceptions.NameResolutionError):
        return "its host name does not resolve"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError) and \
            not isinstance(exc, urllib3.exceptions.NewConnectionError):
        return f"no connection within {_seconds(limits, 'connect_timeout', CONNECT_TIMEOUT_SECONDS):g} s"
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return f"no answer within {_seconds(limits, 'read_timeout', READ_TIMEOUT_SECONDS):g} s"
    if isinstance(exc, urllib3.exceptions.SSLError):
        return f"TLS failed: {exc}"
    if isinstance(exc, urllib3.exceptions.ResponseError):
        return "it kept answering with server errors"
    cause: BaseException | None = exc
    while cause is not None:  # the socket's own words: "Connection refused", "No route to host"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
        cause = cause.__cause__ or cause.__context__
    return type(exc).__name__


def _endpoint_from_url(endpoint_url: str) -> tuple[str, bool]:
    """``https://host[:port]`` → ``("host[:port]", True)``; anything else is a config error."""
    parts = urlsplit(endpoint_url)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.path.strip("/") or "@" in parts.netloc:
        raise StorageConfigError(
            f"S3 endpoint {endpoint_url!r} (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL) must be "
            "http(s)://host[:port] with no path or credentials"
        )
    return parts.netloc, parts.scheme == "https"


def _files_below(local_dir: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(local_dir):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_file():
                log.warning("not uploading %s: not a regular file", path)
                continue
            yield path


def _local_path_for(root: Path, key: str, relative: str) -> Path:
    pure = PurePosixPath(relative)
    if pure.is_absolute() or any(part in {".", ".."} for part in relative.split("/")) or "\0" in relative:
        raise UnsafeKey(f"refusing to download {key!r}: it would land outside {root}")
    path = root.joinpath(*pure.parts)
    if not path.resolve().is_relative_to(root):
        raise UnsafeKey(f"refusing to download {key!r}: it resolves to {path.resolve()}, outside {root}")
    return path


def _seconds(limits: urllib3.Timeout | None, which: str, default: float) -> float:
    """One of ``limits``' timeouts (``connect_timeout``, ``read_timeout``) as a number."""
    value = getattr(limits, which, None) if limits is not None else None
    return float(value) if isinstance(value, int | float) else default
