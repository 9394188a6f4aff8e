"""The test as the kubelet of the handler's own pods, which kwok runs without a process.

kwok plays the kubelet of the e2e cluster's one node: it moves pods through their phases by
their image (scripts/cluster/stages/), but runs nothing. For the pods of the handler's image
(``mstc/mstc-cloud-worker``: the chart's Deployment, and the Jobs KEDA starts from its
ScaledJob) ``HandlerKubelet`` does the rest of a kubelet's work, on this machine: when kwok
reports a pod Running it starts ``cloud-worker`` with the container's arguments and
environment (the ConfigMap, the Secrets and the values of the pod spec, read from the API
server as a kubelet would); when the pod is being deleted it sends SIGTERM; when the process
ends on its own it writes the exit code on the pod (annotation ``e2e.mstc.io/exit-code``), so
kwok ends the container with that code (``pod-handler-exit.yaml``) and the Job controller
counts it. Only three things differ from the pod, each because a process on a shared machine
is not a container: the API server is reached with the pod's ServiceAccount token through a
kubeconfig (no in-cluster config here), no HTTP port is opened (every pod would want 8080),
and the logs are text, for the test's own reading.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.kubeapi import ApiError, KubeApi

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
HANDLER_IMAGE = "mstc/mstc-cloud-worker"
EXIT_CODE_ANNOTATION = "e2e.mstc.io/exit-code"


@dataclass
class Container:
    """One handler process standing in for a pod's container."""

    pod: str
    process: subprocess.Popen
    log_path: Path
    started: float  # time.monotonic() at its start
    terminated: bool = False
    exit_code: int | None = None
    ended: float | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class HandlerKubelet:
    admin: KubeApi
    namespace: str
    kubeconfig: Path  # the handler ServiceAccount's token (tests.e2e.conftest.Release)
    log_dir: Path
    containers: dict[str, Container] = field(default_factory=dict)  # by pod name
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> HandlerKubelet:
        self._thread = threading.Thread(target=self._follow, name=f"kubelet-{self.namespace}", daemon=True)
        self._thread.start()
        return self

    # -- the pod's container, as a process --------------------------------------------------

    def _environment(self, pod: dict[str, Any]) -> dict[str, str]:
        container = pod["spec"]["containers"][0]
        ns = self.namespace
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.admin.get(f"/api/v1/namespaces/{ns}/configmaps/{source['configMapRef']['name']}")
                           .get("data", {}))
            elif "secretRef" in source:
                env.update(self._secret(source["secretRef"]["name"]))
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            elif "secretKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = self._secret(ref["name"])[ref["key"]]
            elif "configMapKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["configMapKeyRef"]
                env[var["name"]] = self.admin.get(f"/api/v1/namespaces/{ns}/configmaps/{ref['name']}")["data"][ref["key"]]
            else:
                raise AssertionError(f"the kubelet of the tests cannot resolve {var}")
        return env

    def _secret(self, name: str) -> dict[str, str]:
        data = self.admin.get(f"/api/v1/namespaces/{self.namespace}/secrets/{name}").get("data", {})
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def _run(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUD_WORKER_", "AWS_", "MINIO_"))}
        env.update(self._environment(pod))
        env.update({"KUBECONFIG": str(self.kubeconfig), "CLOUD_WORKER_HTTP_PORT": "0",
                    "CLOUD_WORKER_LOG_FORMAT": "text"})
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as out:
            process = subprocess.Popen([sys.executable, "-m", "handler.cli", *container.get("args", [])],
                                       cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.containers[name] = Container(name, process, log_path, time.monotonic())
        threading.Thread(target=self._reap, args=(pod,), daemon=True).start()

    def _reap(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        container = self.containers[name]
        code = container.process.wait()
        container.exit_code, container.ended = code, time.monotonic()
        if container.terminated or pod["spec"].get("restartPolicy") != "Never":
            return  # killed with its pod, or a Deployment's: nothing to report
        try:
            self.admin.merge_patch(KubeApi.pods(self.namespace, name),
                                   {"metadata": {"annotations": {EXIT_CODE_ANNOTATION: str(code)}}})
        except ApiError as exc:
            if exc.status != 404:
                raise

    def _terminate(self, name: str) -> None:
        container = self.containers.get(name)
        if container and not container.terminated and container.process.poll() is None:
            container.terminated = True
            container.process.send_signal(signal.SIGTERM)

    # -- following the namespace's pods ---------------------------------------------------------

    def _handle(self, pod: dict[str, Any]) -> None:
        if not pod["spec"]["containers"][0]["image"].startswith(HANDLER_IMAGE):
            return
        name = pod["metadata"]["name"]
        with self._lock:
            if pod["metadata"].get("deletionTimestamp"):
                self._terminate(name)
            elif pod.get("status", {}).get("phase") == "Running" and name not in self.containers:
                self._run(pod)

    def _follow(self) -> None:
        def lost(_exc: Exception) -> None:
            log.exception("the tests' kubelet lost its watch of %s; listing again", self.namespace)

        for kind, pod in self.admin.follow(KubeApi.pods(self.namespace), self._stop, on_error=lost):
            try:
                if kind == "DELETED":
                    self._terminate(pod["metadata"]["name"])
                else:
                    self._handle(pod)
            except Exception:  # noqa: BLE001 - one pod's trouble never stops the kubelet
                log.exception("the tests' kubelet could not handle pod %s", pod["metadata"]["name"])

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(15)
        for container in self.containers.values():
            if container.process.poll() is None:
                container.process.kill()
                container.process.wait(10)
