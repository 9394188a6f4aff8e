"""Shared fixtures: the real RabbitMQ, the fake Kubernetes API server, and handlers.

Integration tests talk to the real broker on 127.0.0.1:5672; e2e tests (``make e2e``) also
to the real control plane of ``scripts/cluster.sh``. A missing broker skips
them on a developer's machine but fails them in CI (``CI`` set), like dramatiq's
``check_rabbitmq``. Every test gets its own queue and namespace, so tests never see
each other's messages or Jobs.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from tests.support.handlers import HandlerFactory
from tests.support.rabbit import SESSION_PREFIX, fresh_queue, queues_named
from tests.support.requester import Requester

pytest_plugins = ["tests.support.s3", "tests.support.charts"]

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def _broker_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """A test that needs the broker is an integration test, and one that runs helm a helm
    test, whether or not it says so: ``make test-fast`` leaves both out and never waits
    for a broker or needs ``make tools``."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "rabbitmq" in fixtures:
            item.add_marker(pytest.mark.integration)
        if "helm" in fixtures:
            item.add_marker(pytest.mark.helm)


@pytest.fixture(scope="session", autouse=True)
def no_queue_left_behind():
    """Every test deletes the queues it declares: at the end of the session, none named
    with its prefix (``tests.support.rabbit.fresh_queue``) may be left on the broker."""
    yield
    if not _broker_answers():
        return
    left = queues_named(SESSION_PREFIX + ".")
    assert not left, f"queues this test session declared and left on the broker: {', '.join(left)}"


@pytest.fixture(scope="session")
def rabbitmq() -> str:
    if not _broker_answers():
        message = "RabbitMQ is not answering on 127.0.0.1:5672 (run scripts/ensure-rabbitmq.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return AMQP_URL


@pytest.fixture(scope="session")
def cluster():
    """The real control plane of the e2e suite (``scripts/cluster.sh up``: built once, cached by
    version; a no-op when it is up). When it cannot be built or started (no Go, a module the
    proxy does not serve), e2e tests skip on a developer's machine and FAIL in CI."""
    from tests.support.cluster import Cluster, ClusterUnavailable

    try:
        up = Cluster.up()
    except ClusterUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    print("\n" + up.versions())  # noqa: T201 - what the e2e run ran against (shown with -s)
    return up


@pytest.fixture(scope="session")
def fakekube(tmp_path_factory):
    from tests.fakekube import FakeKube

    # Every namespace enforces the restricted Pod Security level, as the chart's should: a Job
    # manifest that loosens its securityContext is refused (FailedCreate), as a cluster would.
    server = FakeKube(run_seconds=0.05, pod_security="restricted")
    server.start()
    server.kubeconfig = str(server.write_kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig"))
    yield server
    server.stop()


@pytest.fixture
def faults(fakekube):
    """The fake API server's fault knobs, all switched off again after the test."""
    yield fakekube.faults
    fakekube.faults.clear()


@pytest.fixture
def namespace() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def queue_name() -> str:
    return fresh_queue()


@pytest.fixture
def handlers(rabbitmq, fakekube, namespace, queue_name, tmp_path):
    """``handlers.start(**settings)`` runs a consumer in a thread; ``handlers.spawn(...)``
    as a subprocess. All are stopped and their queues deleted afterwards."""
    factory = HandlerFactory(rabbitmq, fakekube.kubeconfig, namespace, queue_name, tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def requester(rabbitmq, queue_name):
    client = Requester(rabbitmq, queue_name)
    yield client
    client.close()
