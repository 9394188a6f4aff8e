"""The Helm chart, proven without a cluster.

Every ``ci/*-values.yaml`` scenario is linted and rendered by a real helm, both as on a
cluster without KEDA and as on one that serves ``keda.sh/v1alpha1``; every rendered
object must pass the Kubernetes and KEDA schemas in strict mode, the handler's pods the
restricted Pod Security Standard, and the Role must grant exactly the handler's API calls.
A missing required value fails ``helm lint`` itself (values.schema.json), not only the
render. The install notes' test pod is a valid restricted Pod wired to the release's
Secrets, and the chart's README (``helm show readme``) lists every value.
The dev charts (RabbitMQ, MinIO) are held to the same schemas.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from handler.cli import build_parser
from handler.core.config import Settings, env_name, setting_fields
from handler.core.manifest import build_job
from handler.core.messages import Message
from handler.core.request import parse_request
from tests.support.charts import CHART, KEDA_API, NAMESPACE, RELEASE, Helm, Render
from tests.support.validate import (
    HANDLER_API_CALLS,
    REPO_ROOT,
    InvalidManifest,
    describe,
    pod_specs,
    restricted_pss_violations,
    role_grants,
    validate_manifest,
)

DEV_CHARTS = sorted(p.parent for p in (REPO_ROOT / "charts" / "dev").glob("*/Chart.yaml"))
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
DEFAULT = CHART / "ci" / "default-values.yaml"
HANDLER_KINDS = {"Deployment", "ScaledJob"}

def scenario_id(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


SCENARIO_PARAMS = [pytest.param(p, id=scenario_id(p)) for p in SCENARIOS]
RENDER_PARAMS = [
    pytest.param(p, keda, id=f"{scenario_id(p)}-{'with' if keda else 'without'}-keda-crds")
    for p in SCENARIOS
    for keda in (False, True)
]


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {[describe(o) for o in found]}"
    return found[0]


def handler_pods(objects: list[dict]) -> list[tuple[str, dict]]:
    return [ps for o in objects if o["kind"] in HANDLER_KINDS for ps in pod_specs(o)]


def settings_configmap(objects: list[dict]) -> dict:
    """The handler's settings (the ConfigMap its pods read with envFrom: not the Job profiles'
    file, nor the Grafana dashboard's)."""
    found = [c for c in of_kind(objects, "ConfigMap")
             if not c["metadata"]["name"].endswith(("-profiles", "-dashboard"))]
    assert len(found) == 1, f"expected one settings ConfigMap, got {[describe(o) for o in found]}"
    return found[0]


def settings(objects: list[dict]) -> dict[str, str]:
    return settings_configmap(objects)["data"]


def profile_queues(objects: list[dict]) -> dict[str, str]:
    """{queue: maxInFlight} of the Job profiles' lanes, from the rendered profiles file."""
    found = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-profiles")]
    if not found:
        return {}
    profiles = yaml.safe_load(found[0]["data"]["profiles.yaml"])["profiles"]
    queue = settings(objects)["CLOUD_WORKER_QUEUE"]
    return {f"{queue}.profile.{name}": str(p["maxInFlight"]) for name, p in profiles.items() if (p or {}).get(
        "maxInFlight")}


def test_there_are_ci_scenarios_for_defaults_scaled_jobs_http_and_everything() -> None:
    assert {scenario_id(p) for p in SCENARIOS} >= {"default", "scaledjob", "http", "everything"}


@pytest.mark.parametrize("values", SCENARIO_PARAMS)
def test_chart_passes_strict_helm_lint(helm: Helm, values: Path) -> None:
    result = helm.run("lint", CHART, "--strict", "--values", values)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("values", "keda"), RENDER_PARAMS)
def test_every_rendered_object_passes_the_kubernetes_and_keda_schemas(render: Render, values: Path, keda: bool) -> None:
    objects = render(values, keda=keda)
    assert objects, "nothing rendered"
    problems = []
    for obj in objects:
        try:
            validate_manifest(obj)
        except InvalidManifest as exc:
            problems.append(str(exc))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("values", "keda"), RENDER_PARAMS)
def test_handler_pods_meet_the_restricted_pod_security_standard(render: Render, values: Path, keda: bool) -> None:
    pods = handler_pods(render(values, keda=keda))
    assert pods, "no handler pod rendered"
    problems = {where: violations for where, spec in pods if (violations := restricted_pss_violations(spec))}
    assert not problems


@pytest.mark.parametrize(("values", "keda"), RENDER_PARAMS)
def test_handler_pods_run_read_only_with_a_writable_tmp_and_an_api_token(
    render: Render, values: Path, keda: bool
) -> None:
    for where, spec in handler_pods(render(values, keda=keda)):
        assert spec["automountServiceAccountToken"] is True, where
        (container,) = spec["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
        tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        volume = next(v for v in spec["volumes"] if v["name"] == tmp["name"])
        assert "emptyDir" in volume, where


@pytest.mark.parametrize(("values", "keda"), RENDER_PARAMS)
def test_termination_grace_period_outlasts_the_handlers_shutdown_grace(
    render: Render, values: Path, keda: bool
) -> None:
    objects = render(values, keda=keda)
    shutdown_grace = float(settings(objects)["CLOUD_WORKER_SHUTDOWN_GRACE_SECONDS"])
    for where, spec in handler_pods(objects):
        assert spec["terminationGracePeriodSeconds"] > shutdown_grace, where


@pytest.mark.parametrize(("values", "keda"), RENDER_PARAMS)
def test_handler_pods_probe_healthz_and_readyz_on_the_configured_http_port(
    render: Render, values: Path, keda: bool
) -> None:
    objects = render(values, keda=keda)
    port = int(settings(objects)["CLOUD_WORKER_HTTP_PORT"])
    for obj in (o for o in objects if o["kind"] in HANDLER_KINDS):
        # The HTTP mode answers its probes on a listener of their own (busy request threads never delay them).
        serves = obj["metadata"]["labels"].get("app.kubernetes.io/component") == "http"
        probe_port = "probes" if serves else "http"
        for where, spec in pod_specs(obj):
            (container,) = spec["containers"]
            ports = [{"name": "http", "containerPort": port, "protocol": "TCP"}]
            if serves:
                env = {e["name"]: e.get("value") for e in container["env"]}
                ports.append({"name": "probes", "containerPort": int(env["CLOUD_WORKER_HTTP_PROBE_PORT"]),
                              "protocol": "TCP"})
            assert container["ports"] == ports, where
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": probe_port}, where
            if obj["kind"] == "Deployment":  # a Job's pod is in no Service: readiness means nothing there
                assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": probe_port}, where


@pytest.mark.parametrize(("values", "keda"), RENDER_PARAMS)
def test_handler_reads_its_amqp_url_from_a_secret_and_its_settings_from_the_configmap(
    render: Render, values: Path, keda: bool
) -> None:
    objects = render(values, keda=keda)
    configmap = settings_configmap(objects)
    # The Jobs' bucket Secret, when there is one, gives the handler its bucket access too (the Job's log).
    bucket = configmap["data"].get("CLOUD_WORKER_JOB_ENV_SECRET")
    same_namespace = configmap["data"]["CLOUD_WORKER_NAMESPACE"] == NAMESPACE
    expected = [{"configMapRef": {"name": configmap["metadata"]["name"]}}]
    if bucket and same_namespace:
        expected.append({"secretRef": {"name": bucket}})
    for where, spec in handler_pods(objects):
        (container,) = spec["containers"]
        assert container["envFrom"] == expected, where
        amqp = next(e for e in container["env"] if e["name"] == "CLOUD_WORKER_AMQP_URL")
        assert set(amqp) == {"name", "valueFrom"} and "secretKeyRef" in amqp["valueFrom"], where


@pytest.mark.parametrize("values", SCENARIO_PARAMS)
def test_handler_accepts_every_setting_the_configmap_gives_it(render: Render, values: Path) -> None:
    objects = render(values, keda=True)
    environ = {**settings(objects), "CLOUD_WORKER_AMQP_URL": "amqp://user:secret@rabbitmq:5672/%2F"}
    known = {env_name(f) for f in setting_fields()}
    assert set(environ) <= known, f"the handler would refuse {sorted(set(environ) - known)}"
    loaded = Settings.from_env(environ)  # parses every value; raises on any it cannot
    assert loaded.namespace == environ["CLOUD_WORKER_NAMESPACE"]
    assert loaded.concurrency == int(environ["CLOUD_WORKER_CONCURRENCY"])


@pytest.mark.parametrize("values", SCENARIO_PARAMS)
def test_role_grants_exactly_the_handlers_api_calls_and_nothing_cluster_wide(render: Render, values: Path) -> None:
    objects = render(values, keda=True)
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    role = one(objects, "Role")
    assert role_grants(role) == HANDLER_API_CALLS
    assert not any(rule.get("resourceNames") or rule.get("nonResourceURLs") for rule in role["rules"])
    binding = one(objects, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert (
        binding["metadata"]["namespace"] == role["metadata"]["namespace"] == settings(objects)["CLOUD_WORKER_NAMESPACE"]
    )
    accounts = {spec["serviceAccountName"] for _, spec in handler_pods(objects)}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE} for name in accounts
    ]


def test_jobs_run_under_their_own_token_less_service_account(render: Render) -> None:
    objects = render(DEFAULT)
    job_account = settings(objects)["CLOUD_WORKER_JOB_SERVICE_ACCOUNT"]
    account = next(sa for sa in of_kind(objects, "ServiceAccount") if sa["metadata"]["name"] == job_account)
    assert account["automountServiceAccountToken"] is False
    assert job_account not in {spec["serviceAccountName"] for _, spec in handler_pods(objects)}


def test_a_separate_job_namespace_gets_the_role_the_job_account_and_the_bucket_secret(render: Render) -> None:
    objects = render(CHART / "ci" / "everything-values.yaml", keda=True)
    job_namespace = settings(objects)["CLOUD_WORKER_NAMESPACE"]
    assert job_namespace != NAMESPACE
    bucket_secret = settings(objects)["CLOUD_WORKER_JOB_ENV_SECRET"]
    in_job_namespace = {
        (o["kind"], o["metadata"]["name"]) for o in objects if o["metadata"].get("namespace") == job_namespace
    }
    assert {"Role", "RoleBinding"} <= {kind for kind, _ in in_job_namespace}
    assert ("ServiceAccount", settings(objects)["CLOUD_WORKER_JOB_SERVICE_ACCOUNT"]) in in_job_namespace
    assert ("Secret", bucket_secret) in in_job_namespace


@pytest.mark.parametrize("values", SCENARIO_PARAMS)
def test_keda_triggers_count_unacked_requests_through_the_management_api(render: Render, values: Path) -> None:
    objects = render(values, keda=True)
    scalers = of_kind(objects, "ScaledObject") + of_kind(objects, "ScaledJob")
    auths = {a["metadata"]["name"]: a for a in of_kind(objects, "TriggerAuthentication")}
    for scaler in scalers:
        # The work queue, then each Job profile lane's queue: every queue requests wait in.
        queues = [t["metadata"]["queueName"] for t in scaler["spec"]["triggers"]]
        assert queues == [settings(objects)["CLOUD_WORKER_QUEUE"], *sorted(profile_queues(objects))]
        for trigger in scaler["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "rabbitmq"
            assert meta["protocol"] == "http"
            assert meta["mode"] == "QueueLength"
            assert meta.get("excludeUnacknowledged", "false") == "false"
            auth = auths[trigger["authenticationRef"]["name"]]
            assert [ref["parameter"] for ref in auth["spec"]["secretTargetRef"]] == ["host"]


@pytest.mark.parametrize("values", SCENARIO_PARAMS)
def test_scaled_object_scales_the_consumers_to_zero_at_one_pod_per_concurrency(render: Render, values: Path) -> None:
    objects = render(values, keda=True)
    for scaled in of_kind(objects, "ScaledObject"):
        consumer = next(
            d
            for d in of_kind(objects, "Deployment")
            if d["metadata"]["name"] == scaled["spec"]["scaleTargetRef"]["name"]
        )
        assert "replicas" not in consumer["spec"], "KEDA owns the replica count"
        assert scaled["spec"]["minReplicaCount"] == 0
        trigger, *lanes = scaled["spec"]["triggers"]
        assert trigger["metadata"]["value"] == settings(objects)["CLOUD_WORKER_CONCURRENCY"]
        # A pod takes maxInFlight requests of each profile lane besides `concurrency` others.
        assert {t["metadata"]["queueName"]: t["metadata"]["value"] for t in lanes} == profile_queues(objects)


def test_scaled_job_mode_runs_one_handler_per_request_that_outlives_the_longest_job(render: Render) -> None:
    objects = render(CHART / "ci" / "scaledjob-values.yaml", keda=True)
    assert not of_kind(objects, "Deployment") and not of_kind(objects, "ScaledObject")
    spec = one(objects, "ScaledJob")["spec"]
    config = settings(objects)
    assert spec["rollout"]["strategy"] == "gradual"
    assert 0 < spec["successfulJobsHistoryLimit"] <= 10 and 0 < spec["failedJobsHistoryLimit"] <= 10
    longest_job = float(config["CLOUD_WORKER_MAX_TIMEOUT_MINUTES"]) * 60
    pull_grace = float(config["CLOUD_WORKER_IMAGE_PULL_GRACE_SECONDS"])
    assert spec["jobTargetRef"]["activeDeadlineSeconds"] > longest_job + pull_grace
    pod = spec["jobTargetRef"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["args"][:2] == ["consume", "--once"]
    (trigger,) = spec["triggers"]
    assert trigger["metadata"]["value"] == "1"


def test_scaled_job_deadline_follows_the_maximum_job_timeout(render: Render) -> None:
    objects = render(CHART / "ci" / "scaledjob-values.yaml", "--set", "config.maxTimeoutMinutes=600", keda=True)
    assert one(objects, "ScaledJob")["spec"]["jobTargetRef"]["activeDeadlineSeconds"] > 600 * 60


def test_termination_grace_period_follows_the_shutdown_grace(render: Render) -> None:
    objects = render(DEFAULT, "--set", "config.shutdownGraceSeconds=100")
    assert settings(objects)["CLOUD_WORKER_SHUTDOWN_GRACE_SECONDS"] == "100"
    assert [spec["terminationGracePeriodSeconds"] for _, spec in handler_pods(objects)] == [105]


def test_keda_objects_appear_when_the_cluster_serves_keda_unless_forced_either_way(render: Render) -> None:
    keda_kinds = {"ScaledObject", "ScaledJob", "TriggerAuthentication"}

    def kinds(*flags: str, keda: bool) -> set[str]:
        return {o["kind"] for o in render(DEFAULT, *flags, keda=keda)} & keda_kinds

    assert kinds(keda=False) == set()
    assert kinds(keda=True) == {"ScaledObject", "TriggerAuthentication"}
    assert kinds("--set", "keda.enabled=false", keda=True) == set()
    assert kinds("--set", "keda.enabled=true", keda=False) == {"ScaledObject", "TriggerAuthentication"}
    consumer = next(d for d in render(DEFAULT, keda=False) if d["kind"] == "Deployment")
    assert consumer["spec"]["replicas"] == 1, "without KEDA the chart sets the replica count"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(
            ["--set", "broker.existingSecret=b", "--set", "mode=scaledJob"], "needs KEDA", id="scaledjob-without-keda"
        ),
        pytest.param([], "/broker/existingSecret", id="no-broker-secret"),
        pytest.param(["--set", "broker.existingSecret=b", "--set", "bogus=1"], "bogus", id="unknown-value"),
        pytest.param(
            ["--set", "broker.existingSecret=b", "--set", "config.concurrency=0"], "concurrency", id="zero-concurrency"
        ),
        pytest.param(
            ["--set", "broker.amqpUrl=amqp://u:p@h/", "--set", "keda.enabled=true"],
            "/broker/managementUrl",
            id="dev-secret-without-management-url",
        ),
        pytest.param(
            ["--set", "broker.existingSecret=b", "--set", "mode=scaledJob", "--set", "keda.enabled=false"],
            "/keda/enabled",
            id="scaledjob-with-keda-off",
        ),
        pytest.param(
            [
                "--set",
                "broker.existingSecret=b",
                "--set",
                "mode=scaledJob",
                "--set",
                "keda.enabled=true",
                "--set",
                "keda.scaledJob.activeDeadlineSeconds=60",
            ],
            "activeDeadlineSeconds",
            id="scaledjob-deadline-below-max-timeout",
        ),
    ],
)
def test_chart_refuses_values_that_cannot_work_with_a_clear_message(helm: Helm, flags: list[str], message: str) -> None:
    result = helm.run("template", RELEASE, CHART, "--namespace", NAMESPACE, *flags)
    assert result.returncode != 0, result.stdout
    assert message in result.stderr


#: Values a release cannot work without, each missing in turn: (flags, what the error names).
MISSING_REQUIRED_VALUES = [
    pytest.param([], ["/broker/existingSecret", "/broker/amqpUrl"], id="no-broker-secret"),
    pytest.param(["--set", "bucket.existingSecret=mstc-bucket"], ["/broker/existingSecret"], id="bucket-but-no-broker"),
    pytest.param(
        ["--set", "broker.amqpUrl=amqp://u:p@rabbitmq/", "--set", "keda.enabled=true"],
        ["/broker/managementUrl"],
        id="dev-broker-secret-with-keda-but-no-management-url",
    ),
    pytest.param(
        ["--set", "broker.existingSecret=b", "--set", "mode=scaledJob", "--set", "keda.enabled=false"],
        ["/keda/enabled"],
        id="scaledjob-with-keda-off",
    ),
]


@pytest.mark.parametrize(("flags", "named"), MISSING_REQUIRED_VALUES)
def test_helm_lint_fails_when_a_required_value_is_missing(helm: Helm, flags: list[str], named: list[str]) -> None:
    """An ERROR and a non-zero exit, without --strict: `fail` in a template is only INFO to lint."""
    result = helm.run("lint", CHART, *flags)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "[ERROR] values.yaml" in output and "1 chart(s) failed" in output, output
    for name in named:
        assert name in output


@pytest.mark.parametrize(("flags", "named"), MISSING_REQUIRED_VALUES)
def test_helm_template_fails_when_a_required_value_is_missing(helm: Helm, flags: list[str], named: list[str]) -> None:
    result = helm.run("template", RELEASE, CHART, "--namespace", NAMESPACE, "--api-versions", KEDA_API, *flags)
    assert result.returncode != 0, result.stdout
    assert "don't meet the specifications of the schema" in result.stderr
    for name in named:
        assert name in result.stderr


def test_extra_settings_accept_exactly_the_handlers_settings_the_chart_does_not_set_itself() -> None:
    """values.schema.json lists the CLOUD_WORKER_* names config.extraSettings may hold: every
    setting the handler knows, but those a template sets from other values (a duplicate key)
    and those holding credentials (a ConfigMap is no place for them)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = schema["properties"]["config"]["properties"]["extraSettings"]["propertyNames"]["enum"]
    managed = {name for template in (CHART / "templates").iterdir()
               for name in re.findall(r"\b(CLOUD_WORKER_[A-Z0-9_]+)\b", template.read_text())}
    credentials = {env_name(f) for f in setting_fields() if f.metadata.get("secret") or f.name == "amqp_url"}
    known = {env_name(f) for f in setting_fields() if env_name(f).startswith("CLOUD_WORKER_")}
    expected = sorted(known - managed - credentials)
    assert allowed == expected, f"missing: {sorted(set(expected) - set(allowed))}, " \
                                f"not to be allowed: {sorted(set(allowed) - set(expected))}"


@pytest.mark.parametrize("name", ["CLOUD_WORKER_CONCURENCY", "CLOUD_WORKER_CONCURRENCY", "CLOUD_WORKER_HTTP_TOKEN",
                                  "CLOUD_WORKER_AMQP_URL"])
def test_helm_refuses_an_extra_setting_that_is_a_typo_the_charts_own_or_a_credential(helm: Helm, name: str) -> None:
    result = helm.run("template", RELEASE, CHART, "--namespace", NAMESPACE, "--set", "broker.existingSecret=b",
                      "--set", f"config.extraSettings.{name}=4")
    assert result.returncode != 0
    assert f"invalid propertyName '{name}'" in result.stderr


def test_a_known_extra_setting_reaches_the_configmap(render: Render) -> None:
    objects = render(None, "--set", "broker.existingSecret=b", "--set",
                     "config.extraSettings.CLOUD_WORKER_WATCH_STALL_SECONDS=45")
    assert settings(objects)["CLOUD_WORKER_WATCH_STALL_SECONDS"] == "45"


def test_every_scenario_sets_the_broker_secret() -> None:
    for path in SCENARIOS:
        broker = yaml.safe_load(path.read_text()).get("broker") or {}
        assert broker.get("existingSecret") or broker.get("amqpUrl"), path.name


def test_every_value_has_a_helm_docs_comment() -> None:
    assert undocumented_values((CHART / "values.yaml").read_text()) == []


def test_values_schema_accepts_each_scenario_and_the_defaults_once_a_broker_secret_is_named() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) - {"global"} == set(defaults), "schema and values.yaml list different keys"
    for values in [merged(defaults, yaml.safe_load(p.read_text())) for p in SCENARIOS]:
        jsonschema.validate(values, schema)
    for broker in ({"existingSecret": "mstc-broker"}, {"amqpUrl": "amqp://u:p@rabbitmq/"}):
        jsonschema.validate(merged(defaults, {"broker": broker}), schema)
    # The defaults alone name no broker Secret: the one required value.
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(defaults))
    assert [list(e.absolute_path) for e in errors] == [["broker"]]


def merged(base: dict, override: dict) -> dict:
    """Helm's coalescing of a values file over the defaults: maps merge, the rest replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.mark.parametrize("chart", [pytest.param(c, id=c.name) for c in DEV_CHARTS])
def test_dev_chart_lints_and_renders_valid_restricted_manifests(helm: Helm, render: Render, chart: Path) -> None:
    result = helm.run("lint", chart, "--strict")
    assert result.returncode == 0, result.stdout + result.stderr
    objects = render(chart=chart)
    for obj in objects:
        validate_manifest(obj)
        for where, spec in pod_specs(obj):
            assert restricted_pss_violations(spec) == [], where


def test_dev_rabbitmq_serves_the_management_api_and_hands_its_urls_to_the_worker(render: Render) -> None:
    objects = render(chart=REPO_ROOT / "charts" / "dev" / "rabbitmq")
    (service,) = of_kind(objects, "Service")
    assert {p["port"] for p in service["spec"]["ports"]} == {5672, 15672}
    broker = next(s for s in of_kind(objects, "Secret") if {"amqp-url", "management-url"} <= set(s["stringData"]))
    assert (
        broker["stringData"]["management-url"].startswith("http://")
        and ":15672/" in broker["stringData"]["management-url"]
    )
    config = "".join(s["stringData"].get("20-mstc.conf", "") for s in of_kind(objects, "Secret"))
    timeout_ms = int(re.search(r"consumer_timeout = (\d+)", config)[1])
    assert timeout_ms > 120 * 60 * 1000, "consumer_timeout must exceed the handler's longest job"


# --- what users read: the chart's README and the install notes -----------------------

README_SECTIONS = [
    "What it installs",
    "Prerequisites",
    "Quick start",
    "How KEDA scaling works",
    "Security defaults",
    "Values",
]


def test_helm_show_readme_prints_the_chart_readme_with_what_users_need(helm: Helm) -> None:
    readme = (CHART / "README.md").read_text()
    shown = helm.run("show", "readme", CHART)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == readme.strip()
    assert re.findall(r"^## (.+)$", readme, re.MULTILINE) == README_SECTIONS
    required = readme.partition("### Required values")[2].partition("\n## ")[0]
    for param in MISSING_REQUIRED_VALUES:
        for name in param.values[1]:
            assert f"`{name.strip('/').replace('/', '.')}" in required, name


def test_readme_quick_start_installs_as_written(render: Render) -> None:
    readme = (CHART / "README.md").read_text()
    quick_start = readme.partition("## Quick start")[2].partition("\n## ")[0]
    commands = quick_start.replace("\\\n", " ").splitlines()  # shell continuation lines joined
    (install,) = [" ".join(c.split()) for c in commands if c.startswith("helm install ")]
    assert install.startswith(f"helm install {RELEASE} charts/mstc-cloud-worker -n {NAMESPACE} ")
    flags = re.findall(r"--set (\S+)", install)
    assert "broker.existingSecret=mstc-broker" in flags
    for keda in (False, True):
        objects = render(None, *[arg for flag in flags for arg in ("--set", flag)], keda=keda)
        assert of_kind(objects, "Deployment")
    assert "create secret generic mstc-broker" in quick_start and "create secret generic mstc-bucket" in quick_start
    # The image is built and pushed first, as the one the release pulls (it is published nowhere).
    (built,) = re.findall(r"^docker build .*-t (\S+) \.$", quick_start, re.M)
    (pushed,) = re.findall(r"^docker push (\S+)$", quick_start, re.M)
    (container,) = [c for _, spec in handler_pods(render(None, *[a for f in flags for a in ("--set", f)]))
                    for c in spec["containers"]]
    assert built == pushed == container["image"]
    assert quick_start.index("docker push") < quick_start.index("helm install")


def test_the_http_example_of_the_install_guide_sends_the_token_the_chart_generates(render: Render) -> None:
    """docs/kubernetes.md, "Other modes": its curl carries the bearer token read from the
    Secret and key the chart renders, through the Service and port it renders (a curl
    without the token is answered 401 with the chart's defaults)."""
    guide = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    section = guide.partition("## 8. Other modes")[2].partition("\n## ")[0]
    block = next(b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if "http.enabled=true" in b)
    objects = render(None, "--set", "broker.existingSecret=mstc-broker", "--set", "http.enabled=true")
    (secret, key), = re.findall(r"get secret (\S+) -o jsonpath='\{\.data\.(\w+)\}'", block)
    assert key in one([o for o in of_kind(objects, "Secret") if o["metadata"]["name"] == secret], "Secret")["data"]
    (service, port), = re.findall(r"port-forward svc/(\S+) (\d+)", block)
    ports = [p["port"] for o in of_kind(objects, "Service") if o["metadata"]["name"] == service for p in o["spec"]["ports"]]
    assert int(port) in ports
    curls = [line for line in block.replace("\\\n", " ").splitlines() if line.startswith("curl ")]
    assert curls and all('-H "Authorization: Bearer $TOKEN"' in line for line in curls)
    assert "TOKEN=" in block


def test_the_guides_and_readmes_give_the_charts_own_numbers() -> None:
    """Every `keda.*` and `config.*` value the docs quote with a number is that value's default."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    docs = {path: path.read_text() for path in (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "kubernetes.md",
                                                CHART / "README.md")}
    quoted = []
    for path, text in docs.items():
        found = re.findall(r"`((?:keda|config)\.[\w.]+)`(?::| \(| polls every)? ?\(?(\d+)", text)
        found += [(name, n) for n, name in re.findall(r"(\d+) s \(`((?:keda|config)\.[\w.]+)`\)", text)]
        found += re.findall(r"`(config\.[\w.]+)` \| [^|(]*\((\d+)[:)]", text)  # tables: "| `config.x` | ... (25: ...)"
        for name, number in found:
            value = values
            for part in name.split("."):
                value = value[part]
            quoted.append((path.name, name, int(number), value))
    assert len(quoted) >= 8, quoted
    assert [q for q in quoted if q[2] != q[3]] == []


def install_notes(helm: Helm, tmp_path: Path, *flags: str | Path) -> str:
    """The NOTES of a client-side dry-run install (no cluster is contacted)."""
    offline = Helm(helm.binary, {**helm.env, "KUBECONFIG": str(tmp_path / "no-cluster")})
    result = offline.run("install", RELEASE, CHART, "--dry-run=client", "--namespace", NAMESPACE, *flags)
    assert result.returncode == 0, result.stderr
    assert "\nNOTES:\n" in result.stdout
    return result.stdout.partition("\nNOTES:\n")[2]


_TEST_POD = re.compile(
    r"^  kubectl -n (\S+) run (\S+) --rm -i --restart=Never --image=(\S+) \\\n\s+--overrides='([^']+)'$", re.M
)


@pytest.mark.parametrize("values", SCENARIO_PARAMS)
def test_install_notes_check_the_secrets_and_send_a_test_request_from_a_restricted_pod(
    helm: Helm, render: Render, values: Path, tmp_path: Path
) -> None:
    notes = install_notes(helm, tmp_path, "--values", values)
    objects = render(values)  # as installed: a dry run knows no KEDA API
    config = settings(objects)
    (handler_container,) = handler_pods(objects)[0][1]["containers"]
    amqp = next(e for e in handler_container["env"] if e["name"] == "CLOUD_WORKER_AMQP_URL")
    broker_secret = amqp["valueFrom"]["secretKeyRef"]["name"]
    bucket_secret = config.get("CLOUD_WORKER_JOB_ENV_SECRET", "")
    assert f"  kubectl -n {NAMESPACE} describe secret {broker_secret}\n" in notes
    if bucket_secret:
        assert f"  kubectl -n {config['CLOUD_WORKER_NAMESPACE']} describe secret {bucket_secret}\n" in notes

    (namespace, name, image, overrides), *others = _TEST_POD.findall(notes)
    assert not others and namespace == NAMESPACE
    pod = {**json.loads(overrides), "kind": "Pod", "metadata": {"name": name}}
    validate_manifest(pod)
    assert restricted_pss_violations(pod["spec"]) == []
    assert pod["spec"]["automountServiceAccountToken"] is False
    (container,) = pod["spec"]["containers"]
    assert container["name"] == name  # kubectl run attaches to the container named like the pod
    assert container["image"] == image == handler_container["image"]
    assert container["env"] == [amqp]
    configmap = settings_configmap(objects)["metadata"]["name"]
    bucket_env = [{"secretRef": {"name": bucket_secret}}] if bucket_secret else []
    assert container["envFrom"] == [{"configMapRef": {"name": configmap}}, *bucket_env]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.inputs) == ("submit", ["/etc/hostname"])  # a file every container has

    http_services = [s for s in of_kind(objects, "Service") if s["metadata"]["name"].endswith("-http")]
    curls = re.findall(r"port-forward svc/(\S+) \d+:(\d+) &\n(?:\s+TOKEN=.*\n)?\s+curl .*?-d '([^']+)'", notes, re.S)
    assert [(service, int(port)) for service, port, _ in curls] == [
        (s["metadata"]["name"], s["spec"]["ports"][0]["port"]) for s in http_services
    ]
    for *_, body in curls:
        assert {"image", "jobName", "inputBucketUrl"} <= set(json.loads(body))
    token_secrets = [s["metadata"]["name"] for s in of_kind(objects, "Secret") if s["metadata"]["name"].endswith(
        "-http-token")]
    for secret in token_secrets:  # the curl authenticates with the token the chart generated
        assert f"get secret {secret} -o jsonpath" in notes and 'authorization: Bearer $TOKEN' in notes


# --- helm-docs comments ---------------------------------------------------------------

_KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(.*)$")


def test_chart_readme_lists_every_documented_value() -> None:
    readme = (CHART / "README.md").read_text().partition("\n## Values\n")[2]
    listed = re.findall(r"^\| ([\w.-]+) \|", readme, re.MULTILINE)[1:]  # after the header row
    assert listed == documented_values((CHART / "values.yaml").read_text())


def documented_values(text: str) -> list[str]:
    """Dotted paths of the values that carry their own `# --` comment, in file order."""
    return [path for path, own, _, _ in _walk_values(text) if own]


def undocumented_values(text: str) -> list[str]:
    """Dotted paths of values with no `# --` comment on themselves or an enclosing key.

    helm-docs documents a key from the `# --` comment block right above it; a mapping
    documented that way (resources, probes, security contexts) covers its children.
    """
    return [path for path, own, inherited, mapping in _walk_values(text) if not (own or inherited or mapping)]


def _walk_values(text: str) -> list[tuple[str, bool, bool, bool]]:
    """(dotted path, own `# --` comment, an enclosing key has one, is a mapping of keys)."""
    lines = text.splitlines()
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    out, commented = [], False
    for number, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            commented = False
            continue
        if stripped.startswith("#"):
            commented = commented or stripped.startswith("# --")
            continue
        match = _KEY.match(line)
        if not match:
            continue  # list items and continuation lines belong to the key above
        indent, key, rest = len(match[1]), match[2], match[3].split("#")[0].strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inherited = any(doc for _, _, doc in stack)
        is_mapping = not rest and _next_key_indent(lines, number) > indent
        out.append((".".join([k for _, k, _ in stack] + [key]), commented, inherited, is_mapping))
        stack.append((indent, key, commented or inherited))
        commented = False
    return out


def _next_key_indent(lines: list[str], number: int) -> int:
    for line in lines[number + 1 :]:
        if line.strip() and not line.strip().startswith("#"):
            match = _KEY.match(line)
            return len(match[1]) if match else -1
    return -1


# --- security: the HTTP mode's token, and the Job pods' egress

@pytest.mark.parametrize("values", SCENARIO_PARAMS)
def test_the_http_mode_reads_its_bearer_tokens_from_a_mounted_secret_by_default(render: Render, values: Path) -> None:
    objects = render(values)
    chart_values = merged(yaml.safe_load((CHART / "values.yaml").read_text()), yaml.safe_load(values.read_text()))
    http = [o for o in of_kind(objects, "Deployment") if o["metadata"]["name"].endswith("-http")]
    if not chart_values["http"]["enabled"]:
        assert http == [] and not [s for s in of_kind(objects, "Secret") if s["metadata"]["name"].endswith("-token")]
        return
    auth = chart_values["http"]["auth"]
    assert auth["mode"] == "token"  # the default, in every scenario
    spec = one(http, "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    known = {env_name(f) for f in setting_fields()}
    assert {n for n in env if n.startswith("CLOUD_WORKER_")} <= known
    assert env["CLOUD_WORKER_HTTP_AUTH"] == "token" and "CLOUD_WORKER_HTTP_TOKEN" not in env
    mount = next(m for m in container["volumeMounts"] if m["name"] == "http-token")
    assert env["CLOUD_WORKER_HTTP_TOKEN_FILE"] == f"{mount['mountPath']}/{auth['secretKey']}"
    assert mount["readOnly"] is True and "subPath" not in mount  # a subPath mount is never updated: no rotation
    volume = next(v for v in spec["volumes"] if v["name"] == "http-token")
    generated = [s for s in of_kind(objects, "Secret") if s["metadata"]["name"].endswith("-http-token")]
    if auth["existingSecret"]:
        assert volume["secret"]["secretName"] == auth["existingSecret"] and generated == []
    else:
        (secret,) = generated
        assert volume["secret"]["secretName"] == secret["metadata"]["name"]
        token = base64.b64decode(secret["data"][auth["secretKey"]]).decode()
        assert len(token) == 48 and token.isalnum()
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_the_http_mode_without_authentication_mounts_no_token(render: Render) -> None:
    objects = render(CHART / "ci" / "http-values.yaml", "--set", "http.auth.mode=none")
    http = next(o for o in of_kind(objects, "Deployment") if o["metadata"]["name"].endswith("-http"))
    (container,) = http["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CLOUD_WORKER_HTTP_AUTH"] == "none" and "CLOUD_WORKER_HTTP_TOKEN_FILE" not in env
    assert not [s for s in of_kind(objects, "Secret") if s["metadata"]["name"].endswith("-http-token")]


@pytest.mark.parametrize("values", SCENARIO_PARAMS)
def test_job_pods_get_an_egress_policy_to_dns_and_the_bucket_ports_only_never_link_local(
    render: Render, values: Path
) -> None:
    objects = render(values)
    policy = next(p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["name"].endswith("-jobs"))
    assert policy["metadata"]["namespace"] == settings(objects)["CLOUD_WORKER_NAMESPACE"]
    job = build_job(parse_request(Message(json.dumps({"image": "x", "jobName": "j", "inputBucketUrl": "s3://bkt"})
                                          .encode(), "application/json", message_id="m"), Settings()), Settings())
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and policy["spec"]["ingress"] == []
    dns, bucket, *extra = policy["spec"]["egress"]
    assert {p["port"] for p in dns["ports"]} == {53} and "to" not in dns
    assert bucket["to"] and all(p["protocol"] == "TCP" and p["port"] not in (80, 53) for p in bucket["ports"])
    for peer in bucket["to"]:
        if "ipBlock" in peer:
            block = ipaddress.ip_network(peer["ipBlock"]["cidr"])
            metadata = ipaddress.ip_address("169.254.169.254" if block.version == 4 else "fe80::1")
            assert metadata not in block or any(metadata in ipaddress.ip_network(e)
                                                for e in peer["ipBlock"].get("except", [])), peer
    chart_values = merged(yaml.safe_load((CHART / "values.yaml").read_text()), yaml.safe_load(values.read_text()))
    assert extra == chart_values["jobNetworkPolicy"]["extraEgress"]


# --- Job profiles (values `profiles`) ------------------------------------------------

PROFILES = CHART / "ci" / "profiles-values.yaml"


@pytest.mark.parametrize("mode", ["deployment", "scaledJob"])
def test_the_profiles_value_becomes_the_file_the_handler_proves_at_start_up(render: Render, mode: str,
                                                                           tmp_path: Path) -> None:
    from handler.service.profiles import load_profiles

    objects = render(PROFILES, "--set", f"mode={mode}", keda=True)
    config = settings(objects)
    (profiles_map,) = [c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-profiles")]
    mounted = Path(config["CLOUD_WORKER_PROFILES_FILE"])
    for where, spec in handler_pods(objects):
        (container,) = spec["containers"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "profiles")
        volume = next(v for v in spec["volumes"] if v["name"] == "profiles")
        assert (mount["mountPath"], mount["readOnly"]) == (str(mounted.parent), True), where
        assert volume["configMap"]["name"] == profiles_map["metadata"]["name"] and mounted.name in profiles_map["data"]
    # The handler, given the ConfigMap's settings and the file as mounted, loads and proves them.
    (tmp_path / mounted.name).write_text(profiles_map["data"][mounted.name])
    loaded = load_profiles(Settings.from_env({**config, "CLOUD_WORKER_PROFILES_FILE": str(tmp_path / mounted.name)}))
    values = yaml.safe_load(PROFILES.read_text())["profiles"]
    assert loaded.default.name == values["default"] and list(loaded.names) == sorted(values["profiles"])
    assert {p.name: p.max_in_flight for p in loaded.limited} == {"gpu-large": 2, "solver": 1}


def test_a_profiles_change_rolls_the_handler_pods(render: Render) -> None:
    def checksums(*flags: str) -> set[str]:
        return {o["spec"]["template"]["metadata"]["annotations"]["checksum/profiles"]
                for o in render(PROFILES, *flags) if o["kind"] == "Deployment"}

    assert checksums() != checksums("--set", "profiles.profiles.gpu-large.maxInFlight=3")


def test_the_scaled_job_counts_the_requests_of_every_queue_when_profiles_have_lanes(render: Render) -> None:
    spec = one(render(PROFILES, "--set", "mode=scaledJob", keda=True), "ScaledJob")["spec"]
    assert spec["scalingStrategy"]["multipleScalersCalculation"] == "sum"  # a handler Job per waiting request
    assert [t["metadata"]["value"] for t in spec["triggers"]] == ["1", "1", "1"]
    plain = one(render(CHART / "ci" / "scaledjob-values.yaml", keda=True), "ScaledJob")["spec"]
    assert "multipleScalersCalculation" not in plain["scalingStrategy"]


@pytest.mark.parametrize("flag", [
    "profiles.profiles.gpu.hostNetwork=true",
    "profiles.profiles.gpu.securityContext.privileged=true",
    "profiles.profiles.gpu.maxInFlight=0",
    "profiles.profiles.Bad_Name.maxInFlight=1",
])
def test_values_schema_refuses_a_profile_field_the_handler_would_refuse(helm: Helm, flag: str) -> None:
    result = helm.run("lint", CHART, "--values", PROFILES, "--set", flag)
    assert result.returncode != 0 and "values don't meet the specifications of the schema" in result.stdout + \
        result.stderr, result.stdout
