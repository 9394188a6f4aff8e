"""The plain KEDA manifests in keda/, for users without Helm.

Every object must pass KEDA's v2.20 CRD schemas in strict mode, count unacked requests,
keep the handler pods inside the restricted Pod Security Standard, and say the same as
the chart renders, so the two ways of installing cannot drift apart.
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.validate import (
    REPO_ROOT,
    describe,
    helm_binary,
    load_manifests,
    pod_specs,
    restricted_pss_violations,
    validate_manifest,
)

KEDA_DIR = REPO_ROOT / "keda"
MANIFESTS = sorted(KEDA_DIR.glob("*.yaml"))
CHART = REPO_ROOT / "charts" / "mstc-cloud-worker"
KEDA_API = "keda.sh/v1alpha1"


def objects_in(path: Path) -> list[dict]:
    return load_manifests(path.read_text())


def all_objects() -> list[dict]:
    return [obj for path in MANIFESTS for obj in objects_in(path)]


def test_keda_folder_offers_a_scaled_object_and_a_scaled_job() -> None:
    assert {p.name for p in MANIFESTS} >= {"scaledobject.yaml", "scaledjob.yaml"}
    assert (KEDA_DIR / "README.md").is_file()


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in MANIFESTS])
def test_every_object_in_the_file_passes_the_keda_schemas(path: Path) -> None:
    objects = objects_in(path)
    assert objects
    for obj in objects:
        validate_manifest(obj)


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in MANIFESTS])
def test_each_file_brings_the_trigger_authentication_its_triggers_use(path: Path) -> None:
    objects = objects_in(path)
    auths = {o["metadata"]["name"] for o in objects if o["kind"] == "TriggerAuthentication"}
    for obj in objects:
        for trigger in obj["spec"].get("triggers", []):
            assert trigger["authenticationRef"]["name"] in auths, describe(obj)


def test_triggers_count_unacked_requests_through_the_management_api() -> None:
    triggers = [t for o in all_objects() for t in o["spec"].get("triggers", [])]
    assert triggers
    for trigger in triggers:
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["protocol"] == "http"
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["metadata"].get("excludeUnacknowledged", "false") == "false"
        assert "host" not in trigger["metadata"], "credentials belong in the TriggerAuthentication's Secret"


def test_scaled_object_scales_the_consumers_to_zero() -> None:
    (scaled,) = [o for o in all_objects() if o["kind"] == "ScaledObject"]
    assert scaled["spec"]["minReplicaCount"] == 0
    assert scaled["spec"]["scaleTargetRef"]["name"] == "mstc-cloud-worker"


def test_scaled_job_pod_meets_the_restricted_pod_security_standard() -> None:
    (scaled,) = [o for o in all_objects() if o["kind"] == "ScaledJob"]
    for where, spec in pod_specs(scaled):
        assert restricted_pss_violations(spec) == [], where


def test_scaled_job_outlives_the_longest_job_and_rolls_out_gradually() -> None:
    (scaled,) = [o for o in all_objects() if o["kind"] == "ScaledJob"]
    spec = scaled["spec"]
    assert spec["rollout"]["strategy"] == "gradual"
    assert spec["jobTargetRef"]["activeDeadlineSeconds"] > 120 * 60  # CLOUD_WORKER_MAX_TIMEOUT_MINUTES
    pod = spec["jobTargetRef"]["template"]["spec"]
    assert pod["containers"][0]["args"][:2] == ["consume", "--once"]
    assert pod["terminationGracePeriodSeconds"] > 25  # CLOUD_WORKER_SHUTDOWN_GRACE_SECONDS


def _chart_objects(values: str, home: Path) -> list[dict]:
    env = {**os.environ, **{f"HELM_{d}_HOME": str(home / d.lower()) for d in ("CACHE", "CONFIG", "DATA")}}
    result = subprocess.run(
        [
            helm_binary(),
            "template",
            "mstc-cloud-worker",
            CHART,
            "--values",
            CHART / "ci" / values,
            "--api-versions",
            KEDA_API,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return load_manifests(result.stdout)


SCALED_OBJECT_FIELDS = ["scaleTargetRef", "minReplicaCount", "triggers"]
SCALED_JOB_FIELDS = ["rollout", "scalingStrategy", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"]


@pytest.mark.parametrize(
    ("path", "values", "kind", "fields"),
    [
        pytest.param(
            "scaledobject.yaml", "default-values.yaml", "ScaledObject", SCALED_OBJECT_FIELDS, id="scaledobject"
        ),
        pytest.param(
            "scaledjob.yaml",
            "scaledjob-values.yaml",
            "ScaledJob",
            [*SCALED_JOB_FIELDS, "jobTargetRef", "triggers"],
            id="scaledjob",
        ),
    ],
)
def test_plain_manifests_say_what_the_chart_renders(
    path: str, values: str, kind: str, fields: list[str], tmp_path: Path
) -> None:
    def specs(objects: list[dict]) -> dict[str, dict]:
        out = {}
        for obj in objects:
            if obj["metadata"]["name"] == "mstc-cloud-worker" and "spec" in obj:
                spec = copy.deepcopy(obj["spec"])
                # Pod labels and the chart's config checksum differ by design.
                spec.get("jobTargetRef", {}).get("template", {}).pop("metadata", None)
                out[obj["kind"]] = spec
        return out

    plain, chart = specs(objects_in(KEDA_DIR / path)), specs(_chart_objects(values, tmp_path))
    assert plain["TriggerAuthentication"] == chart["TriggerAuthentication"]
    for field in fields:
        assert plain[kind][field] == chart[kind][field], field
