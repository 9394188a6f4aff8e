"""The Kubernetes fields of a Job profile, checked as the API server would check them.

The JSON schema says what shape a field has (``service.profiles`` checks that at start-up); the
API server checks more than its schema says, and the handler forbids more than the API server
does. One check per field (``check_field``) returns the value as it goes into a Job
(quantities as strings), or raises ``ProfileProblem`` naming the field: names and label syntax,
quantities, requests over limits, extended resources counted whole and never overcommitted,
volumes only of the types a Job can need (PVC, emptyDir with a sizeLimit, ConfigMap, Secret),
mounts that name one of the profile's volumes, and labels or annotations the handler and the
Job controller set on every Job's pods.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

Json = dict[str, Any]

#: Volume types a profile may use: what the restricted Pod Security Standard allows and a
#: Job can need, nothing that reaches the node or another namespace.
VOLUME_TYPES = ("persistentVolumeClaim", "emptyDir", "configMap", "secret")
#: Label keys (and prefixes) the handler and the Job controller set on a Job's pods: the
#: handler's watch finds its pods by them, the Job controller refuses a template that differs.
RESERVED_LABELS = ("cloud-worker.mstc.io/", "app.kubernetes.io/managed-by", "batch.kubernetes.io/",
                   "controller-uid", "job-name")
RESERVED_ANNOTATIONS = ("cloud-worker.mstc.io/",)

_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
_LABEL_NAME = re.compile(r"(?:[A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(?:(?:[A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?")
_QUANTITY = re.compile(r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "k": Decimal(10**3), "M": Decimal(10**6),
            "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18)}
#: Resource names Kubernetes itself defines (no domain, or one of kubernetes.io): any other,
#: such as ``nvidia.com/gpu``, is an extended resource, counted in whole units, never overcommitted.
_NATIVE_RESOURCES = ("cpu", "memory", "ephemeral-storage")


class ProfileProblem(ValueError):
    """A profile the handler cannot run Jobs with: ``where`` names the field (``volumes[0].hostPath``)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


# --- one check per Kubernetes field: the value as it goes into the Job, or ProfileProblem

def _mapping(value: Any, where: str) -> Json:
    if not isinstance(value, Mapping):
        raise ProfileProblem(where, f"must be a mapping, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _list_of_mappings(value: Any, where: str) -> list[Json]:
    if not isinstance(value, list):
        raise ProfileProblem(where, f"must be a list, got {type(value).__name__}")
    return [_mapping(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _string_map(value: Any, where: str) -> dict[str, str]:
    out = {}
    for key, item in _mapping(value, where).items():
        if not isinstance(item, str):
            raise ProfileProblem(f"{where}.{key}", f"must be a string (quote it in YAML: \"{item}\"), "
                                 f"got {type(item).__name__}")
        out[key] = item
    return out


def _labels(value: Any, where: str, reserved: tuple[str, ...], values_are_labels: bool = True) -> dict[str, str]:
    labels = _string_map(value, where)
    for key, item in labels.items():
        if not is_label_key(key):
            raise ProfileProblem(f"{where}.{key}", "not a valid label key ([prefix/]name: a DNS subdomain, then up "
                                 "to 63 letters, digits, '-', '_' or '.')")
        if any(key == r or (r.endswith("/") and key.startswith(r)) for r in reserved):
            raise ProfileProblem(f"{where}.{key}", "the handler and the Job controller set this key on every Job's "
                                 "pods; a profile cannot")
        if values_are_labels and _LABEL_VALUE.fullmatch(item) is None:
            raise ProfileProblem(f"{where}.{key}", f"{item!r} is not a valid label value (up to 63 letters, digits, "
                                 "'-', '_' or '.', starting and ending with a letter or digit)")
    return labels


def is_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or _DNS_SUBDOMAIN.fullmatch(prefix) is None):
        return False
    return _LABEL_NAME.fullmatch(name) is not None


def _subdomain(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > 253 or _DNS_SUBDOMAIN.fullmatch(value) is None:
        raise ProfileProblem(where, f"{value!r} is not a valid name (a DNS subdomain: lower-case letters, digits, "
                             "'-' and '.')")
    return value


def _node_selector(value: Any) -> dict[str, str]:
    return _labels(value, "nodeSelector", reserved=())


def _tolerations(value: Any) -> list[Json]:
    tolerations = _list_of_mappings(value, "tolerations")
    for i, toleration in enumerate(tolerations):
        where = f"tolerations[{i}]"
        if toleration.get("operator") == "Exists" and toleration.get("value"):
            raise ProfileProblem(f"{where}.value", "must be empty when operator is Exists")
        if toleration.get("operator", "Equal") not in ("Equal", "Exists"):
            raise ProfileProblem(f"{where}.operator", "must be Equal or Exists")
        if toleration.get("effect", "") not in ("", "NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise ProfileProblem(f"{where}.effect", "must be NoSchedule, PreferNoSchedule or NoExecute")
        if toleration.get("tolerationSeconds") is not None and toleration.get("effect") != "NoExecute":
            raise ProfileProblem(f"{where}.tolerationSeconds", "is only for the NoExecute effect")
        if toleration.get("key") and not is_label_key(str(toleration["key"])):
            raise ProfileProblem(f"{where}.key", f"{toleration['key']!r} is not a valid taint key")
        if not toleration.get("key") and toleration.get("operator") != "Exists":
            raise ProfileProblem(f"{where}.operator", "must be Exists when the key is empty")
    return tolerations


def _volumes(value: Any) -> list[Json]:
    volumes = _list_of_mappings(value, "volumes")
    seen: set[str] = set()
    for i, volume in enumerate(volumes):
        where = f"volumes[{i}]"
        name = volume.get("name")
        if not isinstance(name, str) or _DNS_LABEL.fullmatch(name) is None:
            raise ProfileProblem(f"{where}.name", f"{name!r} is not a valid volume name (a DNS label)")
        if name in seen:
            raise ProfileProblem(f"{where}.name", f"{name!r} is used by an earlier volume")
        seen.add(name)
        kinds = sorted(set(volume) - {"name"})
        if len(kinds) != 1:
            raise ProfileProblem(where, f"a volume has exactly one type, one of {', '.join(VOLUME_TYPES)}; "
                                 f"got {', '.join(kinds) or 'none'}")
        kind = kinds[0]
        if kind not in VOLUME_TYPES:
            why = "it reaches the node (restricted Pod Security Standard)" if kind == "hostPath" else \
                "a profile's volumes are PVCs, emptyDirs with a sizeLimit, ConfigMaps and Secrets"
            raise ProfileProblem(f"{where}.{kind}", f"{kind} volumes are not allowed: {why}")
        source = _mapping(volume[kind], f"{where}.{kind}")
        if kind == "emptyDir":
            if source.get("sizeLimit") is None:
                raise ProfileProblem(f"{where}.emptyDir.sizeLimit", "is required: an emptyDir without one can fill "
                                     "the node's disk (or memory, with medium Memory)")
            source["sizeLimit"] = _quantity(source["sizeLimit"], f"{where}.emptyDir.sizeLimit")
        if kind == "persistentVolumeClaim":
            _subdomain(source.get("claimName"), f"{where}.persistentVolumeClaim.claimName")
        if kind == "configMap":
            _subdomain(source.get("name"), f"{where}.configMap.name")
        if kind == "secret":
            _subdomain(source.get("secretName"), f"{where}.secret.secretName")
        volume[kind] = source
    return volumes


def _resources(value: Any) -> Json:
    resources = _mapping(value, "resources")
    for key in resources:
        if key not in ("requests", "limits"):
            raise ProfileProblem(f"resources.{key}", "a profile's resources are requests and limits")
    parsed: dict[str, dict[str, Decimal]] = {}
    for kind in ("requests", "limits"):
        if resources.get(kind) is None:
            continue
        amounts = _mapping(resources[kind], f"resources.{kind}")
        parsed[kind] = {}
        for name, amount in amounts.items():
            where = f"resources.{kind}.{name}"
            if not is_label_key(name):
                raise ProfileProblem(where, "not a valid resource name")
            amounts[name] = _quantity(amount, where)
            parsed[kind][name] = quantity_value(amounts[name])
            if _extended(name) and parsed[kind][name] != parsed[kind][name].to_integral_value():
                raise ProfileProblem(where, f"{name} is counted in whole units")
        resources[kind] = amounts
    requests, limits = parsed.get("requests", {}), parsed.get("limits", {})
    for name, amount in requests.items():
        where = f"resources.requests.{name}"
        if name in limits and amount > limits[name]:
            raise ProfileProblem(where, f"{resources['requests'][name]} is over its limit {resources['limits'][name]}")
        if _extended(name) and name in limits and amount != limits[name]:
            raise ProfileProblem(where, f"{name} cannot be overcommitted: its request must equal its limit")
        if _extended(name) and name not in limits:
            raise ProfileProblem(f"resources.limits.{name}", f"is required: an extended resource such as {name} "
                                 "needs a limit (its request defaults to it)")
    return resources


def _extended(name: str) -> bool:
    if name in _NATIVE_RESOURCES or name.startswith("hugepages-"):
        return False
    domain = name.rpartition("/")[0]
    return bool(domain) and domain != "kubernetes.io" and not domain.endswith(".kubernetes.io")


def _quantity(value: Any, where: str) -> str:
    """A Kubernetes quantity as the Job carries it (a string), or ``ProfileProblem``."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ProfileProblem(where, f"must be a quantity such as 500m, 2 or 8Gi, got {type(value).__name__}")
    text = value if isinstance(value, str) else (f"{value:g}" if isinstance(value, float) else str(value))
    try:
        amount = quantity_value(text)
    except ValueError as exc:
        raise ProfileProblem(where, str(exc)) from exc
    if amount < 0:
        raise ProfileProblem(where, f"{text!r} is negative")
    return text


def quantity_value(text: str) -> Decimal:
    """A Kubernetes quantity's value (``500m`` → 0.5, ``8Gi`` → 8589934592)."""
    match = _QUANTITY.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a quantity (a number with an optional suffix: m, k, M, G, Ki, Mi, Gi, ...)")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:
        raise ValueError(f"{text!r} is not a quantity") from exc
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    if suffix:
        return number * Decimal(10) ** int(suffix[1:])
    return number


def _env_from(value: Any) -> list[Json]:
    sources = _list_of_mappings(value, "envFrom")
    for i, source in enumerate(sources):
        refs = [k for k in ("secretRef", "configMapRef") if k in source]
        if len(refs) != 1:
            raise ProfileProblem(f"envFrom[{i}]", "names exactly one Secret (secretRef) or ConfigMap (configMapRef)")
        ref = _mapping(source[refs[0]], f"envFrom[{i}].{refs[0]}")
        _subdomain(ref.get("name"), f"envFrom[{i}].{refs[0]}.name")
        source[refs[0]] = ref
    return sources


def _volume_mounts(value: Any) -> list[Json]:
    mounts = _list_of_mappings(value, "volumeMounts")
    paths: set[str] = set()
    for i, mount in enumerate(mounts):
        where = f"volumeMounts[{i}]"
        path = mount.get("mountPath")
        if not isinstance(path, str) or not path.startswith("/") or ".." in path.split("/"):
            raise ProfileProblem(f"{where}.mountPath", f"{path!r} is not an absolute path without '..'")
        if path in paths:
            raise ProfileProblem(f"{where}.mountPath", f"{path} is mounted twice")
        paths.add(path)
        if mount.get("mountPropagation") == "Bidirectional":
            raise ProfileProblem(f"{where}.mountPropagation", "Bidirectional needs a privileged container")
    return mounts


def _check_mounts(spec: Json) -> None:
    """Every mount names one of the profile's volumes (the API server refuses the pod otherwise)."""
    volumes = {v["name"] for v in spec.get("volumes") or ()}
    for i, mount in enumerate(spec.get("volumeMounts") or ()):
        if mount.get("name") not in volumes:
            raise ProfileProblem(f"volumeMounts[{i}].name", f"{mount.get('name')!r} is not one of the profile's "
                                 f"volumes ({', '.join(sorted(volumes)) or 'it has none'})")


_CHECKS: dict[str, Any] = {
    "nodeSelector": _node_selector,
    "tolerations": _tolerations,
    "affinity": lambda value: _mapping(value, "affinity"),
    "priorityClassName": lambda value: _subdomain(value, "priorityClassName"),
    "runtimeClassName": lambda value: _subdomain(value, "runtimeClassName"),
    "serviceAccountName": lambda value: _subdomain(value, "serviceAccountName"),
    "volumes": _volumes,
    "resources": _resources,
    "envFrom": _env_from,
    "volumeMounts": _volume_mounts,
    "labels": lambda value: _labels(value, "labels", RESERVED_LABELS),
    "annotations": lambda value: _labels(value, "annotations", RESERVED_ANNOTATIONS, values_are_labels=False),
}


def check_field(name: str, value: Any) -> Any:
    """The profile field ``name``'s value as it goes into a Job, or ``ProfileProblem``."""
    return _CHECKS[name](value)


def check_mounts(spec: Json) -> None:
    """Every mount names one of the profile's volumes (the API server refuses the pod otherwise)."""
    _check_mounts(spec)
