"""Bearer tokens for the HTTP face: who may run Jobs, read replies and cancel.

Anyone who reaches ``cloud-worker serve`` without a token could run any allowed image on
the cluster's account and read every request's log tail, so the default is to require
one (``CLOUD_WORKER_HTTP_AUTH=token``) and ``serve`` refuses to start without it; ``none``
is an explicit choice for a face behind a gateway that authenticates.

Tokens come from ``CLOUD_WORKER_HTTP_TOKEN`` and/or ``CLOUD_WORKER_HTTP_TOKEN_FILE``, one
per line, so a rotation holds the old and the new token for a while. The file is
re-read when it changes (a mounted Secret is updated in place by the kubelet: a new
file behind the same path), so rotating needs no restart. Comparison is constant-time
(``hmac.compare_digest``) against every token, so timing says nothing of which matched.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from handler.core.config import Settings
from handler.core.errors import ConfigError

log = logging.getLogger(__name__)

REALM = "cloud-worker"
#: Routes a probe or a scraper reads without a token: they carry no request data.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class BearerTokens:
    """The tokens accepted right now: the setting's, plus the file's as it is now."""

    def __init__(self, token: str = "", path: str = "") -> None:
        self._fixed = tuple(_lines(token))
        self._path = Path(path) if path else None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._from_file: tuple[str, ...] = ()
        if self._path is not None:
            self._reload()
            if self._stamp is None:
                raise ConfigError(f"CLOUD_WORKER_HTTP_TOKEN_FILE {path!r} cannot be read")
        if not self.tokens():
            raise ConfigError("CLOUD_WORKER_HTTP_AUTH=token, but CLOUD_WORKER_HTTP_TOKEN and the token file hold no "
                              "token")

    @classmethod
    def from_settings(cls, settings: Settings) -> BearerTokens | None:
        """The tokens ``settings`` configure, or None when authentication is off
        (``CLOUD_WORKER_HTTP_AUTH=none``). ``ConfigError`` when it is on without a token."""
        if settings.http_auth == "none":
            return None
        if not settings.http_token and not settings.http_token_file:
            raise ConfigError(
                "cloud-worker serve needs a bearer token: set CLOUD_WORKER_HTTP_TOKEN_FILE (or CLOUD_WORKER_HTTP_TOKEN), "
                "or CLOUD_WORKER_HTTP_AUTH=none when a gateway in front of it authenticates")
        return cls(settings.http_token, settings.http_token_file)

    def tokens(self) -> tuple[str, ...]:
        self._reload()
        return self._fixed + self._from_file

    def accepts(self, headers: Mapping[str, str]) -> bool:
        """The request's ``Authorization: Bearer <token>`` names an accepted token."""
        given = bearer(headers)
        if given is None:
            return False
        # Compare with every token (no early exit): the time taken says nothing of which matched.
        matches = [hmac.compare_digest(given.encode(), token.encode()) for token in self.tokens()]
        return any(matches)

    def _reload(self) -> None:
        if self._path is None:
            return
        try:
            stat = os.stat(self._path)
        except OSError as exc:
            if self._stamp is not None:
                log.warning("token file %s cannot be read (%s); keeping the tokens read before", self._path, exc)
            return
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        with self._lock:
            try:
                tokens = tuple(_lines(self._path.read_text()))
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("token file %s cannot be read (%s); keeping the tokens read before", self._path, exc)
                return
            if self._stamp is not None:
                log.info("token file %s changed: %d token(s) now accepted", self._path, len(tokens))
            self._stamp, self._from_file = stamp, tokens


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750), else None."""
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def challenge(invalid: bool) -> str:
    """The ``WWW-Authenticate`` value of a 401 (RFC 6750 section 3)."""
    return f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid else "")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
