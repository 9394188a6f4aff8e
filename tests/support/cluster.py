"""The real control plane of the e2e suite (``scripts/cluster.sh``), seen from the tests.

``Cluster.up()`` runs ``scripts/cluster.sh up`` (a no-op when it is up already) and reads
``scripts/cluster.sh env``. What a test needs beyond the API itself lives here: killing and
restarting a component as a crash would, compacting etcd through its own HTTP gateway, and
reading the API server's metrics.
"""

from __future__ import annotations

import base64
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.kubeapi import KubeApi

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "scripts" / "cluster.sh"
TOOLS_BIN = REPO / ".tools" / "bin"


class ClusterUnavailable(RuntimeError):
    """The control plane could not be built or started here (the reason is the message)."""


def _script(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER_SH), *args], capture_output=True, text=True, timeout=timeout)


@dataclass
class Cluster:
    kubeconfig: str
    server: str
    etcd_url: str
    cluster_dir: Path
    admin: KubeApi

    @classmethod
    def up(cls) -> Cluster:
        result = _script("up")
        if result.returncode != 0:
            raise ClusterUnavailable(f"scripts/cluster.sh up failed (exit {result.returncode}):\n"
                                     f"{result.stderr[-4000:]}")
        return cls.running()

    @classmethod
    def running(cls) -> Cluster:
        env = {}
        for line in _script("env", timeout=60).stdout.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0] if value else ""
        kubeconfig = env["KUBECONFIG"]
        return cls(kubeconfig, env["E2E_KUBE_API_SERVER"], env["E2E_ETCD_URL"], Path(env["E2E_CLUSTER_DIR"]),
                   KubeApi.from_kubeconfig(kubeconfig))

    @property
    def ca_file(self) -> str:
        return str(self.cluster_dir / "pki" / "ca.crt")

    def kubectl(self, *args: str, stdin: str | None = None, kubeconfig: str | None = None,
                check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        env = {**os.environ, "PATH": f"{TOOLS_BIN}:{os.environ.get('PATH', '')}"}
        result = subprocess.run(["kubectl", "--kubeconfig", kubeconfig or self.kubeconfig, *args], input=stdin,
                                capture_output=True, text=True, timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    # -- crashes -------------------------------------------------------------------------------

    def kill(self, component: str) -> None:
        """SIGKILL one component (``kube-apiserver``, ``etcd``, ...), as a crash would."""
        result = _script("kill", component, timeout=60)
        assert result.returncode == 0, result.stderr

    def start(self) -> None:
        """Start every component that is not running, and wait until the API server is ready."""
        result = _script("start", timeout=300)
        assert result.returncode == 0, result.stderr

    # -- etcd, through its gRPC gateway (JSON over HTTP, base64 keys) ----------------------------

    def _etcd(self, call: str, body: dict) -> dict:
        response = requests.post(f"{self.etcd_url}/v3/{call}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def etcd_revision(self) -> int:
        return int(self._etcd("kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"])

    def etcd_put(self, key: str, value: str) -> int:
        reply = self._etcd("kv/put", {"key": base64.b64encode(key.encode()).decode(),
                                      "value": base64.b64encode(value.encode()).decode()})
        return int(reply["header"]["revision"])

    def etcd_compact(self, revision: int) -> None:
        self._etcd("kv/compaction", {"revision": str(revision), "physical": True})

    # -- the API server's own metrics ----------------------------------------------------------

    def metrics(self) -> str:
        return str(self.admin.get("/metrics"))

    def versions(self) -> str:
        return _script("versions", timeout=60).stdout


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of metric ``name`` in Prometheus text: (labels, value) pairs."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match["name"] == name:
            found.append((dict(_LABEL.findall(match["labels"] or "")), float(match["value"])))
    return found


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for ls, v in samples(text, name) if all(ls.get(k) == want for k, want in labels.items()))
