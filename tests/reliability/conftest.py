"""The chaos and abuse suite: shared knobs and the figures it measures.

Each test records what it measured (requests, kills, faults injected, fuzz cases,
duplicates and losses found) with the ``figures`` fixture; the run prints them all at
the end, and ``docs/reliability.md`` quotes them. Set ``RELIABILITY_FIGURES`` to a
path to also get them as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

FIGURES: dict[str, dict] = {}


@pytest.fixture
def figures(request):
    record: dict = {}
    yield record
    FIGURES[request.node.name] = record


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for name, record in FIGURES.items():
        terminalreporter.write_line(f"{name}: {json.dumps(record, sort_keys=True)}")
    path = os.environ.get("RELIABILITY_FIGURES")
    if path:
        with open(path, "w") as out:
            json.dump(FIGURES, out, indent=2, sort_keys=True)


def rabbit_env(key: str) -> str:
    """The broker's runtime application setting ``key`` (an Erlang term, as text)."""
    out = subprocess.run(["rabbitmqctl", "-q", "eval", f"application:get_env(rabbit, {key})."],
                         capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    if not (out.startswith("{ok,") and out.endswith("}")):
        raise AssertionError(f"unexpected answer for {key}: {out!r}")
    return out[len("{ok,"):-1]


def set_rabbit_env(key: str, value: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "eval", f"application:set_env(rabbit, {key}, {value})."],
                   capture_output=True, text=True, timeout=60, check=True)
