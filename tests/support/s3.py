"""A real S3-compatible endpoint for tests: moto's server, in-process, on a free port.

Use it from a test module with ``pytest_plugins = ["tests.support.s3"]`` (or once from
the root ``conftest.py``). ``s3_endpoint`` is one server per session; ``s3_bucket`` is
a factory making uniquely named buckets that are emptied and removed after the test,
so tests never see each other's objects.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from minio import Minio
from minio.deleteobjects import DeleteObject

from handler.adapters.embedded_s3 import ACCESS_KEY, REGION, SECRET_KEY, EmbeddedS3


@dataclass(frozen=True)
class S3Endpoint:
    url: str  # http://127.0.0.1:PORT
    env: dict[str, str]  # credentials and endpoint, as a Job's environment would carry them
    client: Minio  # for arranging and inspecting buckets behind the code under test

    def bucket_url(self, bucket: str, prefix: str = "") -> str:
        return f"{self.url}/{bucket}/{prefix}"

    def put_raw_object(self, bucket: str, key: str, body: bytes = b"x") -> None:
        """Write an object minio refuses to name (``..`` segments), as another S3 client could."""
        import boto3  # moto's own dependency; only the few tests that need it pay for the import

        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        client.put_object(Bucket=bucket, Key=key, Body=body)
        client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """The handler's own embedded S3 (``handler.adapters.embedded_s3``), as local mode starts it."""
    # EmbeddedS3 quietens werkzeug's per-request log for good; a test session restores it.
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    embedded = EmbeddedS3.start()
    host_port = embedded.url.removeprefix("http://")
    client = Minio(host_port, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False, region=REGION)
    try:
        yield S3Endpoint(url=embedded.url, env=dict(embedded.env), client=client)
    finally:
        embedded.stop()
        werkzeug_log.setLevel(level)


@pytest.fixture
def s3_bucket(s3_endpoint: S3Endpoint) -> Iterator[Callable[..., str]]:
    """``s3_bucket(prefix="")`` makes a fresh bucket and returns its http:// URL."""
    client = s3_endpoint.client
    made: list[str] = []

    def make(prefix: str = "") -> str:
        name = f"test-{uuid.uuid4().hex[:16]}"
        client.make_bucket(bucket_name=name)
        made.append(name)
        return s3_endpoint.bucket_url(name, prefix)

    yield make
    for name in made:
        # Bulk delete: unlike remove_object it accepts the '..' keys some tests plant.
        doomed = [DeleteObject(obj.object_name) for obj in client.list_objects(bucket_name=name, recursive=True)]
        errors = list(client.remove_objects(bucket_name=name, delete_object_list=doomed))
        assert not errors, errors
        client.remove_bucket(bucket_name=name)
