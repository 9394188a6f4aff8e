"""Everything we ship passes the real API server's validation (``kubectl apply --dry-run=server``).

Every object ``helm template`` renders, for the defaults with the required values and for each
``ci/*-values.yaml`` (with the KEDA API served, so the KEDA objects render too), and every file
under ``keda/``. KEDA's CRDs come from the KEDA module (``github.com/kedacore/keda/v2``, its
``config/crd/bases``) at the version of scripts/cluster/versions.env, installed by ``up``; the
PodMonitor and PrometheusRule CRDs (the chart's ``monitoring`` objects) come from the
prometheus-operator's module the same way.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.validate import helm_binary

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mstc-cloud-worker"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
KEDA_FILES = sorted((REPO / "keda").glob("*.yaml"))


def render(namespace: str, *flags: str) -> str:
    return subprocess.run([helm_binary(), "template", "mstc-cloud-worker", str(CHART), "--namespace", namespace,
                           "--api-versions", "keda.sh/v1alpha1", *flags],
                          capture_output=True, text=True, timeout=60, check=True).stdout


def dry_run(cluster, namespace: str, manifests: str) -> str:
    """``kubectl apply --dry-run=server`` of every object; those without a namespace go to
    ``namespace``, and any other namespace they name (a chart's separate Jobs namespace) is
    created for the while."""
    objects = [o for o in yaml.safe_load_all(manifests) if o]
    others = sorted({o["metadata"]["namespace"] for o in objects
                     if o["metadata"].get("namespace") not in (None, namespace)})
    for other in others:
        cluster.kubectl("create", "namespace", other)
    try:
        for obj in objects:
            obj["metadata"].setdefault("namespace", namespace)
        result = cluster.kubectl("apply", "--dry-run=server", "--server-side", "--field-manager=e2e", "-f", "-",
                                 stdin=yaml.safe_dump_all(objects), check=False)
    finally:
        for other in others:
            cluster.kubectl("delete", "namespace", other, "--wait=false")
    assert result.returncode == 0, result.stderr
    applied = [line for line in result.stdout.splitlines() if "serverside-applied (server dry run)" in line]
    assert len(applied) == len(objects), result.stdout
    return result.stdout


@pytest.mark.parametrize("values", [pytest.param(None, id="defaults-with-required-values"),
                                    *(pytest.param(p, id=p.name.removesuffix("-values.yaml")) for p in SCENARIOS)])
def test_every_object_the_chart_renders_passes_server_side_validation(cluster, namespace, values):
    flags = ["--values", str(values)] if values else ["--set", "broker.existingSecret=mstc-broker"]
    manifests = render(namespace, *flags)
    out = dry_run(cluster, namespace, manifests)
    kinds = {o["kind"] for o in yaml.safe_load_all(manifests) if o}
    assert {"Deployment", "Role", "RoleBinding", "ConfigMap"} <= kinds or "ScaledJob" in kinds, kinds
    if values is None:  # the defaults, on a cluster that serves KEDA: KEDA's objects too
        assert "scaledobject.keda.sh/" in out and "triggerauthentication.keda.sh/" in out, out


@pytest.mark.parametrize("path", KEDA_FILES, ids=[p.name for p in KEDA_FILES])
def test_every_file_under_keda_passes_server_side_validation(cluster, namespace, path):
    out = dry_run(cluster, namespace, path.read_text())
    assert ".keda.sh/" in out, out


def test_server_side_validation_refuses_what_keda_would(cluster, namespace):
    """The CRDs are really installed: a ScaledObject without scaleTargetRef is refused."""
    bad = ("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: bad}\n"
           "spec: {triggers: [{type: rabbitmq, metadata: {queueName: q}}]}\n")
    result = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=bad, check=False)
    assert result.returncode != 0 and "scaleTargetRef" in result.stderr, result.stderr
