"""The Kubernetes adapter: error translation, and the exact set of API calls it makes
(which the chart's Role must grant, no more)."""

import ast
import json
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from handler.errors import JobExists, JobFailedToStart, ResourceGone, Transient
from handler.kube import translate
from tests.support.validate import HANDLER_API_CALLS

KUBE_SOURCE = Path(__file__).resolve().parents[1] / "handler" / "kube.py"
#: client method → (apiGroup, resource, verbs); a list method is also what the watch uses.
VERBS = {
    "create_namespaced_job": ("batch", "jobs", {"create"}),
    "read_namespaced_job": ("batch", "jobs", {"get"}),
    "delete_namespaced_job": ("batch", "jobs", {"delete"}),
    "patch_namespaced_job": ("batch", "jobs", {"patch"}),
    "list_namespaced_job": ("batch", "jobs", {"list", "watch"}),
    "list_namespaced_pod": ("", "pods", {"list", "watch"}),
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
