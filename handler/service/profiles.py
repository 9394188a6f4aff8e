"""The operator's Job profiles, loaded and proven at start-up, never at the first request.

``load_profiles`` reads ``CLOUD_WORKER_PROFILES_FILE`` (YAML), parses it (``core.profiles``),
and for every profile:

1. checks each Kubernetes field against the strict schema of the Job field it becomes
   (``adapters.jobschema``: a misspelt ``operatr`` in a toleration is named, not dropped);
2. merges the profile into a sample Job with ``manifest.build_job``, exactly as a request of
   that profile gets it, and checks the whole Job against the strict schema;
3. checks the sample Job's pod against the restricted Pod Security Standard
   (``core.podsecurity``): a profile may never loosen what the handler enforces.

The first problem stops the handler: ``ConfigError`` (exit 3) with one line naming the file,
the profile and the field. Without a file the built-in profile is used and nothing is
imported or read.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from handler.core.config import Settings
from handler.core.errors import ConfigError
from handler.core.manifest import build_job
from handler.core.podsecurity import restricted_violations
from handler.core.profiles import KUBERNETES_FIELDS, Profile, ProfileProblem, Profiles, parse_profiles
from handler.core.request import WorkRequest

log = logging.getLogger(__name__)
#: The sample request each profile is merged with (any valid request builds the same profile part).
SAMPLE_IMAGE = "registry.example.com/sample/job:1"


def load_profiles(settings: Settings) -> Profiles:
    """The handler's profiles (the built-in one without a file), each proven as above."""
    if not settings.profiles_file:
        return Profiles.builtin()
    source = settings.profiles_file
    where = f"CLOUD_WORKER_PROFILES_FILE {source}"
    try:
        text = Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read: {exc.strerror or exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from exc
    try:
        profiles = parse_profiles(document, settings, source)
    except ProfileProblem as exc:
        raise ConfigError(f"{where}: {_described(exc.where)}: {exc.message}") from exc
    for profile in profiles.by_name.values():
        problems = profile_problems(profile, settings)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ConfigError(f"{where}: profile {profile.name!r}: {problems[0]}{more}")
    log.info("profiles from %s: %s; requests that name none get %s", source,
             ", ".join(describe(p) for p in profiles.by_name.values()), profiles.default.name)
    return profiles


def profile_problems(profile: Profile, settings: Settings) -> list[str]:
    """Every way the profile's Jobs would be refused or would loosen the restricted Pod
    Security Standard: its fields against their schema, then the sample Job."""
    from handler.adapters import jobschema  # only a handler with a profiles file pays for jsonschema

    problems = [p for name in KUBERNETES_FIELDS if name in profile.spec
                for p in jobschema.field_problems(name, profile.spec[name])]
    if problems:
        return problems
    job = sample_job(profile, settings)
    problems = [f"in its sample Job: {p}" for p in jobschema.job_problems(job)]
    problems += [f"{p} (restricted Pod Security Standard)"
                 for p in restricted_violations(job["spec"]["template"])]
    return problems


def sample_job(profile: Profile, settings: Settings) -> dict[str, Any]:
    """The Job a request of ``profile`` gets, for a sample request."""
    request = WorkRequest(request_id="sample", identity="sample", job_name="profile-sample",
                          client_job_name="profile-sample", image=SAMPLE_IMAGE,
                          timeout_minutes=profile.timeout_bound(settings),
                          input_bucket_url="s3://sample-bucket", output_bucket_url="s3://sample-bucket",
                          profile=profile)
    return build_job(request, settings)


def describe(profile: Profile) -> str:
    """``gpu-large (resources, nodeSelector, tolerations; maxInFlight 2, maxTimeoutMinutes 20)``."""
    parts = [", ".join(profile.spec) or "the settings as they are"]
    bounds = [f"{label} {value}" for label, value in (
        ("maxInFlight", profile.max_in_flight), ("maxTimeoutMinutes", profile.max_timeout_minutes),
        ("backoffLimit", profile.backoff_limit), ("allowedImages", ",".join(profile.allowed_images) or None),
        ("failFastExitCodes", ",".join(map(str, profile.fail_fast_exit_codes))
         if profile.fail_fast_exit_codes is not None else None)) if value is not None]
    return f"{profile.name} ({'; '.join(parts + ([', '.join(bounds)] if bounds else []))})"


def _described(where: str) -> str:
    """``profiles.gpu.volumes[0]`` → ``profile 'gpu': volumes[0]`` (a path in the file otherwise)."""
    if where.startswith("profiles."):
        name, _, rest = where.removeprefix("profiles.").partition(".")
        bracket = name.find("[")
        if bracket > 0:
            name, rest = name[:bracket], name[bracket:] + (f".{rest}" if rest else "")
        return f"profile {name!r}" + (f": {rest}" if rest else "")
    return where
