"""The plain KEDA manifests in keda/, for users without Helm.

Every object must pass KEDA's v2.20 CRD schemas in strict mode, count unacked requests,
keep the handler pods inside the restricted Pod Security Standard, and say the same as
the chart renders, so the two ways of installing cannot drift apart. The schemas are the
repository's own extract (tests/support/schemas/keda-v2.20, made by
scripts/extract-keda-schemas.py), and they must really refuse what KEDA would.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from handler.core.config import Settings
from tests.support.validate import (
    KEDA_SCHEMA_DIR,
    REPO_ROOT,
    InvalidManifest,
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
EXTRACT_SCRIPT = REPO_ROOT / "scripts" / "extract-keda-schemas.py"
KEDA_KINDS = ("ScaledObject", "ScaledJob", "TriggerAuthentication", "ClusterTriggerAuthentication")


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
    longest_job = Settings.from_env({}).max_timeout_minutes * 60  # CLOUD_WORKER_MAX_TIMEOUT_MINUTES
    assert spec["jobTargetRef"]["activeDeadlineSeconds"] > longest_job
    pod = spec["jobTargetRef"]["template"]["spec"]
    assert pod["containers"][0]["args"][:2] == ["consume", "--once"]
    assert pod["terminationGracePeriodSeconds"] > 25  # CLOUD_WORKER_SHUTDOWN_GRACE_SECONDS


def test_the_numbers_the_readme_gives_are_the_manifests_and_the_handlers_defaults() -> None:
    """Each number keda/README.md gives for a setting is the one the files or the handler
    use (its `activeDeadlineSeconds` once said 7645 s while the file had 1945)."""
    import re

    readme = (KEDA_DIR / "README.md").read_text()
    (scaled_object,) = [o for o in all_objects() if o["kind"] == "ScaledObject"]
    (scaled_job,) = [o for o in all_objects() if o["kind"] == "ScaledJob"]
    job = scaled_job["spec"]["jobTargetRef"]
    args = job["template"]["spec"]["containers"][0]["args"]
    defaults = Settings.from_env({})

    def said(pattern: str) -> int:
        found = {int(n) for n in re.findall(pattern, readme)}
        assert len(found) == 1, (pattern, found)  # said at least once, and the same each time
        return found.pop()

    assert said(r"`activeDeadlineSeconds` \((\d+) s\)") == job["activeDeadlineSeconds"]
    assert said(r"`cooldownPeriod` \((\d+) s\)") == scaled_object["spec"]["cooldownPeriod"]
    assert said(r"`pollingInterval`: (\d+) s here") == scaled_object["spec"]["pollingInterval"]
    assert said(r"`--idle-exit-seconds` \((\d+)\)") == int(args[args.index("--idle-exit-seconds") + 1])
    assert said(r"`CLOUD_WORKER_SHUTDOWN_GRACE_SECONDS` \((\d+)\)") == defaults.shutdown_grace_seconds
    assert said(r"`CLOUD_WORKER_MAX_TIMEOUT_MINUTES`, (\d+)\)") == defaults.max_timeout_minutes
    assert said(r"from 0 to (\d+) pods") == scaled_object["spec"]["maxReplicaCount"]
    kept = re.search(r"keep (\d+)\s+finished and (\d+) failed handler Jobs", readme)
    assert kept and (int(kept[1]), int(kept[2])) == (scaled_job["spec"]["successfulJobsHistoryLimit"],
                                                     scaled_job["spec"]["failedJobsHistoryLimit"])


def test_the_scaled_jobs_deadline_is_the_sum_its_comment_gives() -> None:
    """The comment above activeDeadlineSeconds adds up the waits it covers; the sum is the value."""
    import re

    text = (KEDA_DIR / "scaledjob.yaml").read_text()
    comment = re.search(r"((?:\s*#.*\n)+)\s*activeDeadlineSeconds: (\d+)", text)
    assert comment
    longest_job = Settings.from_env({}).max_timeout_minutes * 60
    assert f"{longest_job:g} s" in comment[1]
    waits = [int(n) for n in re.findall(r"\((\d+)\)", comment[1])]
    slack = int(re.search(r"(\d+) s of slack", comment[1])[1])
    assert longest_job + sum(waits) + slack == int(comment[2])


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


# --- the KEDA schemas the tests use ---------------------------------------------------


def test_keda_schemas_are_a_compact_extract_inside_the_repository() -> None:
    assert KEDA_SCHEMA_DIR.is_relative_to(REPO_ROOT)
    files = sorted(KEDA_SCHEMA_DIR.glob("*.json"))
    assert [p.name for p in files] == sorted(f"{kind.lower()}.json" for kind in KEDA_KINDS)
    for path in files:
        extract = json.loads(path.read_text())
        assert (extract["keda"], extract["group"]) == ("v2.20", "keda.sh"), path.name
        assert path.name == f"{extract['kind'].lower()}.json"
        assert extract["source"]["file"].startswith("keda.sh_") and len(extract["source"]["sha256"]) == 64
        assert list(extract["versions"]) == ["v1alpha1"], path.name
        assert '"description":' not in path.read_text(), "descriptions belong to the CRDs, not the extract"
    assert sum(p.stat().st_size for p in files) < 150_000


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        pytest.param(
            {"kind": "ScaledObject", "spec": {"scaleTargetRef": {"name": "w"}, "triggers": [], "bogus": 1}},
            "'bogus' was unexpected",
            id="unknown-field",
        ),
        pytest.param(
            {"kind": "ScaledObject", "spec": {"triggers": []}}, "'scaleTargetRef' is a required", id="missing"
        ),
        pytest.param(
            {"kind": "ScaledJob", "spec": {"jobTargetRef": {"template": {}}, "triggers": [], "pollingInterval": "x"}},
            "'x' is not of type 'integer'",
            id="wrong-type",
        ),
        pytest.param({"kind": "TriggerAuthentication", "spec": {"secretTargetRef": [{}]}}, "required", id="auth"),
        pytest.param({"kind": "ScaledQueue", "spec": {}}, "no KEDA v2.20 CRD serves this kind", id="unknown-kind"),
    ],
)
def test_keda_schemas_refuse_what_keda_would(obj: dict, message: str) -> None:
    manifest = {"apiVersion": KEDA_API, "metadata": {"name": "w"}, **obj}
    with pytest.raises(InvalidManifest, match=message):
        validate_manifest(manifest)


def _crd(kind: str, versions: list[dict]) -> dict:
    plural = kind.lower() + "s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.keda.sh"},
        "spec": {
            "group": "keda.sh",
            "names": {"kind": kind, "plural": plural},
            "scope": "Namespaced",
            "versions": versions,
        },
    }


def _version(name: str, served: bool, schema: dict) -> dict:
    return {"name": name, "served": served, "storage": served, "schema": {"openAPIV3Schema": schema}}


def test_extract_script_keeps_each_served_schema_whole_but_its_descriptions(tmp_path: Path) -> None:
    schema = {
        "description": "a ScaledObject",
        "type": "object",
        "properties": {
            "spec": {
                "description": "drop me",
                "type": "object",
                "required": ["description"],
                "properties": {
                    "description": {"type": "string", "description": "a property named description stays"},
                    "items": {"type": "array", "items": {"type": "string", "description": "drop me"}},
                    "mode": {"type": "string", "default": "x", "enum": ["x", "y"], "example": {"description": "kept"}},
                },
                "additionalProperties": {"description": "drop me", "type": "integer"},
            }
        },
    }
    crds = tmp_path / "crds"
    crds.mkdir()
    (crds / "keda.sh_scaledobjects.yaml").write_text(
        yaml.safe_dump_all(
            [_crd("ScaledObject", [_version("v1alpha1", True, schema), _version("v1alpha0", False, {"type": "x"})])]
        )
    )
    (crds / "keda.sh_others.yaml").write_text(
        yaml.safe_dump_all(
            [_crd(kind, [_version("v1alpha1", True, {"type": "object"})]) for kind in KEDA_KINDS[1:]]
            + [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "keda"}}]
        )
    )
    out = tmp_path / "out"

    def run(*args: str | Path) -> subprocess.CompletedProcess:
        command = [sys.executable, EXTRACT_SCRIPT, crds, "--out", out, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    result = run()
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{kind.lower()}.json" for kind in KEDA_KINDS)
    extract = json.loads((out / "scaledobject.json").read_text())
    assert extract["versions"] == {
        "v1alpha1": {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["description"],
                    "properties": {
                        "description": {"type": "string"},
                        "items": {"type": "array", "items": {"type": "string"}},
                        "mode": {
                            "type": "string",
                            "default": "x",
                            "enum": ["x", "y"],
                            "example": {"description": "kept"},
                        },
                    },
                    "additionalProperties": {"type": "integer"},
                }
            },
        }
    }
    assert (extract["kind"], extract["source"]["file"]) == ("ScaledObject", "keda.sh_scaledobjects.yaml")

    assert run("--check").returncode == 0
    (out / "scaledjob.json").write_text("{}\n")
    stale = run("--check")
    assert stale.returncode == 1 and "scaledjob.json" in stale.stderr

    (crds / "keda.sh_others.yaml").unlink()
    missing = run()
    assert missing.returncode != 0 and "no CRD for ScaledJob" in missing.stderr


def test_extract_script_names_the_keda_version_it_extracts() -> None:
    text = EXTRACT_SCRIPT.read_text()
    assert "KEDA v2.20" in text.split('"""')[1] and 'KEDA_VERSION = "v2.20"' in text
    assert KEDA_SCHEMA_DIR.name == "keda-v2.20"
