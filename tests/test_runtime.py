"""The runtime's openers: the one place that names a kind of backend, and how the tools
that look at a request (``status``, ``logs``, ``submit --follow``) find the backend that
ran it when nobody said which."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from handler.core.config import BACKENDS, Settings
from handler.core.errors import ConfigError, NotFound
from handler.service.backends.localstate import LocalState
from handler.service.runtime import open_for_inspection, reachable

REPO = Path(__file__).resolve().parents[1]


def settings_for(tmp_path: Path, **values: str) -> Settings:
    return Settings.from_env({"CLOUD_WORKER_LOCAL_STATE_DIR": str(tmp_path / "state"),
                              "KUBECONFIG": str(tmp_path / "no-such-kubeconfig"),
                              **{f"CLOUD_WORKER_{k.upper()}": v for k, v in values.items()}})


def names_a_kind(node: ast.AST) -> bool:
    """A comparison of something called ``backend`` with a backend kind's name."""
    if not isinstance(node, ast.Compare):
        return False
    parts = [node.left, *node.comparators]
    kinds = any(isinstance(p, ast.Constant) and p.value in BACKENDS for p in parts)
    backend = any("backend" in ast.unparse(p) for p in parts)
    return kinds and backend


def test_only_the_runtimes_openers_and_the_settings_name_a_kind_of_backend():
    choosing = []
    for path in sorted((REPO / "handler").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if names_a_kind(node):
                choosing.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    where = {line.split(":")[0] for line in choosing}
    assert where <= {"handler/service/runtime.py", "handler/core/config.py"}, choosing


def test_the_tools_read_a_local_handlers_folder_when_it_runs_here_though_nobody_said_local(tmp_path):
    settings = settings_for(tmp_path)
    holder = LocalState.for_settings(settings)
    holder.claim()  # as a running local-mode handler holds it
    try:
        backend = open_for_inspection(settings, {}, "some-request", chosen=False)
        try:
            assert backend.namespace == "local" and backend.lookup("some-request") is None
        finally:
            backend.close()
    finally:
        holder.release()


def test_without_a_local_handler_the_tools_look_in_the_cluster_and_say_how_to_look_locally(tmp_path):
    with pytest.raises(ConfigError) as raised:
        open_for_inspection(settings_for(tmp_path), {}, "some-request", chosen=False)
    message = str(raised.value)
    assert "no usable Kubernetes configuration" in message
    assert "--backend local" in message and "KUBECONFIG" in message


def test_a_backend_named_by_the_user_is_the_one_opened(tmp_path):
    settings = settings_for(tmp_path)
    holder = LocalState.for_settings(settings)
    holder.claim()
    try:
        with pytest.raises(ConfigError) as raised:
            open_for_inspection(settings, {}, "some-request", chosen=True)  # --backend kubernetes
        assert "--backend local" not in str(raised.value)
    finally:
        holder.release()


def test_the_local_backend_is_always_reachable_and_a_cluster_without_configuration_is_a_config_error(tmp_path):
    assert reachable(settings_for(tmp_path, backend="local"), {}) is True
    with pytest.raises(ConfigError):
        reachable(settings_for(tmp_path), {})


def test_a_folder_knows_a_running_handler_by_its_pid_and_forgets_it_once_released(tmp_path):
    state = LocalState(tmp_path / "state")
    assert state.holder() is None
    state.claim()
    assert state.holder() == os.getpid()
    state.release()
    assert state.holder() is None


def test_a_handler_that_died_holding_the_folder_is_not_taken_for_a_running_one(tmp_path):
    state = LocalState(tmp_path / "state")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    state.jobs.mkdir(parents=True)
    (state.root / "handler.lock").write_text(dead.stdout.strip())
    assert state.holder() is None


def test_a_local_jobs_log_is_streamed_and_followed_until_it_ends(tmp_path):
    from handler.core.outcome import Outcome, Status

    state = LocalState(tmp_path / "state")
    name = f"job-{uuid.uuid4().hex[:10]}"
    log_path = state.record(name, {"metadata": {"name": name, "annotations": {}}})
    log_path.write_bytes(b"first\n")
    assert b"".join(state.log_stream(name, follow=False)) == b"first\n"

    followed: list[bytes] = []
    follower = threading.Thread(target=lambda: followed.extend(state.log_stream(name, follow=True)))
    follower.start()
    with open(log_path, "ab") as log:
        log.write(b"second\n")
    state.finish(name, Outcome(Status.SUCCEEDED, "Completed", "done"))
    follower.join(10)
    assert not follower.is_alive() and b"".join(followed) == b"first\nsecond\n"
    assert state.knows(name) and not state.knows("another-job")
    with pytest.raises(NotFound):
        list(state.log_stream("another-job", follow=False))


def test_a_handler_without_bucket_credentials_says_at_start_up_that_log_objects_will_be_missing(caplog):
    from handler.service.runtime import Runtime
    from tests.support.backends import StubBackend

    with caplog.at_level("WARNING", logger="handler.service.runtime"):
        Runtime.open(Settings.from_env({}), {}, backend=StubBackend(None))
    assert any("no bucket credentials" in r.getMessage() and "logUploadError" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="handler.service.runtime"):
        Runtime.open(Settings.from_env({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}), {},
                     backend=StubBackend(None))
    assert not any("no bucket credentials" in r.getMessage() for r in caplog.records)
