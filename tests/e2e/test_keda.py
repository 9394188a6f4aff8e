"""KEDA for real: the operator built from github.com/kedacore/keda/v2 scales the chart's handler.

``scripts/cluster.sh up`` runs the KEDA operator and its metrics adapter (``KEDA_VERSION`` in
scripts/cluster/versions.env) against the control plane. Each test renders the chart with KEDA on,
its rabbitmq trigger on the test's own queue of the shared broker, read through the management
API (``protocol: http``, 127.0.0.1:15672, the URL handed to KEDA by the TriggerAuthentication
from the broker Secret, as the chart renders them), and applies it to the test's namespace.
kwok runs the handler's pods without a process: the tests' kubelet (tests/support/kubelet.py)
runs ``cloud-worker`` for each, with the pod's arguments and environment, and writes a
ScaledJob handler's exit code on its pod for kwok to end the container with.

Latencies run from the publish to the watch event that shows KEDA's action (the Deployment's
``replicas``, a handler Job ADDED), and are printed at the end of the run; the README's table is
made of them. Two clocks bound them: KEDA reads the queue every ``pollingInterval``, and the
management API's count of a queue lags it by up to two of RabbitMQ's ``collect_statistics_interval``
(5 s by default: the queue emits its statistics on that timer, and the management agent collects
them on another), so a request is seen 0 to pollingInterval + 2 intervals after its publish.
"""

from __future__ import annotations

import random
import re
import statistics
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.e2e.conftest import CHART, Release, create_namespace, delete_namespace
from tests.support.cluster import Cluster
from tests.support.kubeapi import KubeApi
from tests.support.kubelet import HandlerKubelet
from tests.support.rabbit import delete_queues, fresh_queue
from tests.support.requester import Requester
from tests.support.timeline import Seen, Timeline
from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.e2e

VERSIONS_ENV = Path(__file__).resolve().parents[2] / "scripts" / "cluster" / "versions.env"
#: The chart's defaults, which these tests measure (the ScaledObject's runs differ in one, said there).
KEDA_VALUES = yaml.safe_load((CHART / "values.yaml").read_text())["keda"]
POLLING = int(KEDA_VALUES["pollingInterval"])
COOLDOWN = int(KEDA_VALUES["scaledObject"]["cooldownPeriod"])
IDLE_EXIT = int(KEDA_VALUES["scaledJob"]["idleExitSeconds"])
RUNS = 10
MANAGEMENT_PORT = 15672
#: Beyond a poll and two statistics intervals: KEDA's GET, the API calls of a scale, and this
#: shared 2-core machine's scheduling.
SLACK = 5.0


# -- the broker as KEDA sees it ------------------------------------------------------------------


def management_url(amqp_url: str) -> str:
    """The management API URL KEDA's trigger gets: the AMQP URL's credentials and vhost, port 15672."""
    parts = urllib.parse.urlsplit(amqp_url)
    return f"http://{parts.username}:{parts.password}@{parts.hostname}:{MANAGEMENT_PORT}{parts.path or '/'}"


def messages_seen_by_keda(amqp_url: str, queue: str) -> int:
    """The queue's ``messages`` (ready + unacked) as the management API reports it: what KEDA reads."""
    parts = urllib.parse.urlsplit(amqp_url)
    vhost = parts.path.lstrip("/") or "%2F"
    response = requests.get(f"http://{parts.hostname}:{MANAGEMENT_PORT}/api/queues/{vhost}/"
                            f"{urllib.parse.quote(queue, safe='')}",
                            auth=(parts.username or "", parts.password or ""), timeout=10)
    response.raise_for_status()
    return int(response.json().get("messages", 0))


def statistics_interval() -> float:
    """RabbitMQ's collect_statistics_interval in seconds: the management API's counts may be two old."""
    answer = subprocess.run(["rabbitmqctl", "eval", "application:get_env(rabbit, collect_statistics_interval)."],
                            capture_output=True, text=True, timeout=60)
    found = re.search(r"\{ok,(\d+)\}", answer.stdout)
    return int(found[1]) / 1000 if found else 5.0  # RabbitMQ's documented default


def spread(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.1f} s, max {max(values):.1f} s (n={len(values)})"


# -- the chart with KEDA on ----------------------------------------------------------------------


class KedaRelease:
    """The chart rendered with KEDA on and applied to a namespace, and what the cluster does with it."""

    def __init__(self, cluster: Cluster, namespace: str, tmp_path: Path, amqp_url: str, queue: str,
                 *flags: str) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.cluster, self.namespace, self.tmp_path = cluster, namespace, tmp_path
        self.release = Release(cluster, namespace, tmp_path, amqp_url,
                               "--set", "keda.enabled=true", "--set", f"config.queue={queue}",
                               "--set", f"broker.managementUrl={management_url(amqp_url)}", *flags)
        self.applied = time.monotonic()
        scaler = next(o for o in self.release.objects if o["kind"] in ("ScaledObject", "ScaledJob"))
        self.kind, self.name = scaler["kind"], scaler["metadata"]["name"]
        self.trigger = scaler["spec"]["triggers"][0]["metadata"]
        self.deployments = Timeline(cluster.admin, f"/apis/apps/v1/namespaces/{namespace}/deployments")
        self.jobs = Timeline(cluster.admin, KubeApi.jobs(namespace), labelSelector=f"scaledjob.keda.sh/name={self.name}")
        self.kubelet: HandlerKubelet | None = None

    def run_handlers(self) -> HandlerKubelet:
        """From now on, every handler pod kwok runs gets its process (tests/support/kubelet.py)."""
        self.kubelet = HandlerKubelet(self.cluster.admin, self.namespace, self.release.kubeconfig, self.tmp_path).start()
        return self.kubelet

    def scaler(self) -> dict[str, Any]:
        plural = "scaledobjects" if self.kind == "ScaledObject" else "scaledjobs"
        return dict(self.cluster.admin.get(f"/apis/keda.sh/v1alpha1/namespaces/{self.namespace}/{plural}/{self.name}"))

    def condition(self, kind: str) -> str | None:
        conditions = self.scaler().get("status", {}).get("conditions", [])
        return next((c["status"] for c in conditions if c["type"] == kind), None)

    def replicas(self) -> int:
        deployment = self.cluster.admin.get(f"/apis/apps/v1/namespaces/{self.namespace}/deployments/{self.name}")
        return int(deployment["spec"].get("replicas", 0))

    def scaled_to(self, count: int) -> Callable[[Seen], bool]:
        return lambda seen: (seen.object["metadata"]["name"] == self.name
                             and seen.object["spec"].get("replicas") == count)

    def close(self) -> None:
        self.deployments.stop()
        self.jobs.stop()
        if self.kubelet:
            self.kubelet.stop()


@pytest.fixture
def deploy(cluster: Cluster, rabbitmq: str, tmp_path: Path) -> Iterator[Callable[..., tuple[KedaRelease, Requester]]]:
    """``deploy(*helm_flags)``: a namespace of its own, a queue of its own with its requester,
    and the chart with KEDA on; all of it deleted afterwards."""
    made: list[tuple[str, str, KedaRelease | None, Requester | None]] = []

    def make(*flags: str, queue_first: bool = True) -> tuple[KedaRelease, Requester | None]:
        namespace, queue = f"e2e-keda-{uuid.uuid4().hex[:8]}", fresh_queue()
        create_namespace(cluster, namespace)
        # The queue first (as the requester's client declares it): KEDA reads it from its first
        # poll on, and a queue that does not exist yet is a trigger error.
        requester = Requester(rabbitmq, queue) if queue_first else None
        made.append((namespace, queue, None, requester))
        keda = KedaRelease(cluster, namespace, tmp_path / namespace, rabbitmq, queue, *flags)
        made[-1] = (namespace, queue, keda, requester)
        if queue_first:
            wait_until(lambda: keda.condition("Ready") == "True", f"KEDA found the {keda.kind} Ready", timeout=60)
        return keda, requester

    yield make
    for namespace, queue, keda, requester in made:
        if keda:
            keda.close()
        if requester:
            requester.close()
        delete_namespace(cluster, namespace)
        delete_queues(rabbitmq, queue)


# -- which KEDA ------------------------------------------------------------------------------------


def test_the_keda_running_is_the_version_pinned_in_versions_env(cluster):
    pinned = re.search(r"^KEDA_VERSION=(\S+)$", VERSIONS_ENV.read_text(), re.MULTILINE)
    assert pinned
    said = [line for line in cluster.versions().splitlines() if line.startswith("keda-")]
    assert len(said) == 2 and all(f"KEDA Version: {pinned[1]} " in line for line in said), said


# -- what KEDA reads ---------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_the_management_api_counts_a_request_and_its_ack_within_two_statistics_intervals(rabbitmq, measurements):
    """Much of a request's wait at zero is not KEDA's: the count it reads is RabbitMQ's statistics,
    which also go on counting a request for a while after its handler acked it."""
    stats = statistics_interval()
    queue = fresh_queue()
    requester = Requester(rabbitmq, queue)
    counted, uncounted = [], []
    try:
        for _ in range(RUNS):
            time.sleep(random.uniform(0, stats))
            t0 = time.monotonic()
            requester.submit(job_request("e2e/ok"))
            wait_until(lambda: messages_seen_by_keda(rabbitmq, queue) == 1, "the management API counts it",
                       timeout=4 * stats)
            counted.append(time.monotonic() - t0)
            assert requester.get_one(queue) is not None  # taken and acked at once
            t1 = time.monotonic()
            wait_until(lambda: messages_seen_by_keda(rabbitmq, queue) == 0, "the management API counts it gone",
                       timeout=4 * stats)
            uncounted.append(time.monotonic() - t1)
    finally:
        requester.close()
        delete_queues(rabbitmq, queue)
    assert max(counted + uncounted) <= 2 * stats + 2, (counted, uncounted)
    measurements.append(f"RabbitMQ management API: publish → counted {spread(counted)}; ack → no longer counted "
                        f"{spread(uncounted)} [collect_statistics_interval {stats:g} s]")


# -- the ScaledObject: 0 → 1 → 0, and 1 → N --------------------------------------------------------


@pytest.mark.timeout(1200)
def test_the_deployment_waits_at_zero_wakes_for_one_request_and_goes_back_to_zero_a_cooldown_after_the_queue_drained(
        deploy, rabbitmq, measurements):
    stats = statistics_interval()
    keda, requester = deploy()  # every KEDA default of the chart
    assert (keda.trigger["protocol"], keda.trigger["activationValue"]) == ("http", str(KEDA_VALUES["activationValue"]))
    keda.run_handlers()
    # The chart leaves `replicas` out (the ScaledObject owns it): the Deployment is made with 1 and
    # KEDA, finding the queue empty and the ScaledObject never active, takes it to 0 at once.
    installed = keda.deployments.first(keda.scaled_to(0), after=0, timeout=60,
                                       what="KEDA scaled the new Deployment to 0").at - keda.applied
    waited = time.monotonic()
    time.sleep(3 * POLLING)
    assert keda.replicas() == 0
    assert not [s for s in keda.deployments.seen if s.at > waited and keda.scaled_to(1)(s)], "woke on an empty queue"

    published = time.monotonic()
    cid = requester.submit(job_request("e2e/ok:1"))
    woke = keda.deployments.first(keda.scaled_to(1), after=published, timeout=60, what="KEDA scaled to 1")
    assert requester.wait_reply(cid, timeout=120)["data"]["status"] == "succeeded"
    drained = time.monotonic()  # the handler acks right after the broker confirmed its reply
    first_wake = woke.at - published

    # While that cooldown runs: the same chart in a second namespace with cooldownPeriod 0, so
    # that each of RUNS requests finds its Deployment at zero. (KEDA's scale from zero reads the
    # pollingInterval and the activation value, never the cooldownPeriod.)
    runs, runs_requester = deploy("--set", "keda.scaledObject.cooldownPeriod=0")
    kubelet = runs.run_handlers()
    queue = runs.release.settings["CLOUD_WORKER_QUEUE"]
    up, started, replied = [], [], []
    for run in range(RUNS):
        wait_until(lambda: runs.replicas() == 0 and all(c.exit_code is not None for c in kubelet.containers.values()),
                   f"run {run}: the Deployment is at 0 and its handler stopped", timeout=90)
        wait_until(lambda: messages_seen_by_keda(rabbitmq, queue) == 0,
                   f"run {run}: the management API reports the queue empty", timeout=30)
        time.sleep(random.uniform(0, POLLING))  # no fixed phase with KEDA's poll or the statistics timer
        t0 = time.monotonic()
        cid = runs_requester.submit(job_request("e2e/ok:1"))
        up.append(runs.deployments.first(runs.scaled_to(1), after=t0, timeout=60,
                                         what=f"run {run}: KEDA scaled to 1").at - t0)
        wait_until(lambda t0=t0: [c for c in kubelet.containers.values() if c.started > t0],
                   f"run {run}: its handler pod runs", timeout=60)
        started.append(min(c.started for c in kubelet.containers.values() if c.started > t0) - t0)
        assert runs_requester.wait_reply(cid, timeout=120)["data"]["status"] == "succeeded"
        replied.append(time.monotonic() - t0)
    bound = POLLING + 2 * stats + SLACK
    assert max(up) <= bound, (up, bound)
    runs_requester.collect(1)
    assert len(runs_requester.replies) == RUNS  # one reply each
    measurements.append(f"ScaledObject: publish → replicas 1 {spread(up)}; → handler pod running {spread(started)}; "
                        f"→ reply (handler start, a 1 s Job) {spread(replied)} [pollingInterval {POLLING}, "
                        f"activationValue {KEDA_VALUES['activationValue']}, RabbitMQ statistics every {stats:g} s]")

    # Back to the first namespace: at zero again a cooldown after the queue drained, not before.
    zero = keda.deployments.first(keda.scaled_to(0), after=drained, timeout=COOLDOWN + 120,
                                  what="KEDA scaled the drained Deployment to 0")
    took = zero.at - drained
    # KEDA's last active reading came at most a poll and two statistics intervals after the ack
    # (the count lags), and at most a poll before it; the scale to zero comes at the first poll a
    # cooldown after that reading.
    assert COOLDOWN - POLLING <= took <= COOLDOWN + 2 * POLLING + 2 * stats + SLACK, took
    assert keda.kubelet is not None
    handler = next(c for c in keda.kubelet.containers.values() if c.started > published)
    wait_until(lambda: handler.exit_code is not None, "the scaled-away handler exited", timeout=60)
    assert handler.terminated and handler.exit_code == 0, handler.log()[-2000:]
    measurements.append(f"ScaledObject, chart defaults: applied → replicas 0 in {installed:.1f} s; publish → replicas 1 "
                        f"in {first_wake:.1f} s; queue drained → replicas 0 in {took:.1f} s [cooldownPeriod {COOLDOWN}]")


@pytest.mark.timeout(300)
def test_on_install_the_first_pod_declares_the_missing_work_queue_then_keda_scales_it_to_zero(
        deploy, rabbitmq, measurements):
    """docs/kubernetes.md's install: nobody has declared the queue yet. KEDA's reading fails (404),
    so it leaves the Deployment's first pod alone; that handler declares the queue, and KEDA, now
    reading an empty queue of a ScaledObject never active, scales to zero without a cooldown."""
    keda, _ = deploy(queue_first=False)
    queue = keda.release.settings["CLOUD_WORKER_QUEUE"]
    wait_until(lambda: keda.condition("Ready") == "False", "KEDA reports the trigger's error", timeout=60)
    assert keda.replicas() == 1
    kubelet = keda.run_handlers()
    zero = keda.deployments.first(keda.scaled_to(0), after=0, timeout=120, what="KEDA scaled to 0")
    assert messages_seen_by_keda(rabbitmq, queue) == 0  # the handler declared it
    assert keda.condition("Ready") == "True"
    (handler,) = kubelet.containers.values()
    assert handler.started < zero.at
    wait_until(lambda: handler.exit_code is not None, "the scaled-away handler exited", timeout=60)
    assert handler.terminated and handler.exit_code == 0, handler.log()[-2000:]
    measurements.append(f"ScaledObject, a missing queue: handler started → replicas 0 in {zero.at - handler.started:.1f} s "
                        f"(it declared the queue; KEDA's next reading found it empty)")


@pytest.mark.timeout(300)
def test_under_a_backlog_the_metrics_adapter_lets_the_hpa_take_the_deployment_from_one_to_a_pod_per_request(
        cluster, deploy, measurements):
    keda, requester = deploy()  # and no handler runs: the requests wait in the queue
    keda.deployments.first(keda.scaled_to(0), after=0, timeout=60, what="KEDA scaled the new Deployment to 0")
    backlog = 4
    t0 = time.monotonic()
    for i in range(backlog):
        requester.submit(job_request("e2e/ok:1", jobName=f"backlog-{i}"))
    one = keda.deployments.first(keda.scaled_to(1), after=t0, timeout=60, what="KEDA scaled to 1")
    # From 1 on the HPA KEDA made scales, on the external metric the adapter serves: the queue's
    # length over `value` (config.concurrency, 1) → one pod per request.
    many = keda.deployments.first(keda.scaled_to(backlog), after=one.at, timeout=120,
                                  what=f"the HPA scaled to {backlog}")
    hpa = cluster.admin.get(f"/apis/autoscaling/v2/namespaces/{keda.namespace}/horizontalpodautoscalers/keda-hpa-{keda.name}")
    metric = hpa["spec"]["metrics"][0]["external"]["metric"]["name"]
    # The API server's aggregator → the adapter → the operator's gRPC service → the management API.
    served = cluster.admin.get(f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{keda.namespace}/{metric}",
                               labelSelector=f"scaledobject.keda.sh/name={keda.name}")
    assert [item["value"] for item in served["items"]] in (["4"], ["4000m"]), served
    assert hpa["spec"]["maxReplicas"] == KEDA_VALUES["maxReplicaCount"]
    time.sleep(2 * POLLING)
    assert keda.replicas() == backlog  # no further
    measurements.append(f"ScaledObject, {backlog} requests and no consumer: 0 → 1 in {one.at - t0:.1f} s (KEDA), "
                        f"1 → {backlog} in {many.at - one.at:.1f} s (the HPA, on the adapter's metric)")


# -- the ScaledJob: a handler Job per request ---------------------------------------------------


def finished(job: dict[str, Any]) -> bool:
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
               for c in job.get("status", {}).get("conditions", []))


def running_handler_jobs(keda: KedaRelease) -> list[str]:
    return [j["metadata"]["name"] for j in keda.cluster.admin.list_items(
        KubeApi.jobs(keda.namespace), labelSelector=f"scaledjob.keda.sh/name={keda.name}") if not finished(j)]


def settle(keda: KedaRelease, amqp_url: str, queue: str, stats: float) -> None:
    """Wait until no handler Job runs and none comes: KEDA may still start a spare one from a
    count the management API has not lowered yet (up to a poll and a statistics event late)."""
    while True:
        # From before the look at the Jobs: one KEDA creates while we look counts as new.
        quiet_since = time.monotonic()
        wait_until(lambda: not running_handler_jobs(keda), "no handler Job runs", timeout=IDLE_EXIT + 90)
        wait_until(lambda: messages_seen_by_keda(amqp_url, queue) == 0, "the management API reports the queue empty",
                   timeout=30)
        time.sleep(POLLING + stats + 1)
        if not [s for s in keda.jobs.seen if s.at >= quiet_since and s.type == "ADDED"]:
            return


def handled(log: str) -> int:
    """How many requests a handler received, from its last line ("consumer stopped: Stats(received=N, ...)")."""
    found = re.findall(r"consumer stopped: Stats\(received=(\d+)", log)
    assert found, log[-2000:]
    return int(found[-1])


@pytest.mark.timeout(900)
def test_the_scaled_job_starts_a_handler_job_per_request_and_each_handler_takes_one_request_and_exits(
        deploy, rabbitmq, measurements):
    stats = statistics_interval()
    # idleExitSeconds 10: a spare handler Job (below) is gone before the next run; KEDA's
    # creation of Jobs does not read it.
    keda, requester = deploy("--set", "mode=scaledJob", "--set", "keda.scaledJob.idleExitSeconds=10")
    kubelet = keda.run_handlers()
    queue = keda.release.settings["CLOUD_WORKER_QUEUE"]
    created, replied = [], []
    for run in range(RUNS):
        settle(keda, rabbitmq, queue, stats)
        time.sleep(random.uniform(0, POLLING))
        t0 = time.monotonic()
        cid = requester.submit(job_request("e2e/ok:1", jobName=f"run-{run}"))
        created.append(keda.jobs.first(lambda s: s.type == "ADDED", after=t0, timeout=60,
                                       what=f"run {run}: KEDA created a handler Job").at - t0)
        assert requester.wait_reply(cid, timeout=120)["data"]["status"] == "succeeded"
        replied.append(time.monotonic() - t0)
    wait_until(lambda: not running_handler_jobs(keda), "every handler Job finished", timeout=90)
    assert max(created) <= POLLING + 2 * stats + SLACK, created
    jobs = keda.jobs.names()
    counts = {c.pod: handled(c.log()) for c in kubelet.containers.values()}
    assert sorted(counts.values(), reverse=True)[:RUNS] == [1] * RUNS, counts
    assert set(counts.values()) <= {0, 1}, counts  # --once: never a second request
    assert all(c.exit_code == 0 for c in kubelet.containers.values())
    assert len(kubelet.containers) == len(jobs)  # a pod each, run once (backoffLimit 0)
    measurements.append(f"ScaledJob: publish → handler Job created {spread(created)}; → reply {spread(replied)}; "
                        f"{len(jobs)} handler Jobs for {RUNS} requests [pollingInterval {POLLING}, "
                        f"RabbitMQ statistics every {stats:g} s, idleExitSeconds 10]")


@pytest.mark.timeout(600)
def test_a_burst_of_requests_gets_a_handler_job_each_from_the_chart_defaults_and_spare_handlers_exit_0(
        deploy, rabbitmq, measurements):
    keda, requester = deploy("--set", "mode=scaledJob")
    kubelet = keda.run_handlers()
    burst = 4
    t0 = time.monotonic()
    cids = [requester.submit(job_request("e2e/ok:2", jobName=f"burst-{i}")) for i in range(burst)]
    for cid in cids:
        assert requester.wait_reply(cid, timeout=180)["data"]["status"] == "succeeded"
    took = time.monotonic() - t0
    # A spare handler (KEDA read a count the management API had not yet lowered) waits
    # idleExitSeconds for a request, then exits 0; KEDA may start one after the last reply.
    settle(keda, rabbitmq, keda.release.settings["CLOUD_WORKER_QUEUE"], statistics_interval())
    requester.collect(2)
    assert sorted(r["_correlation_id"] for r in requester.replies) == sorted(cids)  # one reply each
    counts = {c.pod: handled(c.log()) for c in kubelet.containers.values()}
    assert sum(counts.values()) == burst and set(counts.values()) <= {0, 1}, counts
    assert all(c.exit_code == 0 for c in kubelet.containers.values())
    jobs = keda.jobs.names()
    assert len(jobs) == len(kubelet.containers) >= burst
    spare = [c for c in kubelet.containers.values() if handled(c.log()) == 0]
    for container in spare:
        assert container.ended is not None and container.ended - container.started >= IDLE_EXIT
    measurements.append(f"ScaledJob, chart defaults: {burst} requests at once → {len(jobs)} handler Jobs, "
                        f"all {burst} replied within {took:.1f} s; {len(spare)} spare handler(s) exited 0 after "
                        f"idleExitSeconds {IDLE_EXIT}")
