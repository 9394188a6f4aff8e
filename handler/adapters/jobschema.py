"""The Kubernetes schema of a batch/v1 Job, strict (unknown fields refused): the only importer of ``jsonschema``.

The schema is a compact extract of the one the tests use (kubernetes-validate's
``v1.35-local-strict``), committed as ``schemas/job-v1.35-strict.json`` and made by
``scripts/extract-job-schema.py``; nothing outside the package is read. It is loaded, and
``jsonschema`` imported (about 0.1 s), only by a handler that has a profiles file, when it
checks its profiles at start-up (``service.profiles``).

Errors come back as ``<path>: <message>`` lines, the path in the object checked, so the
caller names the field.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any

import jsonschema

KUBERNETES_VERSION = "1.35"
SCHEMA_FILE = f"job-v{KUBERNETES_VERSION}-strict.json"
#: Where each profile field lands in a Job, as the definition whose property it is.
_SLOTS = {
    "io.k8s.api.core.v1.PodSpec": ("nodeSelector", "tolerations", "affinity", "priorityClassName",
                                   "runtimeClassName", "serviceAccountName", "volumes"),
    "io.k8s.api.core.v1.Container": ("resources", "envFrom", "volumeMounts"),
    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": ("labels", "annotations"),
}


@functools.cache
def _schema() -> dict[str, Any]:
    text = resources.files("handler.adapters").joinpath("schemas", SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator(pointer: str = "") -> Any:
    """A validator of the whole Job, or (``pointer``) of one property of a definition."""
    schema = _schema()
    if pointer:
        schema = {"$schema": schema["$schema"], "$ref": pointer, "$defs": schema["$defs"]}
    return jsonschema.Draft202012Validator(schema)


def job_problems(job: Mapping[str, Any]) -> list[str]:
    """Every way ``job`` breaks the strict Job schema, as ``<path>: <message>``."""
    return _problems(_validator().iter_errors(job), "")


def field_problems(name: str, value: Any) -> list[str]:
    """Every way a profile field's value breaks the schema of the Job field it becomes
    (``tolerations`` → ``PodSpec.tolerations``), its path starting with ``name``."""
    for definition, names in _SLOTS.items():
        if name in names:
            return _problems(_validator(f"#/$defs/{definition}/properties/{name}").iter_errors(value), name)
    raise KeyError(f"{name} is not a field of a Job's pod, container or metadata")


def _problems(errors: Iterable[jsonschema.ValidationError], root: str) -> list[str]:
    out = []
    for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        path = root
        for part in error.absolute_path:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        out.append(f"{path or '<root>'}: {_message(error)}")
    return out


def _message(error: jsonschema.ValidationError) -> str:
    """The validator's message, with the offending value cut short (it may be a whole volume)."""
    if error.validator == "additionalProperties":
        return error.message.replace("Additional properties are not allowed", "unknown field(s)")
    if error.validator in ("type", "enum", "oneOf", "anyOf"):
        shown = json.dumps(error.instance)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        expected = error.validator_value if error.validator != "oneOf" else "one of the allowed shapes"
        return f"{shown} is not valid here (expected {expected})"
    return error.message
