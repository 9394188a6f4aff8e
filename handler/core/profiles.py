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

This module parses the profiles document (already read from YAML): the names, the default,
the handler's bounds, and any field that is the handler's refused; ``profilefields`` checks
each Kubernetes field as the API server would and more. The schema itself and the Pod Security
check of the merged sample Job are done at start-up by ``service.profiles``, which turns every
problem into one line naming the profile and the field.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from handler.core.config import Settings
from handler.core.profilefields import ProfileProblem, check_field, check_mounts, quantity_value

__all__ = ["BUILTIN", "NAME", "Profile", "ProfileProblem", "Profiles", "parse_profiles", "profile_queue",
           "quantity_value"]

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
#: Longest maxInFlight: a lane's threads and prefetch (more is surely a typo).
MAX_IN_FLIGHT = 1000

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
            spec[key] = check_field(key, fields[key])
    check_mounts(spec)
    return Profile(
        name=name,
        spec=spec,
        max_timeout_minutes=_max_timeout(fields.get("maxTimeoutMinutes"), settings),
        allowed_images=_string_list(fields, "allowedImages"),
        backoff_limit=_count(fields, "backoffLimit", minimum=0, maximum=100),
        fail_fast_exit_codes=_exit_codes(fields.get("failFastExitCodes")),
        max_in_flight=_count(fields, "maxInFlight", minimum=1, maximum=MAX_IN_FLIGHT),
    )


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
