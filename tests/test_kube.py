"""The Kubernetes adapter: error translation, and the exact set of API calls it makes
(which the chart's Role must grant, no more)."""

import ast
import json
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from handler.adapters.kube import translate
from handler.core.errors import JobExists, JobFailedToStart, ResourceGone, Transient
from tests.support.validate import HANDLER_API_CALLS

KUBE_SOURCE = Path(__file__).resolve().parents[1] / "handler" / "adapters" / "kube.py"
#: client method → (apiGroup, resource, verbs); a list method is also what the watch uses.
VERBS = {
    "create_namespaced_job": ("batch", "jobs", {"create"}),
    "read_namespaced_job": ("batch", "jobs", {"get"}),
    "delete_namespaced_job": ("batch", "jobs", {"delete"}),
    "patch_namespaced_job": ("batch", "jobs", {"patch"}),
    "list_namespaced_job": ("batch", "jobs", {"list", "watch"}),
    "list_namespaced_pod": ("", "pods", {"list", "watch"}),
    "list_namespaced_event": ("", "events", {"list", "watch"}),
    "read_namespaced_pod": ("", "pods", {"get"}),
    "read_namespaced_pod_log": ("", "pods/log", {"get"}),
}


def api_calls_in_the_adapter():
    """Every ``self.batch.X`` / ``self.core.X`` the adapter touches, as RBAC triples."""
    calls = set()
    for node in ast.walk(ast.parse(KUBE_SOURCE.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and node.value.attr in ("batch", "core"):
            group, resource, verbs = VERBS[node.attr]
            calls |= {(group, resource, verb) for verb in verbs}
    return calls


def test_the_role_grants_exactly_the_calls_the_adapter_makes():
    assert api_calls_in_the_adapter() == HANDLER_API_CALLS


def api_error(status, reason="", headers=None):
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "reason": reason, "message": f"{reason} happened", "code": status})
    exc.headers = headers
    return exc


@pytest.mark.parametrize("status, reason, expected", [
    (409, "AlreadyExists", JobExists),
    (410, "Expired", ResourceGone),
    (429, "TooManyRequests", Transient),
    (500, "InternalError", Transient),
    (503, "ServiceUnavailable", Transient),
    (403, "Forbidden", JobFailedToStart),
    (422, "Invalid", JobFailedToStart),
])
def test_api_errors_become_what_the_caller_must_do_next(status, reason, expected):
    assert isinstance(translate(api_error(status, reason), "create job x"), expected)


def test_a_permanent_error_keeps_the_api_servers_reason_and_message():
    err = translate(api_error(403, "Forbidden"), "create job x")
    assert err.reason == "Forbidden" and "Forbidden happened" in err.message


def test_retry_after_is_read_from_a_429():
    assert translate(api_error(429, "TooManyRequests", {"Retry-After": "2"}), "x").retry_after == 2.0


def test_transport_errors_are_transient():
    assert isinstance(translate(ConnectionResetError("reset"), "x"), Transient)


# --- retries over real HTTP: transient failures are retried, permanent ones are not

class ResettingProxy:
    """A TCP proxy to the fake API server that resets (RST) its first ``resets`` connections."""

    def __init__(self, target_port: int, resets: int) -> None:
        self.target_port, self.resets, self.connections = target_port, resets, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            if self.connections <= self.resets:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


def kube_at(tmp_path, server_url, namespace, backoff):
    from handler.adapters.kube import Kube
    from handler.core.config import Settings

    config = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
              "clusters": [{"name": "c", "cluster": {"server": server_url}}],
              "users": [{"name": "u", "user": {}}],
              "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return Kube(Settings.from_env({"KUBECONFIG": str(path), "CLOUD_WORKER_NAMESPACE": namespace}), backoff)


@pytest.fixture
def fault_free(fakekube):
    yield fakekube.faults
    fakekube.faults.clear()
    fakekube.faults.seed = 0


def a_job(name, namespace):
    from handler.core.config import Settings
    from handler.core.manifest import build_job
    from tests.test_manifest import request

    job = build_job(request(), Settings.from_env({}))
    job["metadata"].update(name=name, namespace=namespace)
    return job


@pytest.mark.integration
def test_500s_and_429s_are_retried_until_the_call_succeeds(fakekube, fault_free, namespace, tmp_path):
    from handler.core.retry import Backoff

    kube = kube_at(tmp_path, fakekube.url, namespace, Backoff(base=0.01, cap=0.05, attempts=20))
    fault_free.seed, fault_free.error_rate = 7, 0.6
    before = fakekube.request_count("POST", "jobs")
    for i in range(5):
        kube.create_job(a_job(f"retried-{i}", namespace))
    assert len(fakekube.created_jobs(namespace)) == 5
    assert fakekube.request_count("POST", "jobs") - before > 5  # some were answered 500 and sent again
    fault_free.error_rate, fault_free.throttle_rate = 0.0, 1.0
    threading.Timer(0.3, lambda: setattr(fault_free, "throttle_rate", 0.0)).start()
    started = time.monotonic()
    assert kube.read_job("retried-0") is not None
    assert time.monotonic() - started >= 0.9  # the server's Retry-After: 1 beat the 0.05 s backoff cap
    kube.close()


@pytest.mark.integration
def test_connection_resets_are_retried_and_eventually_give_up_as_transient(fakekube, namespace, tmp_path):
    from handler.core.retry import Backoff

    port = int(fakekube.url.rsplit(":", 1)[1])
    flaky = ResettingProxy(port, resets=3)
    kube = kube_at(tmp_path, f"http://127.0.0.1:{flaky.port}", namespace, Backoff(base=0.01, cap=0.05, attempts=8))
    kube.create_job(a_job("after-resets", namespace))
    assert fakekube.created_jobs(namespace) == ["after-resets"] and flaky.connections > 3
    dead = ResettingProxy(port, resets=10**6)
    hopeless = kube_at(tmp_path, f"http://127.0.0.1:{dead.port}", namespace, Backoff(base=0.01, cap=0.05, attempts=3))
    with pytest.raises(Transient):
        hopeless.read_job("after-resets")
    assert dead.connections >= 3
    for thing in (kube, hopeless, flaky, dead):
        thing.close()


@pytest.mark.integration
@pytest.mark.parametrize("status, reason", [(403, "Forbidden"), (422, "Invalid")])
def test_a_permanent_refusal_is_not_retried_and_keeps_the_servers_message(fakekube, fault_free, namespace, tmp_path,
                                                                          status, reason):
    from handler.core.retry import Backoff

    kube = kube_at(tmp_path, fakekube.url, namespace, Backoff(base=0.01, cap=0.05, attempts=8))
    fault_free.reject_create_status = status
    before = fakekube.request_count("POST", "jobs")
    with pytest.raises(JobFailedToStart) as caught:
        kube.create_job(a_job("refused", namespace))
    assert fakekube.request_count("POST", "jobs") - before == 1
    assert caught.value.reason == reason and "(fault)" in caught.value.message
    kube.close()


@pytest.mark.integration
def test_a_delete_or_annotation_meant_for_one_job_leaves_a_namesake_alone(fakekube, namespace, tmp_path):
    """With the uid of the Job read, the API server refuses to touch a Job of the same name
    made since (a delete precondition, a JSON patch test): the caller hears NotFound."""
    from handler.core.errors import NotFound
    from handler.core.retry import Backoff

    kube = kube_at(tmp_path, fakekube.url, namespace, Backoff(base=0.01, cap=0.05, attempts=3))
    created = kube.create_job(a_job("namesake", namespace))
    stale_uid = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(NotFound):
        kube.patch_job_annotations("namesake", {"cloud-worker.mstc.io/cancelled": "not this one"}, uid=stale_uid)
    with pytest.raises(NotFound):
        kube.delete_job("namesake", uid=stale_uid)
    job = kube.read_job("namesake")
    assert job is not None and not job["metadata"].get("deletionTimestamp")
    assert "cloud-worker.mstc.io/cancelled" not in job["metadata"]["annotations"]
    marked = kube.patch_job_annotations("namesake", {"cloud-worker.mstc.io/cancelled": "this one"},
                                        uid=created["metadata"]["uid"])
    assert marked["metadata"]["annotations"]["cloud-worker.mstc.io/cancelled"] == "this one"
    kube.delete_job("namesake", uid=created["metadata"]["uid"])
    assert kube.read_job("namesake")["metadata"].get("deletionTimestamp")  # held by the reply finalizer
    kube.close()


def test_the_token_is_refreshed_at_most_every_few_seconds_and_the_loaders_newest_hook_is_kept():
    from kubernetes import client

    from handler.adapters import kube

    calls = []
    configuration = client.Configuration()

    def loaders_hook(config, generation=0):  # as the loaders' do: sets the token, installs a new hook
        calls.append(generation)
        config.api_key["BearerToken"] = f"token-{generation}"
        config.refresh_api_key_hook = lambda c: loaders_hook(c, generation + 1)

    configuration.refresh_api_key_hook = loaders_hook
    now = [100.0]
    kube._ThrottledRefresh(configuration, 5.0, clock=lambda: now[0])
    for _ in range(3):
        configuration.get_api_key_with_prefix("BearerToken")
    assert calls == [0] and configuration.api_key["BearerToken"] == "token-0"
    now[0] += 4.9
    configuration.get_api_key_with_prefix("BearerToken")
    assert calls == [0]
    now[0] += 0.1
    configuration.get_api_key_with_prefix("BearerToken")
    assert calls == [0, 1] and configuration.api_key["BearerToken"] == "token-1"
    assert isinstance(configuration.refresh_api_key_hook, kube._ThrottledRefresh)
