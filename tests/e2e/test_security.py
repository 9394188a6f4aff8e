"""What the chart grants the handler, as the real API server's RBAC enforces it."""

from __future__ import annotations

import pytest

from tests.support.kubeapi import ApiError
from tests.support.validate import HANDLER_API_CALLS

pytestmark = pytest.mark.e2e


def test_the_handlers_service_account_is_refused_a_verb_outside_its_role(release):
    with pytest.raises(ApiError) as refused:
        release.api.get(f"/api/v1/namespaces/{release.namespace}/secrets")
    assert refused.value.status == 403 and refused.value.reason == "Forbidden"
    assert f"system:serviceaccount:{release.namespace}:" in refused.value.message
    with pytest.raises(ApiError) as elsewhere:
        release.api.get("/apis/batch/v1/namespaces/default/jobs")
    assert elsewhere.value.status == 403


def test_the_api_server_grants_the_handler_exactly_its_api_calls_in_its_namespace(release):
    review = release.api.post("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
        "spec": {"namespace": release.namespace}})
    granted = set()
    for rule in review["status"]["resourceRules"]:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    # What every authenticated user may do anyway (system:basic-user: reviews of itself) aside,
    # the Role's own grants.
    own = {g for g in granted if g[0] not in ("authorization.k8s.io", "authentication.k8s.io")}
    assert own == set(HANDLER_API_CALLS)


def test_the_handler_may_do_each_of_its_api_calls(release):
    for group, resource, verb in sorted(HANDLER_API_CALLS):
        resource, _, subresource = resource.partition("/")
        review = release.api.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": release.namespace, "group": group, "resource": resource,
                                            "subresource": subresource, "verb": verb}}})
        assert review["status"]["allowed"], (group, resource, subresource, verb, review["status"])
