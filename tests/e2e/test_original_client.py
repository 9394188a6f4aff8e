"""The original service's client, unchanged, against the deployed handler on the real cluster.

Its steps (tests/test_original_client.py): inputs uploaded to bucket ``test.inputs`` as
``<prefix>-<file>``, a request naming buckets and ``prefix``, the reply read as
``json.loads(body)["result"]`` with the Job's name as its second word, then the bucket listed
for ``<prefix>-<job name>.log``, which must hold the job's log: SUCCESS, as the original's
``mstc/python-test`` image prints. kwok serves pod logs by namespace and pod name (never by
image), so this test runs in the namespace whose pods' log is scripts/cluster/logs/python-test.log.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import create_namespace, delete_namespace
from tests.support.kubeapi import ApiError
from tests.test_original_client import minio, original_client  # noqa: F401 - minio is a fixture

pytestmark = pytest.mark.e2e

PYTHON_TEST_NAMESPACE = "e2e-python-test"


@pytest.fixture
def namespace(cluster) -> Iterator[str]:
    deadline = time.monotonic() + 120
    while True:  # a previous run's namespace may still be terminating
        try:
            cluster.admin.get(f"/api/v1/namespaces/{PYTHON_TEST_NAMESPACE}")
        except ApiError as exc:
            if exc.status == 404:
                break
            raise
        assert time.monotonic() < deadline, f"{PYTHON_TEST_NAMESPACE} is still there"
        delete_namespace(cluster, PYTHON_TEST_NAMESPACE)
        time.sleep(1)
    create_namespace(cluster, PYTHON_TEST_NAMESPACE)
    yield PYTHON_TEST_NAMESPACE
    delete_namespace(cluster, PYTHON_TEST_NAMESPACE)


def test_the_original_client_gets_its_result_and_finds_success_in_its_log_object(
        rabbitmq, handlers, queue_name, minio, recorder):  # noqa: F811 - the imported fixture
    client, made = minio
    handlers.spawn()

    reply, job_name, found, prefix = original_client(rabbitmq, queue_name, client, made)

    assert reply["result"] == f"Job {job_name} succeeded."
    assert reply["data"]["image"] == "mstc/python-test"
    assert list(recorder.jobs.values()) == [job_name] and len(recorder.pods) == 1
    log = found[f"-{job_name}.log"].decode()
    assert log.rstrip().endswith("SUCCESS"), log
    assert reply["data"]["logObject"] == f"{prefix}-{job_name}.log" and "logUploadError" not in reply["data"]
