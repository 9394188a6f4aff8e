"""Pod Security admission at the ``restricted`` level, judged on the pod's securityContext.

The fake enforces ``restricted:latest`` in every namespace (a real API server does so only in
namespaces labelled ``pod-security.kubernetes.io/enforce: restricted``; the fake has no
Namespace objects, and the handler's Jobs must pass that level anyway). The checks and their
wording follow the API server's own (k8s.io/pod-security-admission, policy/check_*.go, 1.35):
baseline checks first, then restricted ones, each in the order of its check ID, joined as
``reason (detail), reason (detail)``. Covered: privileged, host namespaces, hostPath volumes,
host ports, allowPrivilegeEscalation, capabilities, volume types, runAsNonRoot, runAsUser and
seccompProfile; not covered (never set by the handler): AppArmor, SELinux, /proc mount,
sysctls, Windows HostProcess, host probes. ``tests/test_conformance.py`` holds one refusal
against the real API server's message.
"""

from __future__ import annotations

from collections.abc import Iterator

_ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                    "projected", "secret"}


def _containers(spec: dict) -> Iterator[dict]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(field) or []


def _who(names: list[str]) -> str:
    noun = "container" if len(names) == 1 else "containers"
    return f"{noun} " + ", ".join(f'"{n}"' for n in names)


def _sc(obj: dict) -> dict:
    return obj.get("securityContext") or {}


def _host_namespaces(spec: dict) -> str | None:
    found = [f"{f}=true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f)]
    return f"host namespaces ({', '.join(found)})" if found else None


def _host_ports(spec: dict) -> str | None:
    bad = [c["name"] for c in _containers(spec) if any(p.get("hostPort") for p in c.get("ports") or [])]
    return f"hostPort ({_who(bad)} uses hostPort)" if bad else None


def _privileged(spec: dict) -> str | None:
    bad = [c["name"] for c in _containers(spec) if _sc(c).get("privileged")]
    return f"privileged ({_who(bad)} must not set securityContext.privileged=true)" if bad else None


def _allow_privilege_escalation(spec: dict) -> str | None:
    bad = [c["name"] for c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]
    return (f"allowPrivilegeEscalation != false ({_who(bad)} must set "
            f"securityContext.allowPrivilegeEscalation=false)") if bad else None


def _capabilities(spec: dict) -> str | None:
    no_drop, adding = [], []
    for c in _containers(spec):
        caps = _sc(c).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            no_drop.append(c["name"])
        if any(cap != "NET_BIND_SERVICE" for cap in caps.get("add") or []):
            adding.append(c["name"])
    details = []
    if no_drop:
        details.append(f'{_who(no_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_who(adding)} must not include added capabilities other than NET_BIND_SERVICE")
    return f"unrestricted capabilities ({'; '.join(details)})" if details else None


def _restricted_volumes(spec: dict) -> str | None:
    bad = [v["name"] for v in spec.get("volumes") or [] if not (set(v) - {"name"}) <= _ALLOWED_VOLUMES]
    return f"restricted volume types ({'volume' if len(bad) == 1 else 'volumes'} " \
           f"{', '.join(chr(34) + n + chr(34) for n in bad)} uses a restricted volume type)" if bad else None


def _setters(spec: dict, field: str, bad_value: object) -> list[str]:
    setters = ["pod"] if _sc(spec).get(field) == bad_value else []
    explicit = [c["name"] for c in _containers(spec) if _sc(c).get(field) == bad_value]
    return setters + ([_who(explicit)] if explicit else [])


def _run_as_non_root(spec: dict) -> str | None:
    explicit = _setters(spec, "runAsNonRoot", False)
    if explicit:
        return f"runAsNonRoot != true ({' and '.join(explicit)} must not set securityContext.runAsNonRoot=false)"
    pod_ok = _sc(spec).get("runAsNonRoot") is True
    implicit = [c["name"] for c in _containers(spec) if "runAsNonRoot" not in _sc(c) and not pod_ok]
    return (f"runAsNonRoot != true (pod or {_who(implicit)} must set securityContext.runAsNonRoot=true)"
            if implicit else None)


def _run_as_user(spec: dict) -> str | None:
    setters = _setters(spec, "runAsUser", 0)
    return f"runAsUser=0 ({' and '.join(setters)} must not set runAsUser=0)" if setters else None


def _seccomp_profile(spec: dict) -> str | None:
    def kind(obj: dict) -> str | None:
        return (_sc(obj).get("seccompProfile") or {}).get("type")

    good = ("RuntimeDefault", "Localhost")
    bad_setters = ["pod"] if kind(spec) not in (None, *good) else []
    explicit = [c["name"] for c in _containers(spec) if kind(c) not in (None, *good)]
    if explicit:
        bad_setters.append(_who(explicit))
    if bad_setters:
        values = sorted({kind(o) for o in (spec, *_containers(spec)) if kind(o) not in (None, *good)})
        return (f"seccompProfile ({' and '.join(bad_setters)} must not set securityContext.seccompProfile.type "
                f"to {', '.join(chr(34) + str(v) + chr(34) for v in values)})")
    pod_ok = kind(spec) in good
    implicit = [c["name"] for c in _containers(spec) if kind(c) is None and not pod_ok]
    return (f'seccompProfile (pod or {_who(implicit)} must set securityContext.seccompProfile.type to '
            f'"RuntimeDefault" or "Localhost")') if implicit else None


# Baseline checks by ID, then restricted ones by ID; restrictedVolumes overrides hostPathVolumes,
# capabilities_restricted and seccompProfile_restricted their baseline twins.
_CHECKS = (_host_namespaces, _host_ports, _privileged,
           _allow_privilege_escalation, _capabilities, _restricted_volumes, _run_as_non_root, _run_as_user,
           _seccomp_profile)


def restricted_violations(pod_spec: dict) -> list[str]:
    """The ``reason (detail)`` of every restricted check the pod spec fails, in the API server's order."""
    return [found for check in _CHECKS if (found := check(pod_spec))]


def refusal(pod: dict) -> str | None:
    """The API server's refusal of ``pod`` under ``restricted:latest``, or None to admit it."""
    violations = restricted_violations(pod["spec"])
    if not violations:
        return None
    return (f'pods "{pod["metadata"]["name"]}" is forbidden: violates PodSecurity "restricted:latest": '
            + ", ".join(violations))
