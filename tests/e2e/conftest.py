"""The e2e suite: the handler as deployed, against the real control plane and the real RabbitMQ.

The session fixture ``cluster`` (tests/conftest.py) brings the control plane up with
``scripts/cluster.sh up`` (or finds it up) and prints the version of every binary it runs. Each test gets a namespace of its own,
labelled ``pod-security.kubernetes.io/enforce: restricted``, into which the chart is rendered
(``helm template``) and applied (``kubectl apply --server-side``) as an operator would; the
handler runs outside the cluster as ``cloud-worker consume``, with the chart's ConfigMap as its
settings and a kubeconfig carrying the chart ServiceAccount's token (``kubectl create token``),
never an admin's. The namespace is deleted afterwards.
"""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.cluster import Cluster
from tests.support.handlers import HandlerFactory
from tests.support.kubeapi import KubeApi
from tests.support.requester import Requester
from tests.support.validate import helm_binary

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mstc-cloud-worker"
RELEASE = "mstc-cloud-worker"
MANAGED = "app.kubernetes.io/managed-by=mstc-cloud-worker"


# -- a namespace per test ----------------------------------------------------------------------


def create_namespace(cluster: Cluster, name: str, enforce: str = "restricted") -> None:
    cluster.admin.create_namespace(name, enforce)


def delete_namespace(cluster: Cluster, name: str) -> None:
    cluster.admin.delete_namespace(name)


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    create_namespace(cluster, name)
    yield name
    delete_namespace(cluster, name)


# -- the chart, deployed -----------------------------------------------------------------------


class Release:
    """The chart applied to a namespace, and the handler's own credentials from it."""

    def __init__(self, cluster: Cluster, namespace: str, tmp_path: Path, amqp_url: str, *flags: str) -> None:
        self.namespace = namespace
        rendered = subprocess.run(
            [helm_binary(), "template", RELEASE, str(CHART), "--namespace", namespace,
             "--set", f"broker.amqpUrl={amqp_url}", "--set", "replicaCount=0",
             "--set", "bucket.credentials.AWS_ACCESS_KEY_ID=e2e", "--set", "bucket.credentials.AWS_SECRET_ACCESS_KEY=e2e",
             *flags],
            capture_output=True, text=True, timeout=60, check=True).stdout
        self.objects = [o for o in yaml.safe_load_all(rendered) if o]
        cluster.kubectl("apply", "--server-side", "--field-manager=e2e-operator", "-n", namespace, "-f", "-",
                        stdin=rendered)
        config_map = next(o for o in self.objects if o["kind"] == "ConfigMap")
        self.settings: dict[str, str] = dict(config_map["data"])
        account = next(o["metadata"]["name"] for o in self.objects
                       if o["kind"] == "ServiceAccount" and not o["metadata"]["name"].endswith("-job"))
        token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration", "2h").stdout.strip()
        self.kubeconfig = tmp_path / "handler-kubeconfig.yaml"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {"server": cluster.server,
                                                      "certificate-authority": cluster.ca_file}}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": account, "namespace": namespace}}],
            "current-context": "e2e",
        }))
        self.api = KubeApi.from_kubeconfig(self.kubeconfig)

    def handler_settings(self) -> dict[str, str]:
        """The ConfigMap's settings, as the Deployment hands them to the handler (lower-cased names)."""
        return {k.removeprefix("CLOUD_WORKER_").lower(): v for k, v in self.settings.items()
                if k.startswith("CLOUD_WORKER_") and v != ""}


@pytest.fixture
def release(cluster: Cluster, namespace: str, tmp_path: Path, rabbitmq: str) -> Release:
    return Release(cluster, namespace, tmp_path, rabbitmq)


class DeployedHandlers(HandlerFactory):
    """``cloud-worker consume`` processes configured from the release's ConfigMap, with its token."""

    def __init__(self, release: Release, amqp_url: str, queue: str, tmp_path: Path) -> None:
        super().__init__(amqp_url, str(release.kubeconfig), release.namespace, queue, tmp_path)
        self.release = release

    def env(self, **settings: Any) -> dict[str, str]:
        merged: dict[str, Any] = {
            **self.release.handler_settings(),
            # The test's own queue on the shared broker, and paces that fit a test.
            "queue": self.queue,
            "image_pull_grace_seconds": 3,
            "job_start_grace_seconds": 3,
            "deadline_slack_seconds": 10,
            "shutdown_grace_seconds": 2,
            "http_port": 0,
            "log_format": "text",
            **settings,
        }
        env = super().env()
        env.update({f"CLOUD_WORKER_{k.upper()}": str(v) for k, v in merged.items()})
        return env


@pytest.fixture
def handlers(release: Release, rabbitmq: str, queue_name: str, tmp_path: Path) -> Iterator[DeployedHandlers]:
    factory = DeployedHandlers(release, rabbitmq, queue_name, tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def requester(rabbitmq: str, queue_name: str) -> Iterator[Requester]:
    client = Requester(rabbitmq, queue_name)
    yield client
    client.close()


# -- what the tests measured -------------------------------------------------------------------

MEASURED = pytest.StashKey[list[str]]()


@pytest.fixture
def measurements(request: pytest.FixtureRequest) -> list[str]:
    """Lines a test adds here are printed at the end of the run (``make e2e``'s summary):
    the figures the README quotes, with the settings that produced them."""
    return request.config.stash.setdefault(MEASURED, [])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(MEASURED, [])
    if lines:
        terminalreporter.section("measured on the real control plane")
        for line in lines:
            terminalreporter.write_line(line)


# -- what happened in the namespace ------------------------------------------------------------


class Recorder:
    """Every Job and pod that ever existed in a namespace, from a watch (re-listed after a gap)."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.jobs: dict[str, str] = {}  # uid -> name
        self.pods: dict[str, str] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._follow, args=(path, seen), daemon=True)
                         for path, seen in ((KubeApi.jobs(namespace), self.jobs), (KubeApi.pods(namespace), self.pods))]
        for thread in self._threads:
            thread.start()

    def _follow(self, path: str, seen: dict[str, str]) -> None:
        for _, item in self.api.follow(path, self._stop):
            seen[item["metadata"]["uid"]] = item["metadata"]["name"]

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


@pytest.fixture
def recorder(cluster: Cluster, namespace: str) -> Iterator[Recorder]:
    watching = Recorder(cluster.admin, namespace)
    yield watching
    watching.stop()


def remaining_jobs(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return cluster.admin.list_items(KubeApi.jobs(namespace))


def remaining_pods(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return cluster.admin.list_items(KubeApi.pods(namespace))
