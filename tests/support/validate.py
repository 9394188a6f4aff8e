"""Proof of Kubernetes manifests without a cluster.

There is no API server here, so every manifest we ship or build is checked against the
schemas a real one would use:

* built-in kinds with ``kubernetes_validate`` in strict mode (unknown fields rejected),
  against the newest Kubernetes version the installed package ships;
* KEDA kinds against the ``openAPIV3Schema`` of KEDA's own v2.20 CRDs, committed as a
  compact extract in ``tests/support/schemas/keda-v2.20/`` (one JSON file per kind, made
  by ``scripts/extract-keda-schemas.py``; nothing outside the repository is read), and
  the prometheus-operator's PodMonitor and PrometheusRule likewise against its v0.85.0
  CRDs (``tests/support/schemas/prometheus-operator-v0.85.0/``, made by
  ``scripts/extract-prometheus-operator-schemas.py``), made strict the way the API server
  prunes: wherever a schema lists ``properties`` without ``additionalProperties`` or
  ``x-kubernetes-preserve-unknown-fields``, anything else is an error here rather than
  silently dropped there;
* pod specs against the baseline and restricted Pod Security Standards
  (``restricted_pss_violations``), which no schema expresses.

``HANDLER_API_CALLS`` is the reference list of the handler's Kubernetes API calls: the
chart's Role must grant exactly these, and the code must make no others.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The KEDA CRD schemas, as extracted by scripts/extract-keda-schemas.py.
KEDA_SCHEMA_DIR = Path(__file__).resolve().parent / "schemas" / "keda-v2.20"
#: The prometheus-operator's, as extracted by scripts/extract-prometheus-operator-schemas.py.
OPERATOR_SCHEMA_DIR = Path(__file__).resolve().parent / "schemas" / "prometheus-operator-v0.85.0"
#: Custom resources by API group: where their schemas are, and whose they are.
CRD_SCHEMAS = {
    "keda.sh": (KEDA_SCHEMA_DIR, "KEDA v2.20", "scripts/extract-keda-schemas.py"),
    "monitoring.coreos.com": (OPERATOR_SCHEMA_DIR, "prometheus-operator v0.85.0",
                              "scripts/extract-prometheus-operator-schemas.py"),
}
#: The newest Kubernetes version whose schemas kubernetes-validate ships.
KUBERNETES_VERSION = kubernetes_validate.latest_version()

#: (apiGroup, resource, verb) for every Kubernetes API call the handler makes, in the Jobs'
#: namespace only: create/get/list/watch a Job, patch its annotations and reply finalizer,
#: delete it on timeout or cancel; read and watch its pods; read their logs; list and watch
#: the namespace's events (a Job's FailedCreate).
HANDLER_API_CALLS: frozenset[tuple[str, str, str]] = frozenset(
    {("batch", "jobs", verb) for verb in ("create", "get", "list", "watch", "delete", "patch")}
    | {("", "pods", verb) for verb in ("list", "watch")}
    | {("", "pods/log", "get")}
    | {("", "events", verb) for verb in ("list", "watch")}
)


class InvalidManifest(AssertionError):
    """A manifest the API server would refuse (or silently change)."""


# --- manifests ------------------------------------------------------------------------


def validate_manifest(obj: dict) -> None:
    """Raise ``InvalidManifest`` listing every problem with one Kubernetes object."""
    if not isinstance(obj, dict):
        raise InvalidManifest(f"a manifest must be a mapping, got {type(obj).__name__}")
    label = describe(obj)
    problems = list(_metadata_problems(obj))
    api_version = obj.get("apiVersion", "")
    if not api_version or not obj.get("kind"):
        problems.append("apiVersion and kind are required")
    elif api_version.split("/")[0] in CRD_SCHEMAS:
        problems.extend(_crd_problems(obj, *CRD_SCHEMAS[api_version.split("/")[0]]))
    else:
        problems.extend(_builtin_problems(obj))
    if problems:
        raise InvalidManifest(f"{label}:\n  " + "\n  ".join(problems))


def load_manifests(text: str) -> list[dict]:
    """Every non-empty document of a multi-document YAML stream."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built in: much faster
    return [doc for doc in yaml.load_all(text, Loader=loader) if doc]


def describe(obj: dict) -> str:
    name = (obj.get("metadata") or {}).get("name", "<unnamed>")
    return f"{obj.get('kind', '<no kind>')}/{name} ({obj.get('apiVersion', '<no apiVersion>')})"


def _builtin_problems(obj: dict) -> Iterator[str]:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        yield f"{_path(exc.absolute_path)}: {exc.message} (Kubernetes {exc.version}, strict)"
    except kubernetes_validate.SchemaNotFoundError as exc:
        yield exc.message


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _metadata_problems(obj: dict) -> Iterator[str]:
    """What the API server checks in metadata but no JSON schema says: name and label syntax."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        yield "metadata is required"
        return
    name = meta.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        yield f"metadata.name {name!r} is not a DNS subdomain name"
    namespace = meta.get("namespace")
    if namespace is not None and not (isinstance(namespace, str) and _is_dns_label(namespace)):
        yield f"metadata.namespace {namespace!r} is not a DNS label"
    for where, labels in _label_maps(obj):
        for key, value in (labels or {}).items():
            if not _is_label_key(key):
                yield f"{where}: label key {key!r} is invalid"
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                yield f"{where}: label {key}={value!r} has an invalid value"
    for key, value in (meta.get("annotations") or {}).items():
        if not isinstance(value, str):
            yield f"metadata.annotations[{key}] must be a string, got {type(value).__name__}"


def _label_maps(obj: dict) -> Iterator[tuple[str, dict]]:
    yield "metadata.labels", (obj.get("metadata") or {}).get("labels")
    spec = obj.get("spec") or {}
    for path, template in (
        ("spec.template", spec.get("template")),
        ("spec.jobTargetRef.template", (spec.get("jobTargetRef") or {}).get("template")),
    ):
        if isinstance(template, dict):
            yield f"{path}.metadata.labels", (template.get("metadata") or {}).get("labels")


def _is_dns_label(text: str) -> bool:
    return len(text) <= 63 and re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", text) is not None


def _is_label_key(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and _LABEL_NAME.match(name) is not None


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".") or "<root>"


# --- custom resources (KEDA, the prometheus-operator) ----------------------------------


def _crd_problems(obj: dict, schema_dir: Path, whose: str, script: str) -> Iterator[str]:
    validators = _crd_validators(schema_dir, script)
    validator = validators.get((obj["apiVersion"], obj["kind"]))
    if validator is None:
        known = ", ".join(f"{kind} ({api})" for api, kind in sorted(validators))
        yield f"no {whose} CRD serves this kind; known: {known}"
        return
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        yield f"{_path(error.absolute_path)}: {error.message} ({whose} CRD, strict)"


@functools.cache
def _crd_validators(schema_dir: Path, script: str) -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    validators = {}
    for path in sorted(schema_dir.glob("*.json")):
        extract = json.loads(path.read_text(encoding="utf-8"))
        for version, openapi_schema in extract["versions"].items():
            schema = strict_openapi_schema(openapi_schema)
            validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
            validators[(f"{extract['group']}/{version}", extract["kind"])] = validator_class(schema)
    if not validators:
        raise FileNotFoundError(f"no CRD schemas in {schema_dir}: regenerate them with {script}")
    return validators


def strict_openapi_schema(schema: dict) -> dict:
    """A structural CRD schema as a JSON Schema that rejects what the API server would prune.

    ``additionalProperties: false`` goes wherever ``properties`` are listed with neither
    ``additionalProperties`` nor ``x-kubernetes-preserve-unknown-fields``; ``nullable``
    becomes a ``null`` type. The ``x-kubernetes-*`` markers stay (JSON Schema ignores them).
    """
    schema = copy.deepcopy(schema)
    _tighten(schema)
    return schema


def _tighten(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _tighten(item)
        return
    if not isinstance(node, dict):
        return
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    for key in ("properties", "patternProperties", "definitions"):
        for child in (node.get(key) or {}).values():
            _tighten(child)
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), (dict, list)):
            _tighten(node[key])
    for key in ("allOf", "anyOf", "oneOf"):
        _tighten(node.get(key) or [])


# --- RBAC -----------------------------------------------------------------------------


def role_grants(role: dict) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) for every rule of a Role, wildcards kept as '*'."""
    grants = set()
    for rule in role.get("rules") or []:
        for group in rule.get("apiGroups") or [""]:
            for resource in rule.get("resources") or []:
                for verb in rule.get("verbs") or []:
                    grants.add((group, resource, verb))
    return grants


# --- Pod Security Standards -----------------------------------------------------------

#: Capabilities the baseline profile lets a container add (the container runtime's default set).
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
        "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    }
)  # fmt: skip
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)  # fmt: skip
RESTRICTED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})


def restricted_pss_violations(pod_spec: dict) -> list[str]:
    """Every rule of the baseline and restricted Pod Security Standards the pod spec breaks.

    Follows https://kubernetes.io/docs/concepts/security/pod-security-standards/ (v1.35):
    pod-level settings count for every container unless a container overrides them.
    An empty list means the restricted profile admits the pod.
    """
    problems: list[str] = []
    pod_sc = pod_spec.get("securityContext") or {}
    containers = [
        (f"{field}[{c.get('name', i)}]", c)
        for field in ("initContainers", "containers", "ephemeralContainers")
        for i, c in enumerate(pod_spec.get(field) or [])
    ]
    windows = (pod_spec.get("os") or {}).get("name") == "windows"

    # baseline: host namespaces, host paths and ports, privileged and HostProcess
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            problems.append(f"spec.{field} must not be true")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("spec.securityContext.windowsOptions.hostProcess must not be true")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            problems.append(f"volume {volume.get('name')!r}: hostPath volumes are forbidden")
        elif not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(
                f"volume {volume.get('name')!r}: type {', '.join(sorted(kinds))} is not allowed "
                f"(restricted allows {', '.join(sorted(RESTRICTED_VOLUME_TYPES))})"
            )
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl.get('name')!r} is not in the safe set")
    problems.extend(_selinux_problems("spec.securityContext", pod_sc))
    problems.extend(_profile_problems("spec.securityContext", pod_sc))

    pod_non_root = pod_sc.get("runAsNonRoot") is True
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_sc.get("runAsUser") == 0:
        problems.append("spec.securityContext.runAsUser must not be 0")
    if pod_sc.get("runAsNonRoot") is False:
        problems.append("spec.securityContext.runAsNonRoot must not be false")

    for where, container in containers:
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{where}: privileged must not be true")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{where}: windowsOptions.hostProcess must not be true")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{where}: hostPort {port['hostPort']} is forbidden")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{where}: procMount must be Default")
        problems.extend(_selinux_problems(f"{where}.securityContext", sc))
        problems.extend(_profile_problems(f"{where}.securityContext", sc))
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            problems.append(f"{where}: capabilities {sorted(added - BASELINE_CAPABILITIES)} exceed the baseline")

        # restricted
        if sc.get("runAsNonRoot") is False or not (pod_non_root or sc.get("runAsNonRoot") is True):
            problems.append(f"{where}: runAsNonRoot must be true (on the pod or the container)")
        if sc.get("runAsUser") == 0:
            problems.append(f"{where}: runAsUser must not be 0")
        if windows:
            continue  # the remaining rules do not apply to Windows pods
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            problems.append(
                f"{where}: seccompProfile.type must be RuntimeDefault or Localhost (on the pod or the container)"
            )
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{where}: capabilities.drop must include ALL")
        if added - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: capabilities.add may only hold NET_BIND_SERVICE, not {sorted(added)}")
    return problems


def _selinux_problems(where: str, sc: dict) -> Iterator[str]:
    options = sc.get("seLinuxOptions") or {}
    if options.get("type", "") not in _SELINUX_TYPES:
        yield f"{where}.seLinuxOptions.type {options['type']!r} is not allowed"
    for field in ("user", "role"):
        if options.get(field):
            yield f"{where}.seLinuxOptions.{field} must not be set"


def _profile_problems(where: str, sc: dict) -> Iterator[str]:
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        yield f"{where}.seccompProfile.type must not be Unconfined"
    if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        yield f"{where}.appArmorProfile.type must not be Unconfined"


def pod_specs(obj: dict) -> Iterator[tuple[str, dict]]:
    """The pod specs inside a workload object (Pod, Deployment, Job, ScaledJob, ...)."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "Pod":
        yield describe(obj), spec
    elif kind == "CronJob":
        yield describe(obj), spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "ScaledJob":
        yield describe(obj), spec["jobTargetRef"]["template"]["spec"]
    elif isinstance(spec.get("template"), dict) and "spec" in spec["template"]:
        yield describe(obj), spec["template"]["spec"]


# --- tools ----------------------------------------------------------------------------


def missing_tool(reason: str) -> None:
    """Skip the test here, but fail it in CI, where every tool must be installed."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def tool_binary(name: str) -> str:
    """A tool of scripts/install-tools.sh: from <repo>/.tools/bin, else PATH (skipped here
    when missing, a failure in CI)."""
    candidate = REPO_ROOT / ".tools" / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    missing_tool(f"{name} not found: run `bash scripts/install-tools.sh`")
    raise AssertionError("unreachable")  # missing_tool always raises


def helm_binary() -> str:
    """helm from <repo>/.tools/bin (scripts/install-tools.sh), else $HELM, else PATH."""
    candidates = [REPO_ROOT / ".tools" / "bin" / "helm"]
    if os.environ.get("HELM"):
        candidates.append(Path(os.environ["HELM"]))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("helm")
    if found:
        return found
    missing_tool("helm not found: run `bash scripts/install-tools.sh` (or set $HELM)")
    raise AssertionError("unreachable")  # missing_tool always raises
