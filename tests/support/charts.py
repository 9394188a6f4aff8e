"""helm for the tests: a fixture that runs the real helm, and one that renders the chart.

``helm`` runs the helm of ``scripts/install-tools.sh`` (or ``$HELM``, or PATH) with its
cache, config and plugins kept out of the user's home; ``render`` renders the chart (or
another) for a values file and extra flags, as release ``mstc-cloud-worker`` in
namespace ``mstc-dev``, cached per call. Loaded for every test module by
``tests/conftest.py``; a test using them is marked ``helm`` there.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.validate import REPO_ROOT, helm_binary, load_manifests

CHART = REPO_ROOT / "charts" / "mstc-cloud-worker"
RELEASE = "mstc-cloud-worker"
NAMESPACE = "mstc-dev"
KEDA_API = "keda.sh/v1alpha1"

Render = Callable[..., list[dict]]


@dataclasses.dataclass
class Helm:
    binary: str
    env: dict[str, str]

    def run(self, *args: str | Path) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, *map(str, args)], capture_output=True, text=True, env=self.env, timeout=60)


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = helm_binary()
    home = tmp_path_factory.mktemp("helm-home")
    # Keep helm's cache, config and plugins out of the user's home.
    env = {**os.environ, **{f"HELM_{d}_HOME": str(home / d.lower()) for d in ("CACHE", "CONFIG", "DATA")}}
    return Helm(binary, env)


@pytest.fixture(scope="session")
def render(helm: Helm) -> Render:
    """Rendered objects of the chart for a values file and extra flags, cached per call."""
    cache: dict[tuple, list[dict]] = {}

    def _render(values: Path | None = None, *flags: str, keda: bool = False, chart: Path = CHART) -> list[dict]:
        key = (chart, values, flags, keda)
        if key not in cache:
            args = ["template", RELEASE, chart, "--namespace", NAMESPACE, *flags]
            if values:
                args += ["--values", values]
            if keda:
                args += ["--api-versions", KEDA_API]
            result = helm.run(*args)
            assert result.returncode == 0, f"helm {' '.join(map(str, args))} failed:\n{result.stderr}"
            cache[key] = load_manifests(result.stdout)
        return cache[key]

    return _render
