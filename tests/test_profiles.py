"""Job profiles: the file is read, merged into sample Jobs and proven at start-up (core.profiles,
service.profiles); a profile that would loosen what the handler enforces stops the handler."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from handler.core.config import Settings
from handler.core.errors import ConfigError
from handler.core.profiles import BUILTIN, Profile, Profiles, profile_queue, quantity_value
from handler.service.profiles import load_profiles, profile_problems, sample_job
from tests.support.validate import REPO_ROOT, restricted_pss_violations, validate_manifest

#: The issue's example, with a per-replica limit on the GPU profile.
EXAMPLE = """\
default: standard
profiles:
  standard: {}
  gpu-large:
    resources: {requests: {cpu: "2"}, limits: {memory: 8Gi, nvidia.com/gpu: 1}}
    nodeSelector: {accelerator: nvidia}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    maxTimeoutMinutes: 20
    maxInFlight: 2
"""


def settings_with(tmp_path: Path, text: str, **env: str) -> Settings:
    path = tmp_path / "profiles.yaml"
    path.write_text(text)
    return Settings.from_env({"CLOUD_WORKER_PROFILES_FILE": str(path), **env})


def load(tmp_path: Path, text: str, **env: str) -> Profiles:
    return load_profiles(settings_with(tmp_path, text, **env))


def one_profile(fields: str) -> str:
    """A file whose default profile ``p`` has ``fields`` (YAML, indented under it)."""
    return "default: p\nprofiles:\n  p:\n" + textwrap.indent(textwrap.dedent(fields), "    ")


def test_the_issues_example_loads_with_standard_as_the_default_and_a_lane_for_gpu_large(tmp_path):
    profiles = load(tmp_path, EXAMPLE)
    assert profiles.names == ("standard", "gpu-large") and profiles.default.name == "standard"
    gpu = profiles.get("gpu-large")
    assert gpu.spec == {"resources": {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi", "nvidia.com/gpu": "1"}},
                        "nodeSelector": {"accelerator": "nvidia"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    assert (gpu.max_timeout_minutes, gpu.max_in_flight) == (20, 2)
    assert profiles.limited == (gpu,) and profiles.home(gpu) == "gpu-large"
    assert profiles.home(profiles.default) is None  # no maxInFlight: the work queue's lane
    assert profile_queue("mstc.queue.work", "gpu-large") == "mstc.queue.work.profile.gpu-large"


def test_without_a_profiles_file_there_is_one_built_in_profile_made_of_the_settings(tmp_path):
    profiles = load_profiles(Settings.from_env({}))
    assert profiles.names == ("default",) and profiles.default is BUILTIN and not profiles.configured
    assert profiles.limited == ()


def test_every_profiles_sample_job_passes_the_strict_schema_and_the_restricted_standard(tmp_path):
    settings = settings_with(tmp_path, EXAMPLE, CLOUD_WORKER_JOB_ENV_SECRET="bucket-creds")
    for profile in load_profiles(settings).by_name.values():
        job = sample_job(profile, settings)
        validate_manifest(job)  # the tests' own check: kubernetes-validate, strict
        assert restricted_pss_violations(job["spec"]["template"]["spec"]) == []


def test_a_profile_with_every_field_loads_and_its_sample_job_is_valid(tmp_path):
    settings = settings_with(tmp_path, one_profile("""\
        resources: {requests: {cpu: 500m, memory: 1Gi}, limits: {cpu: "2", memory: 2Gi, ephemeral-storage: 10Gi}}
        nodeSelector: {pool: batch}
        tolerations: [{key: dedicated, operator: Equal, value: batch, effect: NoExecute, tolerationSeconds: 60}]
        affinity:
          nodeAffinity:
            requiredDuringSchedulingIgnoredDuringExecution:
              nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a, b]}]}]
        priorityClassName: batch-low
        runtimeClassName: gvisor
        serviceAccountName: solver
        envFrom: [{secretRef: {name: licence}}, {configMapRef: {name: solver-config}, prefix: SOLVER_}]
        volumes:
          - {name: scratch, emptyDir: {sizeLimit: 20Gi}}
          - {name: data, persistentVolumeClaim: {claimName: datasets, readOnly: true}}
          - {name: conf, configMap: {name: solver-config}}
          - {name: certs, secret: {secretName: licence-certs}}
        volumeMounts:
          - {name: scratch, mountPath: /scratch}
          - {name: data, mountPath: /data, readOnly: true}
          - {name: conf, mountPath: /etc/solver}
          - {name: certs, mountPath: /etc/certs, readOnly: true}
        labels: {team: solvers}
        annotations: {example.com/cost-centre: "42"}
        maxTimeoutMinutes: 10
        allowedImages: [registry.example.com/solvers/]
        backoffLimit: 2
        failFastExitCodes: [2, 64]
        maxInFlight: 1
        """), CLOUD_WORKER_JOB_ENV_SECRET="bucket-creds")
    profile = load_profiles(settings).default
    job = sample_job(profile, settings)
    validate_manifest(job)
    assert restricted_pss_violations(job["spec"]["template"]["spec"]) == []
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"][0] == {"secretRef": {"name": "bucket-creds"}}  # the handler's first, then the profile's
    assert (job["spec"]["backoffLimit"], job["spec"]["podFailurePolicy"]["rules"][-1]["onExitCodes"]["values"]) == \
        (2, [2, 64])


# --- every way a profile could loosen what the handler enforces stops the handler, naming the field

LOOSENING = [
    ("volumes: [{name: root, hostPath: {path: /}}]", "volumes[0].hostPath"),
    ("volumes: [{name: share, nfs: {server: nfs, path: /}}]", "volumes[0].nfs"),
    ("volumes: [{name: disk, iscsi: {targetPortal: x, iqn: y, lun: 0}}]", "volumes[0].iscsi"),
    ("volumes: [{name: gitrepo, gitRepo: {repository: https://example.com/x.git}}]", "volumes[0].gitRepo"),
    ("hostNetwork: true", "hostNetwork"),
    ("hostPID: true", "hostPID"),
    ("hostIPC: true", "hostIPC"),
    ("hostUsers: false", "hostUsers"),
    ("securityContext: {runAsUser: 0}", "securityContext"),
    ("privileged: true", "privileged"),
    ("capabilities: {add: [SYS_ADMIN]}", "capabilities"),
    ("allowPrivilegeEscalation: true", "allowPrivilegeEscalation"),
    ("seccompProfile: {type: Unconfined}", "seccompProfile"),
    ("containers: [{name: sidecar, image: busybox}]", "containers"),
    ("initContainers: [{name: init, image: busybox}]", "initContainers"),
    ("ephemeralContainers: [{name: debug, image: busybox}]", "ephemeralContainers"),
    ("automountServiceAccountToken: true", "automountServiceAccountToken"),
    ("nodeName: node-1", "nodeName"),
    ("image: attacker/miner", "image"),
    ("command: [sh, -c, id]", "command"),
    ("env: [{name: X, value: y}]", "env"),
    ("ports: [{containerPort: 80, hostPort: 80}]", "ports"),
    ("activeDeadlineSeconds: 999999", "activeDeadlineSeconds"),
    ("volumes: [{name: v, emptyDir: {sizeLimit: 1Gi}}]\nvolumeMounts: [{name: v, mountPath: /v, "
     "mountPropagation: Bidirectional}]", "volumeMounts[0].mountPropagation"),
    ("annotations: {container.apparmor.security.beta.kubernetes.io/job: unconfined}",
     "annotations.container.apparmor.security.beta.kubernetes.io/job"),
    ("annotations: {seccomp.security.alpha.kubernetes.io/pod: unconfined}",
     "annotations.seccomp.security.alpha.kubernetes.io/pod"),
    ("labels: {app.kubernetes.io/managed-by: someone-else}", "labels.app.kubernetes.io/managed-by"),
    ("labels: {cloud-worker.mstc.io/request: forged}", "labels.cloud-worker.mstc.io/request"),
    ("labels: {job-name: forged}", "labels.job-name"),
    ("annotations: {cloud-worker.mstc.io/reply-to: elsewhere}", "annotations.cloud-worker.mstc.io/reply-to"),
]


@pytest.mark.parametrize("fields, where", LOOSENING, ids=[w for _, w in LOOSENING])
def test_a_profile_that_would_loosen_what_the_handler_enforces_stops_it_naming_the_profile_and_field(
        tmp_path, fields, where):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, one_profile(fields))
    line = str(caught.value)
    assert "\n" not in line and line.startswith(f"CLOUD_WORKER_PROFILES_FILE {tmp_path / 'profiles.yaml'}: ")
    assert f"profile 'p': {where}" in line, line


MISTAKES = [
    ("tolerations: [{key: gpu, operatr: Exists}]", "tolerations[0]: unknown field(s) ('operatr' was unexpected)"),
    ("tolerations: [{key: gpu, operator: Exists, value: x}]", "tolerations[0].value"),
    ("tolerations: [{key: gpu, effect: NoSchedul}]", "tolerations[0].effect"),
    ("affinity: {nodeAfinity: {}}", "affinity: unknown field(s) ('nodeAfinity' was unexpected)"),
    ("nodeSelector: {gpu: true}", "nodeSelector.gpu: must be a string"),
    ("nodeSelector: {'bad key!': x}", "nodeSelector.bad key!: not a valid label key"),
    ("resources: {limits: {memory: 8 GB}}", "resources.limits.memory: '8 GB' is not a quantity"),
    ("resources: {requests: {cpu: '4'}, limits: {cpu: '2'}}", "resources.requests.cpu: 4 is over its limit 2"),
    ("resources: {limits: {nvidia.com/gpu: 0.5}}", "resources.limits.nvidia.com/gpu: nvidia.com/gpu is counted in "
                                                    "whole units"),
    ("resources: {requests: {nvidia.com/gpu: 1}, limits: {nvidia.com/gpu: 2}}", "resources.requests.nvidia.com/gpu: nvidia.com/gpu cannot be overcommitted"),
    ("resources: {requests: {nvidia.com/gpu: 1}}", "resources.limits.nvidia.com/gpu: is required"),
    ("resources: {claims: [{name: gpu}]}", "resources.claims"),
    ("volumes: [{name: tmp, emptyDir: {}}]", "volumes[0].emptyDir.sizeLimit: is required"),
    ("volumes: [{name: Bad_Name, emptyDir: {sizeLimit: 1Gi}}]", "volumes[0].name"),
    ("volumes: [{name: d, persistentVolumeClaim: {claimName: data, readOnlyy: true}}]",
     "volumes[0].persistentVolumeClaim: unknown field(s)"),
    ("volumeMounts: [{name: missing, mountPath: /m}]", "volumeMounts[0].name: 'missing' is not one of the profile's"),
    ("volumes: [{name: v, emptyDir: {sizeLimit: 1Gi}}]\nvolumeMounts: [{name: v, mountPath: relative}]",
     "volumeMounts[0].mountPath"),
    ("envFrom: [{secretRef: {name: a}, configMapRef: {name: b}}]", "envFrom[0]: names exactly one"),
    ("serviceAccountName: Not_A_Name", "serviceAccountName"),
    ("maxTimeoutMinutes: 90", "maxTimeoutMinutes: 90 is over CLOUD_WORKER_MAX_TIMEOUT_MINUTES (25)"),
    ("maxTimeoutMinutes: 0", "maxTimeoutMinutes: must be a positive number"),
    ("maxInFlight: 0", "maxInFlight: must be a whole number from 1"),
    ("backoffLimit: -1", "backoffLimit"),
    ("failFastExitCodes: [0]", "failFastExitCodes"),
    ("allowedImages: []", "allowedImages"),
    ("nodeselector: {a: b}", "nodeselector: unknown field; a profile names any of"),
]


@pytest.mark.parametrize("fields, expected", MISTAKES, ids=[e.split(":")[0] for _, e in MISTAKES])
def test_a_profile_the_api_server_would_refuse_stops_the_handler_saying_what_to_fix(tmp_path, fields, expected):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, one_profile(fields))
    assert "\n" not in str(caught.value) and f"profile 'p': {expected}" in str(caught.value), str(caught.value)


@pytest.mark.parametrize("text, expected", [
    ("profiles: {a: {}}", "default: must name the profile of requests that name none, one of a; got None"),
    ("default: b\nprofiles: {a: {}}", "default: must name the profile"),
    ("default: a\nprofiles: {}", "profiles: must map at least one profile name"),
    ("default: a\nprofiles: {a: {}}\nextra: 1", "extra: unknown key"),
    ("default: A\nprofiles: {A: {}}", "profile 'A': a profile's name is 1-63 lower-case letters"),
    ("default: a\nprofiles: {a: [1, 2]}", "profile 'a': a profile is a mapping of fields"),
    ("default: a\nprofiles: {a: {resources: {limits: [", "not valid YAML"),
    ("- just a list", "the file must hold a mapping"),
])
def test_a_profiles_file_of_the_wrong_shape_stops_the_handler(tmp_path, text, expected):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert "\n" not in str(caught.value) and expected in str(caught.value), str(caught.value)


def test_a_missing_profiles_file_stops_the_handler_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"CLOUD_WORKER_PROFILES_FILE .*nope.yaml: cannot be read"):
        load_profiles(Settings.from_env({"CLOUD_WORKER_PROFILES_FILE": str(tmp_path / "nope.yaml")}))


def test_the_restricted_standard_is_checked_on_the_merged_job_even_for_a_profile_that_skipped_the_parser():
    # A second net: a Profile built by hand (not from a file) with a hostPath volume is still refused.
    settings = Settings.from_env({})
    profile = Profile("handmade", {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]})
    problems = profile_problems(profile, settings)
    assert problems == ["volumes[0].hostPath: hostPath volumes are forbidden (restricted Pod Security Standard)"]
    typo = Profile("handmade", {"tolerations": [{"operatr": "Exists"}]})
    assert profile_problems(typo, settings) == ["tolerations[0]: unknown field(s) ('operatr' was unexpected)"]


@pytest.mark.parametrize("command", ["consume", "serve"])
def test_a_bad_profile_stops_the_handler_at_start_up_with_exit_3_and_one_line(tmp_path, command):
    path = tmp_path / "profiles.yaml"
    path.write_text(one_profile("volumes: [{name: root, hostPath: {path: /}}]"))
    env = {"PATH": "/usr/bin:/bin", "CLOUD_WORKER_PROFILES_FILE": str(path), "CLOUD_WORKER_LOG_FORMAT": "text",
           # Nothing else is reachable: the profiles are proven before the broker or the cluster is asked.
           "CLOUD_WORKER_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/%2F", "KUBECONFIG": str(tmp_path / "none")}
    done = subprocess.run([sys.executable, "-m", "handler.cli", command], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "configuration error" in line]
    assert line == (f"cloud-worker {command}: configuration error: CLOUD_WORKER_PROFILES_FILE {path}: profile 'p': "
                    "volumes[0].hostPath: hostPath volumes are not allowed: it reaches the node (restricted Pod "
                    "Security Standard)")


@pytest.mark.parametrize("text, value", [
    ("500m", Decimal("0.5")), ("2", Decimal(2)), ("8Gi", Decimal(8 * 2**30)), ("1.5G", Decimal("1.5e9")),
    ("100Mi", Decimal(100 * 2**20)), ("1e3", Decimal(1000)), (".5", Decimal("0.5")), ("10k", Decimal(10000)),
])
def test_quantities_are_read_as_kubernetes_reads_them(text, value):
    assert quantity_value(text) == value


@pytest.mark.parametrize("text", ["8 GB", "Gi", "1.2.3", "1gi", "ten", ""])
def test_what_is_not_a_quantity_is_refused(text):
    with pytest.raises(ValueError):
        quantity_value(text)


def test_the_job_schema_extract_is_what_the_script_makes_from_kubernetes_validate():
    done = subprocess.run([sys.executable, "scripts/extract-job-schema.py", "--check"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
