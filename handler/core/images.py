"""Container image references: strict parsing and the operator's allowlist.

A request names the image its Job runs, so the image is the one thing a queue
publisher controls that executes code in the cluster. The reference is parsed with the
distribution grammar (no look-alike tricks survive normalisation) and matched against
allowed prefixes by whole components, never by string prefix: ``registry.example.com``
does not allow ``registry.example.com.evil.io/x``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_HUB = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?"
_REFERENCE = re.compile(
    rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}))?"
)
MAX_REFERENCE = 512


class InvalidImage(ValueError):
    """Not a valid image reference."""


@dataclass(frozen=True)
class ImageRef:
    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}"


def parse_image(text: str) -> ImageRef:
    """Parse and normalise like the container runtime (``python`` → ``docker.io/library/python``)."""
    if not text or len(text) > MAX_REFERENCE:
        raise InvalidImage("must be a non-empty image reference of at most 512 characters")
    match = _REFERENCE.fullmatch(text)
    if match is None:
        raise InvalidImage(f"{text!r} is not a valid image reference (lower-case name[:tag][@digest])")
    domain, path = match["domain"], match["path"]
    # The runtime's rule: a first component is a registry only if it looks like a host.
    if domain is not None and not _looks_like_host(domain):
        if domain != domain.lower():
            raise InvalidImage(f"{text!r}: repository names must be lower case")
        domain, path = None, f"{domain}/{path}"
    if domain is None:
        domain = DOCKER_HUB
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return ImageRef(domain=domain.lower(), path=path, tag=match["tag"], digest=match["digest"])


@dataclass(frozen=True)
class AllowRule:
    domain: str
    path_prefix: tuple[str, ...]
    require_digest: bool

    def allows(self, image: ImageRef) -> bool:
        if image.domain != self.domain:
            return False
        parts = tuple(image.path.split("/"))
        if parts[: len(self.path_prefix)] != self.path_prefix:
            return False
        return image.digest is not None or not self.require_digest


def parse_rule(pattern: str) -> AllowRule:
    """``registry.example.com/team`` allows that registry's ``team/...`` repositories;
    a trailing ``@sha256`` additionally requires the image to be pinned by digest;
    ``docker.io/library/python`` allows exactly the Hub's python repository."""
    text = pattern.strip()
    require_digest = text.endswith("@sha256")
    text = text.removesuffix("@sha256").rstrip("/").removesuffix("/*")
    first, _, rest = text.partition("/")
    if _looks_like_host(first):
        domain, path = first, rest
    else:
        domain, path = DOCKER_HUB, text
    return AllowRule(domain.lower(), tuple(p for p in path.split("/") if p), require_digest)


def check_allowed(image: ImageRef, patterns: tuple[str, ...]) -> bool:
    """True when no allowlist is configured or any rule allows the image."""
    return not patterns or any(parse_rule(p).allows(image) for p in patterns)


def _looks_like_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"
