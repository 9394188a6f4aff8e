"""The restricted Pod Security Standard, as a pure check of a pod template.

The handler's Jobs must be admitted by a namespace that enforces ``restricted``, so the
handler checks every profile merged into a sample Job against it at start-up: a profile may
add what the standard allows (a PVC, a toleration, an extended resource) and nothing that
loosens what ``manifest.build_job`` enforces. The rules are those of
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (v1.35), baseline and
restricted; pod-level settings count for every container unless a container overrides them.
Each violation names where it is, as a path in the pod spec (``volumes[0].hostPath``), which
is also where a profile sets the field.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

#: Capabilities the baseline profile lets a container add (the container runtime's default set).
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
RESTRICTED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"})
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
#: The pod annotations the standard still reads (AppArmor before its field; seccomp's alpha ones).
_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
_SECCOMP_ANNOTATIONS = ("seccomp.security.alpha.kubernetes.io/pod", "container.seccomp.security.alpha.kubernetes.io/")


def restricted_violations(template: Mapping[str, Any]) -> list[str]:
    """Every rule of the restricted Pod Security Standard (baseline included) that the pod
    template (``{"metadata": ..., "spec": ...}``) breaks, each as ``<where>: <rule>``; an
    empty list means a ``restricted`` namespace admits its pods."""
    spec: Mapping[str, Any] = template.get("spec") or {}
    problems = list(_annotation_problems((template.get("metadata") or {}).get("annotations") or {}))
    problems += _pod_problems(spec)
    pod_sc: Mapping[str, Any] = spec.get("securityContext") or {}
    windows = (spec.get("os") or {}).get("name") == "windows"
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for i, container in enumerate(spec.get(kind) or ()):
            problems += _container_problems(f"{kind}[{container.get('name', i)}]", container, pod_sc, windows)
    return problems


def _annotation_problems(annotations: Mapping[str, Any]) -> Iterator[str]:
    for key, value in annotations.items():
        if key.startswith(_APPARMOR_ANNOTATION) and value != "runtime/default" and not str(value).startswith(
                "localhost/"):
            yield f"annotations.{key}: AppArmor must be runtime/default or localhost/*"
        if any(key == a or (a.endswith("/") and key.startswith(a)) for a in _SECCOMP_ANNOTATIONS) and \
                value in ("unconfined", ""):
            yield f"annotations.{key}: seccomp must not be unconfined"


def _pod_problems(spec: Mapping[str, Any]) -> Iterator[str]:
    for name in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(name):
            yield f"{name}: must not be true (host namespaces)"
    for i, volume in enumerate(spec.get("volumes") or ()):
        kinds = set(volume) - {"name"}
        where = f"volumes[{i}]"
        if "hostPath" in kinds:
            yield f"{where}.hostPath: hostPath volumes are forbidden"
        elif not kinds <= RESTRICTED_VOLUME_TYPES:
            yield f"{where}: volume type {', '.join(sorted(kinds))} is not allowed (restricted allows " \
                  f"{', '.join(sorted(RESTRICTED_VOLUME_TYPES))})"
    pod_sc: Mapping[str, Any] = spec.get("securityContext") or {}
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        yield "securityContext.windowsOptions.hostProcess: must not be true"
    for sysctl in pod_sc.get("sysctls") or ():
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield f"securityContext.sysctls: {sysctl.get('name')!r} is not in the safe set"
    yield from _context_problems("securityContext", pod_sc)
    if pod_sc.get("runAsUser") == 0:
        yield "securityContext.runAsUser: must not be 0"
    if pod_sc.get("runAsNonRoot") is False:
        yield "securityContext.runAsNonRoot: must not be false"


def _container_problems(where: str, container: Mapping[str, Any], pod_sc: Mapping[str, Any],
                        windows: bool) -> list[str]:
    sc: Mapping[str, Any] = container.get("securityContext") or {}
    problems = [f"{where}.ports: hostPort {port['hostPort']} is forbidden"
                for port in container.get("ports") or () if port.get("hostPort")]
    if sc.get("privileged"):
        problems.append(f"{where}.securityContext.privileged: must not be true")
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        problems.append(f"{where}.securityContext.windowsOptions.hostProcess: must not be true")
    if sc.get("procMount", "Default") != "Default":
        problems.append(f"{where}.securityContext.procMount: must be Default")
    problems += _context_problems(f"{where}.securityContext", sc)
    added = set((sc.get("capabilities") or {}).get("add") or ())
    if added - BASELINE_CAPABILITIES:
        problems.append(f"{where}.securityContext.capabilities.add: {sorted(added - BASELINE_CAPABILITIES)} exceed "
                        "the baseline")
    if sc.get("runAsNonRoot") is False or not (pod_sc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True):
        problems.append(f"{where}.securityContext.runAsNonRoot: must be true (on the pod or the container)")
    if sc.get("runAsUser") == 0:
        problems.append(f"{where}.securityContext.runAsUser: must not be 0")
    if windows:
        return problems  # the remaining rules do not apply to Windows pods
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}.securityContext.allowPrivilegeEscalation: must be false")
    seccomp = (sc.get("seccompProfile") or {}).get("type") or (pod_sc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        problems.append(f"{where}.securityContext.seccompProfile.type: must be RuntimeDefault or Localhost (on the "
                        "pod or the container)")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or ()):
        problems.append(f"{where}.securityContext.capabilities.drop: must include ALL")
    if added - {"NET_BIND_SERVICE"}:
        problems.append(f"{where}.securityContext.capabilities.add: only NET_BIND_SERVICE, not {sorted(added)}")
    return problems


def _context_problems(where: str, sc: Mapping[str, Any]) -> Iterator[str]:
    options = sc.get("seLinuxOptions") or {}
    if options.get("type", "") not in _SELINUX_TYPES:
        yield f"{where}.seLinuxOptions.type: {options['type']!r} is not allowed"
    for name in ("user", "role"):
        if options.get(name):
            yield f"{where}.seLinuxOptions.{name}: must not be set"
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        yield f"{where}.seccompProfile.type: must not be Unconfined"
    if (sc.get("appArmorProfile") or {}).get("type") == "Unconfined":
        yield f"{where}.appArmorProfile.type: must not be Unconfined"
