"""The local backend's images file: which command stands in for which container image.

Without a container engine the local backend cannot run an image, so a small TOML file
says what to run instead (``CLOUD_WORKER_LOCAL_IMAGES``; see ``examples/images.toml``)::

    [images."mstc/python-test"]
    command = ["cloud-worker", "job", "--", "python", "{here}/python-test/main.py"]
    env = { SLEEP_SECONDS = "1" }   # optional, like an image's ENV lines

A key without a tag or digest stands for every tag of that repository; a key with one
only for that reference, and wins over the bare repository. Keys and requested images
are normalised the way the container runtime does (``python`` is
``docker.io/library/python``), so ``mstc/python-test:latest`` finds ``mstc/python-test``.
``{here}`` in a command or an env value is the directory holding the file: jobs run in
a working directory of their own (as in a container), so relative paths would not resolve.

Parsing is pure (the file's text in, an ``ImageMap`` out); only ``load_image_map``
reads a file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handler.core.errors import ConfigError
from handler.core.images import ImageRef, InvalidImage, parse_image


@dataclass(frozen=True)
class LocalImage:
    """What runs for one image: the command (argv) and extra environment."""

    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageMap:
    source: str
    #: Normalised ``domain/path`` → entry, for keys without tag or digest.
    by_repository: Mapping[str, LocalImage]
    #: Normalised ``domain/path:tag`` or ``domain/path@digest`` → entry.
    by_reference: Mapping[str, LocalImage]

    def lookup(self, image: str) -> LocalImage | None:
        """The entry standing in for ``image``, or None when the file does not map it."""
        try:
            ref = parse_image(image)
        except InvalidImage:
            return None
        for key in _reference_keys(ref):
            if key in self.by_reference:
                return self.by_reference[key]
        return self.by_repository.get(ref.repository)

    def names(self) -> list[str]:
        return sorted([*self.by_repository, *self.by_reference])


def parse_image_map(text: str, source: str, here: Path) -> ImageMap:
    """Parse the TOML text of an images file; ``ConfigError`` says what is wrong and where."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    images = document.get("images")
    if not isinstance(images, dict) or not images:
        raise ConfigError(f'{source}: expected at least one [images."<image>"] table')
    by_repository: dict[str, LocalImage] = {}
    by_reference: dict[str, LocalImage] = {}
    for key, entry in images.items():
        where = f'{source}: [images."{key}"]'
        try:
            ref = parse_image(key)
        except InvalidImage as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        local = _entry(entry, where, here)
        if ref.tag is None and ref.digest is None:
            by_repository[ref.repository] = local
        else:
            by_reference[_reference_keys(ref)[0]] = local
    return ImageMap(source, by_repository, by_reference)


def load_image_map(path: Path) -> ImageMap:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the local images file {path} (CLOUD_WORKER_LOCAL_IMAGES): {exc}") from exc
    return parse_image_map(text, str(path), Path(path).resolve().parent)


def _entry(entry: Any, where: str, here: Path) -> LocalImage:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table with a command")
    unknown = sorted(set(entry) - {"command", "env"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (expected command, env)")
    command = entry.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) and a for a in command):
        raise ConfigError(f"{where}: command must be a non-empty list of non-empty strings")
    env = entry.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ConfigError(f"{where}: env must be a table of strings")
    return LocalImage(tuple(arg.replace("{here}", str(here)) for arg in command),
                      {k: v.replace("{here}", str(here)) for k, v in env.items()})


def _reference_keys(ref: ImageRef) -> list[str]:
    keys = []
    if ref.digest:
        keys.append(f"{ref.repository}@{ref.digest}")
    if ref.tag:
        keys.append(f"{ref.repository}:{ref.tag}")
    return keys
