import re

import pytest

from handler.core.naming import is_valid_client_name, job_name, sanitise

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@pytest.mark.parametrize("given, expected", [
    ("test-job", "test-job"),
    ("Test_Job.v2", "test-job-v2"),
    ("a__b..c", "a-b-c"),
    ("X", "x"),
])
def test_sanitise_makes_dns_labels(given, expected):
    assert sanitise(given) == expected


@pytest.mark.parametrize("name", ["../etc", "a/b", "a b", "a=b", "x,y", "-lead", "trail-", "", "é", "a" * 129, "k8s\n"])
def test_names_with_path_or_label_injection_characters_are_invalid(name):
    assert not is_valid_client_name(name)


def test_the_same_request_always_maps_to_the_same_job_name():
    assert job_name("test-job", "mid:1") == job_name("test-job", "mid:1")
    assert job_name("test-job", "mid:1") != job_name("test-job", "mid:2")


@pytest.mark.parametrize("client_name", ["t", "test-job", "A" * 128, "a-" * 40 + "b"])
def test_job_names_are_valid_and_at_most_63_characters(client_name):
    name = job_name(client_name, "cid:whatever")
    assert len(name) <= 63
    assert DNS_LABEL.fullmatch(name)


def test_a_distinct_name_differs_from_the_usual_one_and_is_stable():
    from handler.core.naming import distinct_job_name

    usual = job_name("test-job", "cid:x")
    distinct = distinct_job_name("test-job", "cid:x", "spec-a")
    assert distinct != usual and distinct == distinct_job_name("test-job", "cid:x", "spec-a")
    assert distinct != distinct_job_name("test-job", "cid:x", "spec-b")
    assert DNS_LABEL.fullmatch(distinct) and len(distinct) <= 63
