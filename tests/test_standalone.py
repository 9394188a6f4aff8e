"""The repository stands alone: its manifest tests pass in a bare copy of it.

The working tree's files as a clone would have them (tracked, plus untracked but not
ignored, so work not yet committed counts; no .venv, no .tools) are copied into an empty
temporary folder with nothing beside it (no team folder of schemas), and the KEDA and chart tests
run there with this interpreter. They must all pass, none skipped, and as many as here:
a schema, scenario or template the repository only finds outside itself fails this test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.validate import REPO_ROOT, helm_binary, missing_tool

pytestmark = [pytest.mark.git, pytest.mark.slow, pytest.mark.timeout(300)]

TESTS = ["tests/test_keda.py", "tests/test_chart.py"]
_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected|warnings?)\b")


def repository_files() -> list[str]:
    """What a clone of the working tree would hold: tracked and untracked-not-ignored files."""
    git = shutil.which("git")
    if git is None:
        missing_tool("git not found")
    result = subprocess.run(
        [git, "-C", REPO_ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        missing_tool(f"{REPO_ROOT} is not a git checkout: {result.stderr.strip()}")
    return sorted({name for name in result.stdout.split("\0") if name})


def copy_repository(target: Path) -> int:
    copied = 0
    for name in repository_files():
        source = REPO_ROOT / name
        if not source.is_symlink() and not source.is_file():
            continue  # tracked but deleted in the working tree: a commit would drop it too
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)
        copied += 1
    return copied


def counts(summary: str) -> dict[str, int]:
    """{"passed": 12, "skipped": 1, ...} from pytest's last summary line."""
    lines = [line for line in summary.strip().splitlines() if line.strip()]
    return {kind.rstrip("s") if kind != "passed" else kind: int(n) for n, kind in _COUNT.findall(lines[-1])}


def pytest_in(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_counts_reads_pytest_summaries() -> None:
    assert counts("x\n== 3 passed, 1 skipped, 2 warnings in 0.1s ==\n") == {"passed": 3, "skipped": 1, "warning": 2}
    assert counts("5 passed, 1 error in 2s") == {"passed": 5, "error": 1}
    assert counts("12 tests collected in 0.5s") == {}


def test_keda_and_chart_tests_pass_in_a_bare_copy_of_the_repository(tmp_path: Path) -> None:
    helm = helm_binary()  # the copy has no .tools/; hand it this checkout's helm
    root = tmp_path / "standalone"
    copy = root / "main"
    copy.mkdir(parents=True)
    assert copy_repository(copy) > 0
    assert sorted(p.name for p in root.iterdir()) == ["main"], "nothing may sit beside the copy"
    assert not (copy / ".venv").exists() and not (copy / ".tools").exists()

    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "PYTHON"))}
    env.update(PYTHONPATH=str(copy), HELM=helm, CI="true")  # CI: a missing tool fails instead of skipping

    where = subprocess.run(
        [sys.executable, "-c", "import handler, tests.support.validate as v; print(handler.__file__, v.REPO_ROOT)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert all(Path(path).is_relative_to(copy) for path in where.stdout.split()), where.stdout

    collected = pytest_in(REPO_ROOT, "--collect-only", "-q", *TESTS, env={**env, "PYTHONPATH": str(REPO_ROOT)})
    assert collected.returncode == 0, collected.stdout + collected.stderr
    expected = int(re.search(r"(\d+) tests? collected", collected.stdout)[1])

    result = pytest_in(copy, "-q", "-rfEs", *TESTS, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert counts(result.stdout) == {"passed": expected}, output
