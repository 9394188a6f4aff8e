"""Deterministic, valid Kubernetes names for a request's Job.

The name is the client's ``jobName`` made DNS-1123 safe plus a short hash of the
request's identity. The same request, delivered twice, therefore maps to the same Job
name, and the API server's 409 tells the second delivery to adopt the first Job; a
different request whose name collides gets ``distinct_job_name`` instead.
"""

from __future__ import annotations

import hashlib
import re

#: Label values and Job names are at most 63 characters (the Job controller copies the
#: name into the pods' ``job-name`` label).
MAX_NAME = 63
HASH_CHARS = 10
#: What a client's jobName may contain before it is lower-cased and dots/underscores
#: become dashes. Anything else (slashes, spaces, quotes, '=') is rejected, not mangled.
CLIENT_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?")


#: A Job name as ``job_name`` makes them: DNS-1123, at most 63 characters.
JOB_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def is_valid_job_name(name: str) -> bool:
    return JOB_NAME.fullmatch(name) is not None


def is_valid_client_name(name: str) -> bool:
    return CLIENT_NAME.fullmatch(name) is not None


def sanitise(name: str) -> str:
    """``Test_Job.v2`` → ``test-job-v2``: lower case, ``[a-z0-9-]``, no dash runs or ends."""
    lowered = re.sub(r"[._]", "-", name.lower())
    return re.sub(r"-{2,}", "-", lowered).strip("-")


def identity_hash(identity: str) -> str:
    return hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]


def job_name(client_name: str, identity: str) -> str:
    """The Job name for a request: ``<sanitised name>-<hash of identity>``, ≤ 63 chars."""
    base = sanitise(client_name)[: MAX_NAME - HASH_CHARS - 1].rstrip("-")
    return f"{base}-{identity_hash(identity)}"


def distinct_job_name(client_name: str, identity: str, spec: str) -> str:
    """The name of a request's Job when its usual name is taken by a different request
    (another identity, or the same identity asking for other work, ``spec``): a hash of
    both, so every delivery of this request still finds the same Job."""
    return job_name(client_name, f"{identity}\n{spec}")
