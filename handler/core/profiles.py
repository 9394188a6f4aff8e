"""Job profiles: Job shapes the operator defines and a request chooses by name.

A profile is data: the Kubernetes fields it adds to a Job's pod (``resources``,
``nodeSelector``, ``tolerations``, ``affinity``, ``priorityClassName``, ``runtimeClassName``,
``serviceAccountName``, ``envFrom``, ``volumes`` and ``volumeMounts``, pod ``labels`` and
``annotations``), spelled as Kubernetes spells them, and the handler's own bounds for it
(``maxTimeoutMinutes``, ``allowedImages``, ``backoffLimit``, ``failFastExitCodes``,
``maxInFlight``). A request names a profile and nothing else: no request field reaches a
profile's fields (``manifest.build_job`` takes them from the profile only), so a publisher can
choose among the operator's shapes but never widen one.

The handler's settings are the defaults of every profile: a profile that does not name a
field gets the setting's value (``CLOUD_WORKER_JOB_RESOURCES``, ``_SERVICE_ACCOUNT``,
``_BACKOFF_LIMIT``, ``_FAIL_FAST_EXIT_CODES``, ``_MAX_TIMEOUT_MINUTES``), so ``standard: {}``
is today's Job, and without a profiles file the built-in profile ``default`` is exactly that.

This module parses the profiles document (already read from YAML) and checks what the API
server would check beyond the JSON schema (quantities, names, label syntax, mounts that name
a volume) and what the handler forbids (any field that is the handler's, volumes other than
PVC, emptyDir with a sizeLimit, ConfigMap and Secret, labels the handler's watch relies on).
The schema itself and the Pod Security check of the merged sample Job are done at start-up
by ``service.profiles``, which turns every problem into one line naming the profile and the field.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from handler.core.config import Settings

Json = dict[str, Any]

#: A profile's name: a DNS label, so it is also a label value and part of a queue name.
NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
#: The profile of every request when no profiles file is configured: the handler's settings.
BUILTIN_NAME = "default"

#: Profile fields that go into the pod spec, the Job's container and the pod's metadata.
POD_FIELDS = ("nodeSelector", "tolerations", "affinity", "priorityClassName", "runtimeClassName",
              "serviceAccountName", "volumes")
CONTAINER_FIELDS = ("resources", "envFrom", "volumeMounts")
METADATA_FIELDS = ("labels", "annotations")
KUBERNETES_FIELDS = POD_FIELDS + CONTAINER_FIELDS + METADATA_FIELDS
#: The handler's own bounds of a profile (not Kubernetes fields).
HANDLER_FIELDS = ("maxTimeoutMinutes", "allowedImages", "backoffLimit", "failFastExitCodes", "maxInFlight")
FIELDS = KUBERNETES_FIELDS + HANDLER_FIELDS

#: Pod and container fields a profile may never set, with why: what the handler enforces.
HANDLERS_OWN = {
    **dict.fromkeys(("securityContext", "privileged", "capabilities", "allowPrivilegeEscalation", "runAsUser",
                     "runAsNonRoot", "runAsGroup", "seccompProfile", "appArmorProfile", "seLinuxOptions",
                     "procMount", "windowsOptions", "sysctls"),
                    "the handler's restricted security context applies to every Job"),
    **dict.fromkeys(("hostNetwork", "hostPID", "hostIPC", "hostUsers", "hostPath", "hostAliases", "hostPort",
                     "nodeName"),
                    "a Job never gets the node's namespaces, paths or ports (restricted Pod Security Standard)"),
    **dict.fromkeys(("containers", "initContainers", "ephemeralContainers", "image", "command", "args", "env",
                     "ports", "imagePullPolicy", "restartPolicy", "automountServiceAccountToken",
                     "activeDeadlineSeconds", "ttlSecondsAfterFinished", "podFailurePolicy", "finalizers"),
                    "the handler builds that part of every Job (see the README, \"The Job\")"),
}
#: Volume types a profile may use: what the restricted Pod Security Standard allows and a
#: Job can need, nothing that reaches the node or another namespace.
VOLUME_TYPES = ("persistentVolumeClaim", "emptyDir", "configMap", "secret")
#: Label keys (and prefixes) the handler and the Job controller set on a Job's pods: the
#: handler's watch finds its pods by them, the Job controller refuses a template that differs.
RESERVED_LABELS = ("cloud-worker.mstc.io/", "app.kubernetes.io/managed-by", "batch.kubernetes.io/",
                   "controller-uid", "job-name")
RESERVED_ANNOTATIONS = ("cloud-worker.mstc.io/",)
#: Longest maxInFlight: a lane's threads and prefetch (more is surely a typo).
MAX_IN_FLIGHT = 1000

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


@dataclass(frozen=True)
class Profile:
    """One Job shape. ``spec`` holds the Kubernetes fields, by their Kubernetes names."""

    name: str
    spec: Mapping[str, Any] = field(default_factory=dict, hash=False)
    max_timeout_minutes: float | None = None
    allowed_images: tuple[str, ...] = ()
    backoff_limit: int | None = None
    fail_fast_exit_codes: tuple[int, ...] | None = None
    max_in_flight: int | None = None
    #: From a profiles file (then its name is on the Job and in the reply); False for the
    #: built-in profile, whose Jobs are exactly those of a handler without profiles.
    configured: bool = True

    def fields(self, names: Sequence[str]) -> Json:
        """A deep copy of the profile's Kubernetes fields among ``names``, for a Job."""
        return {name: copy.deepcopy(self.spec[name]) for name in names if name in self.spec}

    def timeout_bound(self, settings: Settings) -> float:
        """The longest ``timeOut`` a request of this profile may ask for, in minutes."""
        return self.max_timeout_minutes if self.max_timeout_minutes is not None else settings.max_timeout_minutes

    def default_timeout(self, settings: Settings) -> float:
        """The timeout of a request of this profile that gives none: the handler's default,
        cut to the profile's bound."""
        return min(settings.default_timeout_minutes, self.timeout_bound(settings))


#: The profile of every request when no profiles file is configured.
BUILTIN = Profile(BUILTIN_NAME, configured=False)


@dataclass(frozen=True)
class Profiles:
    """The profiles of one handler: every one by name, and the one of requests naming none."""

    default: Profile
    by_name: Mapping[str, Profile] = field(hash=False)
    #: Where they came from (the file), for messages; None for the built-in profile.
    source: str | None = None

    @classmethod
    def builtin(cls) -> Profiles:
        return cls(BUILTIN, {BUILTIN_NAME: BUILTIN})

    @property
    def configured(self) -> bool:
        return self.source is not None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.by_name)

    def get(self, name: str) -> Profile | None:
        return self.by_name.get(name)

    @property
    def limited(self) -> tuple[Profile, ...]:
        """The profiles with a ``maxInFlight``: each has a queue and a lane of its own."""
        return tuple(p for p in self.by_name.values() if p.max_in_flight is not None)

    def home(self, profile: Profile) -> str | None:
        """The name of the lane a request of ``profile`` runs on: its own when it has a
        ``maxInFlight``, else None (the work queue's lane)."""
        known = self.by_name.get(profile.name)
        return known.name if known is not None and known.max_in_flight is not None else None

    def label(self, name: str | None) -> str:
        """``name`` as a metric label value: a name of these profiles, else "" (so the
        label's values stay the configured names, whatever a Job or request says)."""
        return name if name is not None and name in self.by_name else ""


def profile_queue(work_queue: str, name: str) -> str:
    """The queue (and routing key) of a profile's requests: ``<work queue>.profile.<name>``."""
    return f"{work_queue}.profile.{name}"


# --- the profiles document (CLOUD_WORKER_PROFILES_FILE, as loaded from YAML)

def parse_profiles(document: Any, settings: Settings, source: str) -> Profiles:
    """The profiles a document defines: ``{default: NAME, profiles: {NAME: {...}, ...}}``.
    Raises ``ProfileProblem`` (``where`` starting with ``profiles.<name>``) for the first
    problem found; the caller names the file."""
    if not isinstance(document, Mapping):
        raise ProfileProblem("", "the file must hold a mapping with `default` and `profiles`")
    unknown = sorted(str(k) for k in document if k not in ("default", "profiles"))
    if unknown:
        raise ProfileProblem(unknown[0], "unknown key: the file has only `default` and `profiles`")
    raw = document.get("profiles")
    if not isinstance(raw, Mapping) or not raw:
        raise ProfileProblem("profiles", "must map at least one profile name to its fields")
    by_name: dict[str, Profile] = {}
    for name, fields in raw.items():
        if not isinstance(name, str) or NAME.fullmatch(name) is None:
            raise ProfileProblem(f"profiles.{name}", "a profile's name is 1-63 lower-case letters, digits and '-', "
                                 "starting and ending with a letter or digit")
        try:
            by_name[name] = parse_profile(name, fields, settings)
        except ProfileProblem as exc:
            raise ProfileProblem(f"profiles.{name}" + (f".{exc.where}" if exc.where else ""), exc.message) from exc
    default = document.get("default")
    if not isinstance(default, str) or default not in by_name:
        raise ProfileProblem("default", f"must name the profile of requests that name none, one of "
                             f"{', '.join(by_name)}; got {default!r}")
    return Profiles(by_name[default], by_name, source)


def parse_profile(name: str, fields: Any, settings: Settings) -> Profile:
    """One profile from its fields (None or ``{}``: the handler's settings as they are)."""
    if fields is None:
        fields = {}
    if not isinstance(fields, Mapping):
        raise ProfileProblem("", "a profile is a mapping of fields (`{}` for the handler's settings as they are)")
    for key in fields:
        if key not in FIELDS:
            why = HANDLERS_OWN.get(str(key))
            if why is not None:
                raise ProfileProblem(str(key), f"a profile cannot set it: {why}")
            raise ProfileProblem(str(key), f"unknown field; a profile names any of {', '.join(FIELDS)}")
    spec: Json = {}
    for key in KUBERNETES_FIELDS:
        if key in fields and fields[key] is not None:
            spec[key] = _CHECKS[key](fields[key])
    _check_mounts(spec)
    return Profile(
        name=name,
        spec=spec,
        max_timeout_minutes=_max_timeout(fields.get("maxTimeoutMinutes"), settings),
        allowed_images=_string_list(fields, "allowedImages"),
        backoff_limit=_count(fields, "backoffLimit", minimum=0, maximum=100),
        fail_fast_exit_codes=_exit_codes(fields.get("failFastExitCodes")),
        max_in_flight=_count(fields, "maxInFlight", minimum=1, maximum=MAX_IN_FLIGHT),
    )


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


# --- the handler's own bounds

def _max_timeout(value: Any, settings: Settings) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ProfileProblem("maxTimeoutMinutes", f"must be a positive number of minutes, got {value!r}")
    if value > settings.max_timeout_minutes:
        raise ProfileProblem("maxTimeoutMinutes", f"{value:g} is over CLOUD_WORKER_MAX_TIMEOUT_MINUTES "
                             f"({settings.max_timeout_minutes:g}), the longest Job the broker and the chart are sized "
                             "for: raise that first")
    return float(value)


def _count(fields: Mapping[str, Any], key: str, minimum: int, maximum: int) -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ProfileProblem(key, f"must be a whole number from {minimum} to {maximum}, got {value!r}")
    return value


def _string_list(fields: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = fields.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ProfileProblem(key, "must be a non-empty list of image prefixes (as CLOUD_WORKER_ALLOWED_IMAGES)")
    return tuple(v.strip() for v in value)


def _exit_codes(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, int) and not isinstance(c, bool) and 1 <= c <= 255
                                              for c in value):
        raise ProfileProblem("failFastExitCodes", f"must be a list of exit codes from 1 to 255, got {value!r}")
    return tuple(value)
