"""The bench on the real control plane of the e2e suite (``scripts/cluster.sh``): etcd,
kube-apiserver, kube-controller-manager, kube-scheduler and kwok with one fake node.

Each subject runs as deployed there (``tests/e2e`` does the same): the handler in a
namespace of its own, labelled ``pod-security.kubernetes.io/enforce: restricted``, into which
the chart is rendered (``helm template``) and applied (``kubectl apply --server-side``), with
the chart's ConfigMap as its settings and a token of the chart's ServiceAccount; the
baseline in a namespace of its own with a ServiceAccount that may create and read Jobs.

Timestamps come from the bench's own watches of Jobs and pods (cluster-wide, as the
cluster's admin), taken as each event arrives: a Job's creation and completion are what
the API server's watch cache delivers, a few milliseconds after etcd has them. A held Job
runs ``e2e/forever`` (kwok starts its pod and leaves it running); ``finish`` ends its pod
by writing the status a kubelet would (``Succeeded``, exit 0), and the Job controller
completes the Job from it.

The API server counts each subject's requests: FlowSchemas of the bench's own, one per verb
(precedence 1000 on, after the built-in ones for ``kube-system``), route every request of a
ServiceAccount, and only those, to a priority level of their own, and
``apiserver_flowcontrol_dispatched_requests_total`` of each counts them by verb, but for the
log reads, long-running requests that API Priority and Fairness does not dispatch, which
``apiserver_request_total`` counts (only the subjects read logs). The subjects run one at a
time, so a measurement's counts are its subject's. ``apiserver_request_total`` breaks them
down by resource where a verb and resource are the subjects' alone (the Job controller, the
TTL controller and the garbage collector also read, patch and delete Jobs). Watch events are
the API server's ``apiserver_watch_events_total``: what it sent to every watcher of Jobs,
pods and events, the control plane's own and the bench's included.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
import yaml

from bench import BenchError
from bench.clocks import JobTimes, key_of
from bench.rig import Subject

#: The verbs a FlowSchema of the bench's own counts apart (the rest together, as ``other``).
FLOW_VERBS = ("create", "patch", "get", "list", "watch", "delete")
#: Requests only a subject makes, by (verb, resource, subresource) of ``apiserver_request_total``
#: in a namespace (scope ``namespace``: LISTs and watches; ``resource``: one object): the
#: breakdown by resource. (The Job controller, the TTL controller and the garbage collector
#: also read, patch and delete Jobs.)
SUBJECT_ALONE = {("POST", "jobs", ""), ("GET", "pods", "log"), ("CONNECT", "pods", "log"), ("GET", "jobs", "status"),
                 *((verb, resource, "") for verb in ("LIST", "WATCH") for resource in ("jobs", "pods", "events"))}
WATCHED = ("jobs", "pods", "events")
RELEASE = "mstc-cloud-worker"
CHART = Path(__file__).resolve().parents[1] / "charts" / "mstc-cloud-worker"


class ClusterWorld:
    name = "cluster"
    instant = "e2e/ok:0"
    hold = "e2e/forever"

    def __init__(self, times: JobTimes, workdir: Path) -> None:
        from tests.support.cluster import Cluster, ClusterUnavailable

        try:
            self.cluster = Cluster.up()
        except ClusterUnavailable as exc:
            raise BenchError(f"no control plane: {exc}") from exc
        self.admin = self.cluster.admin
        cert = self.admin.session.cert
        self._http = urllib3.PoolManager(ca_certs=self.admin.verify or None, cert_file=cert[0] if cert else None,
                                         key_file=cert[1] if cert else None)
        self.times = times
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:6]
        self.flow_schema = f"mstc-bench-{self.run_id}"
        self._namespaces: list[str] = []
        self._stopping = threading.Event()
        self._create_flow_schemas()
        self._watchers = [threading.Thread(target=self._watch, args=(path, plural), name=f"bench-watch-{plural}",
                                           daemon=True)
                          for path, plural in (("/apis/batch/v1/jobs", "jobs"), ("/api/v1/pods", "pods"))]
        self._synced = [threading.Event() for _ in self._watchers]
        for thread in self._watchers:
            thread.start()
        for synced in self._synced:
            if not synced.wait(30):
                raise BenchError("the bench's watches of Jobs and pods did not start")

    # -- the world's interface -----------------------------------------------------------------

    def fresh(self) -> None:
        """Nothing: every measurement has a namespace of its own."""

    def place(self, subject: Subject, workdir: Path) -> tuple[str, Path, dict[str, str]]:
        namespace = f"bench-{self.run_id}-{uuid.uuid4().hex[:6]}"
        self._create_namespace(namespace, restricted=subject.name == "handler")
        self._namespaces.append(namespace)
        if subject.name == "handler":
            account, settings = self._deploy_chart(namespace)
        else:
            account, settings = self._baseline_account(namespace), {}
        token = self.admin.post(f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 7200},
        })["status"]["token"]
        kubeconfig = workdir / f"kubeconfig-{namespace}.yaml"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "bench", "cluster": {"server": self.cluster.server,
                                                        "certificate-authority": self.cluster.ca_file}}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": account, "namespace": namespace}}],
            "current-context": "bench",
        }))
        return namespace, kubeconfig, settings

    def finish(self, namespace: str, job_name: str) -> None:
        """The held Job's pod ends, exit 0, as a kubelet would write it."""
        key = key_of(job_name)
        self.times.wait(self.times.running, [key], 120, "running")
        _, pod = self.times.pods[key]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = {"status": {
            "phase": "Succeeded",
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
                           {"type": "ContainersReady", "status": "False", "reason": "PodCompleted",
                            "lastTransitionTime": now}],
            "containerStatuses": [{"name": "job", "ready": False, "started": False, "state": {
                "running": None, "terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now,
                                                "finishedAt": now}}}],
        }}
        self.admin.request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{pod}/status", body=status,
                           content_type="application/strategic-merge-patch+json")

    def settle(self) -> None:
        time.sleep(1.0)  # the handler's PATCH follows each reply within milliseconds

    def mark(self) -> Any:
        return self.cluster.metrics()

    def requests_since(self, mark: Any) -> dict[str, Any]:
        from tests.support.cluster import samples, total

        deadline = time.monotonic() + 15  # a stopped subject's watches are counted as they end
        while time.monotonic() < deadline:
            after = self.cluster.metrics()
            open_watches = sum(v for labels, v in samples(after, "apiserver_longrunning_requests")
                               if labels.get("verb") == "WATCH" and labels.get("scope") == "namespace"
                               and labels.get("resource") in WATCHED)
            if not open_watches:
                break
            time.sleep(0.2)

        def delta(name: str, **labels: str) -> float:
            return total(after, name, **labels) - total(mark, name, **labels)

        before = {tuple(sorted(labels.items())): v for labels, v in samples(mark, "apiserver_request_total")}
        by_verb: dict[str, float] = {}
        for labels, value in samples(after, "apiserver_request_total"):
            verb, resource, sub = labels.get("verb"), labels.get("resource"), labels.get("subresource", "")
            if (verb, resource, sub) not in SUBJECT_ALONE or labels.get("scope") not in ("namespace", "resource"):
                continue
            grown = value - before.get(tuple(sorted(labels.items())), 0.0)
            if grown:
                what = f"{verb} {resource}" + (f"/{sub}" if sub else "")
                by_verb[what] = by_verb.get(what, 0) + grown
        counts = {verb: delta("apiserver_flowcontrol_dispatched_requests_total", flow_schema=self._flow(verb))
                  for verb in FLOW_VERBS}
        counts["other"] = delta("apiserver_flowcontrol_dispatched_requests_total", flow_schema=self._flow("*"))
        # Log reads are long-running: not dispatched by API Priority and Fairness (only the subjects read logs).
        counts["log"] = sum(n for what, n in by_verb.items() if what.endswith("pods/log"))
        counts["total"] = sum(counts.values())
        events = {resource: delta("apiserver_watch_events_total", resource=resource) for resource in WATCHED}
        events["total"] = sum(events.values())
        events["bytes"] = sum(delta("apiserver_watch_events_sizes_sum", resource=resource) for resource in WATCHED)
        return {"requests": counts, "by_verb": dict(sorted(by_verb.items())), "watch_events": events}

    def describe(self) -> dict[str, Any]:
        versions = {}
        for line in self.cluster.versions().splitlines():
            component, _, version = line.partition(" ")
            if component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "kwok"):
                versions[component] = " ".join(version.split()[:3]).replace("Version: ", "")
        return {"name": self.name, "server": self.cluster.server, "versions": versions}

    def close(self) -> None:
        self._stopping.set()
        from tests.support.kubeapi import ApiError

        for namespace in self._namespaces:
            self.admin.delete_namespace(namespace)
        base = "/apis/flowcontrol.apiserver.k8s.io/v1"
        for path in (*(f"{base}/flowschemas/{self._flow(verb)}" for verb in (*FLOW_VERBS, "*")),
                     f"{base}/prioritylevelconfigurations/{self.flow_schema}"):
            try:
                self.admin.delete(path)
            except ApiError:
                pass

    # -- set-up ------------------------------------------------------------------------------------

    def _create_flow_schemas(self) -> None:
        """One priority level, and a FlowSchema for each verb (and one for the rest) of any
        ServiceAccount outside ``kube-system``: the subjects' requests, by verb, counted by
        the API server (``apiserver_request_total`` has no label for the user)."""
        base = "/apis/flowcontrol.apiserver.k8s.io/v1"
        self.admin.post(f"{base}/prioritylevelconfigurations", {
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
            "metadata": {"name": self.flow_schema},
            "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 100, "limitResponse": {
                "type": "Queue", "queuing": {"queues": 16, "handSize": 4, "queueLengthLimit": 500}}}}})
        for precedence, verb in enumerate((*FLOW_VERBS, "*"), start=1000):
            self.admin.post(f"{base}/flowschemas", {
                "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
                "metadata": {"name": self._flow(verb)},
                "spec": {"priorityLevelConfiguration": {"name": self.flow_schema}, "matchingPrecedence": precedence,
                         "distinguisherMethod": {"type": "ByUser"},
                         "rules": [{"subjects": [{"kind": "Group", "group": {"name": "system:serviceaccounts"}}],
                                    "resourceRules": [{"verbs": [verb], "apiGroups": ["*"], "resources": ["*"],
                                                       "namespaces": ["*"], "clusterScope": True}],
                                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
                                    if verb == "*" else []}]}})

    def _flow(self, verb: str) -> str:
        return f"{self.flow_schema}-{'other' if verb == '*' else verb}"

    def _create_namespace(self, name: str, restricted: bool) -> None:
        try:
            self.admin.create_namespace(name, "restricted" if restricted else None)
        except AssertionError as exc:  # the API server's refusal, or no default ServiceAccount in time
            raise BenchError(str(exc)) from exc

    def _deploy_chart(self, namespace: str) -> tuple[str, dict[str, str]]:
        """The chart rendered and applied as an operator would; its ServiceAccount and settings."""
        from tests.support.validate import helm_binary

        rendered = subprocess.run(
            [helm_binary(), "template", RELEASE, str(CHART), "--namespace", namespace,
             "--set", "broker.amqpUrl=amqp://set-by-the-bench", "--set", "replicaCount=0"],
            capture_output=True, text=True, timeout=60, check=True).stdout
        objects = [o for o in yaml.safe_load_all(rendered) if o]
        self.cluster.kubectl("apply", "--server-side", "--field-manager=bench", "-n", namespace, "-f", "-",
                             stdin=rendered)
        config_map = next(o for o in objects if o["kind"] == "ConfigMap")
        settings = {k: v for k, v in config_map["data"].items() if k.startswith("CLOUD_WORKER_") and v != ""}
        account = next(o["metadata"]["name"] for o in objects
                       if o["kind"] == "ServiceAccount" and not o["metadata"]["name"].endswith("-job"))
        return account, settings

    def _baseline_account(self, namespace: str) -> str:
        """What the user's script needs: create Jobs, read their status."""
        account = "baseline"
        self.admin.post(f"/api/v1/namespaces/{namespace}/serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}})
        self.admin.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": account},
            "rules": [{"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "get"]},
                      {"apiGroups": ["batch"], "resources": ["jobs/status"], "verbs": ["get"]}]})
        self.admin.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings", {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": account},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}]})
        return account

    # -- the bench's own watches ---------------------------------------------------------------------

    def _watch(self, path: str, plural: str) -> None:
        """Every Job or pod of the bench's namespaces, from a cluster-wide watch (as the
        admin: its requests are neither namespaced nor a subject's), re-listed after a gap.
        Each event is stamped as its bytes arrive, before it is parsed."""
        synced = self._synced[0 if plural == "jobs" else 1]
        prefix = f"bench-{self.run_id}-"
        version = ""
        while not self._stopping.is_set():
            try:
                if not version:
                    listed = self.admin.get(path)
                    for item in listed["items"]:
                        if item["metadata"]["namespace"].startswith(prefix):
                            self.times.record(plural, "ADDED", item["metadata"]["namespace"], item)
                    version = listed["metadata"]["resourceVersion"]
                    synced.set()
                for stamp, event in self._events(path, version):
                    if event["type"] == "ERROR":
                        version = ""
                        break
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    namespace = obj["metadata"].get("namespace", "")
                    if event["type"] != "BOOKMARK" and namespace.startswith(prefix):
                        self.times.record(plural, event["type"], namespace, obj, stamp)
            except Exception:  # noqa: BLE001 - look again: the bench's clock must not stop
                version = ""
                time.sleep(0.2)

    def _events(self, path: str, version: str, timeout: int = 30) -> Iterator[tuple[float, dict]]:
        """One watch request's events, each with the time its chunk arrived. Read with urllib3
        a chunk at a time (the API server flushes each event as one): ``requests``'
        ``iter_lines`` reads 512 bytes at a time, which put the bench's watch behind the
        subjects' by milliseconds."""
        response = self._http.request(
            "GET", self.cluster.server + path, preload_content=False,
            fields={"watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true",
                    "timeoutSeconds": str(timeout)},
            timeout=urllib3.Timeout(connect=10, read=timeout + 10))
        try:
            if response.status >= 400:
                raise BenchError(f"watch {path}: {response.status} {response.data[:200]!r}")
            pending = b""
            for chunk in response.stream(1 << 20):
                stamp = time.monotonic()
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        yield stamp, json.loads(line)
        finally:
            response.release_conn()
