"""The chart's monitoring, as the Prometheus ecosystem runs it: the PrometheusRule's alerts
checked by ``promtool check rules`` and exercised by ``promtool test rules``
(tests/support/alerts/rules-test.yaml), the Grafana dashboard linted by
``dashboard-linter --strict``, the PodMonitor labelling its targets as the alerts select
them, and every metric the alerts and the dashboard query either one the handler exports
(``handler.service.metrics``) or one of RabbitMQ's that docs/alerts.md names.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from handler.service.metrics import Metrics
from tests.support.charts import CHART, NAMESPACE, RELEASE, Render
from tests.support.validate import REPO_ROOT, pod_specs, tool_binary

RULES_TEST = REPO_ROOT / "tests" / "support" / "alerts" / "rules-test.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
DASHBOARD_LINT = CHART / "files" / "dashboard-lint.yaml"
RUNBOOK = REPO_ROOT / "docs" / "alerts.md"
#: RabbitMQ's own metrics (its Prometheus plugin, per-object metrics) that the alerts and
#: the dashboard read besides the handler's; docs/alerts.md states the assumption.
RABBITMQ_METRICS = {"rabbitmq_queue_messages_ready", "rabbitmq_queue_messages_unacked", "rabbitmq_queue_consumers"}
#: PromQL words that look like metric names but are not.
PROMQL_WORDS = {"sum", "max", "min", "count", "avg", "rate", "increase", "delta", "histogram_quantile", "by", "on",
                "and", "or", "unless", "offset", "label_values", "le"}
EVERYTHING_ON = ("--set", "broker.existingSecret=mstc-broker", "--set", "config.deadLetterQueue=mstc.queue.dead",
                 "--set", "metrics.podMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true",
                 "--set", "metrics.grafanaDashboard.enabled=true")


def one(objects: list[dict], kind: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def rules_of(objects: list[dict]) -> list[dict]:
    return [rule for group in one(objects, "PrometheusRule")["spec"]["groups"] for rule in group["rules"]]


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression selects (label values and strings left out)."""
    bare = re.sub(r'"(?:\\.|[^"\\])*"', '""', promql)  # strings (label values) out
    bare = re.sub(r"\{[^}]*\}", "{}", bare)  # matchers out
    bare = re.sub(r"\[[^\]]*\]", "[]", bare)  # ranges out
    bare = re.sub(r"\b(by|on|without|ignoring)\s*\([^)]*\)", "", bare)  # grouping labels out
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b", bare))
    return {n for n in names if n not in PROMQL_WORDS and not n.startswith("$") and not re.fullmatch(r"\d+m?", n)
            and "_" in n}


def exported_sample_names() -> set[str]:
    """Every sample name a handler process exports (a consumer's, with the watch's collector)."""

    class Tracker:
        counters = type("Counters", (), {"restarts": 0, "relists": 0, "events": 0, "stalls": 0})()

        def sizes(self) -> dict:
            return {"jobs": 0}

        def jobs(self) -> list:
            return []

    metrics = Metrics()
    metrics.watch(Tracker())
    metrics.broker_consumer_timeout(1800)
    names = set()
    for family in metrics.registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names


def test_the_monitoring_objects_are_off_by_default(render: Render) -> None:
    objects = render(None, "--set", "broker.existingSecret=mstc-broker")
    assert not [o for o in objects if o["kind"] in ("PodMonitor", "PrometheusRule")]
    assert not [o for o in objects if o["metadata"]["name"].endswith("-dashboard")]


def test_promtool_checks_the_rendered_rules_and_their_unit_tests_pass(render: Render, tmp_path: Path) -> None:
    promtool = tool_binary("promtool")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(one(render(None, *EVERYTHING_ON), "PrometheusRule")["spec"]))
    shutil.copy(RULES_TEST, tmp_path / "rules-test.yaml")

    checked = subprocess.run([promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout
    tested = subprocess.run([promtool, "test", "rules", "rules-test.yaml"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_unit_tests_and_a_runbook_section(render: Render) -> None:
    alerts = [rule["alert"] for rule in rules_of(render(None, *EVERYTHING_ON))]
    tested = {case["alertname"] for test in yaml.safe_load(RULES_TEST.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}
    sections = re.findall(r"^## (CloudWorker\w+)$", RUNBOOK.read_text(), re.M)
    assert alerts == sections  # the runbook in the rules' order, one section each
    assert set(alerts) == tested


def test_each_alert_links_its_runbook_section_when_the_runbook_has_an_address(render: Render) -> None:
    objects = render(None, *EVERYTHING_ON, "--set", "metrics.prometheusRule.runbookUrl=https://docs.example/alerts")
    for rule in rules_of(objects):
        assert rule["annotations"]["runbook_url"] == f"https://docs.example/alerts#{rule['alert'].lower()}"
        assert rule["labels"]["severity"] in ("critical", "warning")
    assert all("runbook_url" not in rule["annotations"] for rule in rules_of(render(None, *EVERYTHING_ON)))


def test_without_a_dead_letter_queue_there_is_no_alert_on_one(render: Render) -> None:
    objects = render(None, "--set", "broker.existingSecret=mstc-broker", "--set", "metrics.prometheusRule.enabled=true")
    assert "CloudWorkerDeadLetterQueueGrowing" not in [rule["alert"] for rule in rules_of(objects)]


def test_every_metric_the_alerts_and_the_dashboard_query_is_exported_by_the_handler_or_rabbitmq(
        render: Render) -> None:
    queried = {name for rule in rules_of(render(None, *EVERYTHING_ON)) for name in metric_names(rule["expr"])}
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            queried |= metric_names(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queried |= metric_names(variable["definition"])
    exported = exported_sample_names()
    assert {"cloud_worker_requests_total", "cloud_worker_job_finished_to_reply_seconds_bucket"} <= queried
    assert queried - exported - RABBITMQ_METRICS == set()
    assert queried & RABBITMQ_METRICS == RABBITMQ_METRICS
    runbook = RUNBOOK.read_text()
    assert all(f"`{name}`" in runbook for name in RABBITMQ_METRICS)  # the assumption is stated


def test_the_dashboard_passes_the_dashboard_linter_in_strict_mode() -> None:
    linter = tool_binary("dashboard-linter")
    done = subprocess.run([linter, "lint", "--strict", "--config", str(DASHBOARD_LINT), str(DASHBOARD)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_shows_what_an_operator_looks_for() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = [panel["title"] for panel in dashboard["panels"]]
    for wanted in ("Requests by outcome", "Jobs in flight", "Reply latency", "Dispatch latency", "Queue depth",
                   "Retries", "Dead letters"):
        assert wanted in titles
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", "job", "instance", "queue",
                                                                  "dead_letter_queue"]


def test_the_dashboard_configmap_carries_the_file_for_grafanas_sidecar(render: Render) -> None:
    objects = render(None, *EVERYTHING_ON, "--set", "metrics.grafanaDashboard.annotations.grafana_folder=MSTC")
    (configmap,) = [o for o in objects if o["metadata"]["name"] == f"{RELEASE}-dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "MSTC"}
    assert json.loads(configmap["data"]["mstc-cloud-worker.json"]) == json.loads(DASHBOARD.read_text())


@pytest.mark.parametrize("mode", ["deployment", "scaledJob"])
def test_the_pod_monitor_scrapes_every_handler_pod_and_labels_it_as_the_alerts_select(render: Render,
                                                                                      mode: str) -> None:
    objects = render(None, *EVERYTHING_ON, "--set", "http.enabled=true", "--set", f"mode={mode}",
                     *(["--set", "keda.enabled=true"] if mode == "scaledJob" else []))
    monitor = one(objects, "PodMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    handler_pods = [(where, template) for o in objects if o["kind"] in ("Deployment", "ScaledJob")
                    for where, template in _templates(o)]
    assert len(handler_pods) == 2  # the consumers (or the ScaledJob's handlers) and the HTTP mode
    for where, template in handler_pods:
        labels = template["metadata"]["labels"]
        assert wanted.items() <= labels.items(), where
        assert endpoint["port"] in [p["name"] for c in template["spec"]["containers"] for p in c["ports"]], where
        # Its targets' job label is this pod label's value: the release, as the alerts select.
        assert labels[monitor["spec"]["jobLabel"]] == RELEASE
    for rule in rules_of(objects):
        if "cloud_worker_" in rule["expr"]:
            assert f'namespace="{NAMESPACE}", job="{RELEASE}"' in rule["expr"], rule["alert"]


def _templates(obj: dict) -> list[tuple[str, dict]]:
    spec = obj["spec"]
    template = spec["jobTargetRef"]["template"] if obj["kind"] == "ScaledJob" else spec["template"]
    assert [where for where, _ in pod_specs(obj)]
    return [(f"{obj['kind']}/{obj['metadata']['name']}", template)]


def test_the_operator_schemas_are_a_compact_extract_inside_the_repository() -> None:
    from tests.support.validate import OPERATOR_SCHEMA_DIR

    assert OPERATOR_SCHEMA_DIR.is_relative_to(REPO_ROOT)
    files = sorted(p.name for p in OPERATOR_SCHEMA_DIR.glob("*.json"))
    assert files == ["podmonitor.json", "prometheusrule.json"]
    for name in files:
        text = (OPERATOR_SCHEMA_DIR / name).read_text()
        extract = json.loads(text)
        assert extract["operator"] == OPERATOR_SCHEMA_DIR.name.removeprefix("prometheus-operator-")
        assert "scripts/extract-prometheus-operator-schemas.py" in extract["$comment"]
        assert '"description"' not in text and len(text) < 20_000
