import pytest

from handler.core.images import InvalidImage, check_allowed, parse_image

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize("text, domain, path, tag", [
    ("python", "docker.io", "library/python", None),
    ("mstc/python-test:latest", "docker.io", "mstc/python-test", "latest"),
    ("localhost:5000/x:1", "localhost:5000", "x", "1"),
    ("Registry.Example.com/team/app", "registry.example.com", "team/app", None),
])
def test_references_are_normalised_like_the_container_runtime(text, domain, path, tag):
    ref = parse_image(text)
    assert (ref.domain, ref.path, ref.tag) == (domain, path, tag)


@pytest.mark.parametrize("text", ["", " mstc/x", "mstc/x ", "Mstc/x", "allowed/../other", "a//b", "x@sha256:abc",
                                  "x:" + "t" * 200, "x;rm -rf", "-x"])
def test_malformed_references_are_invalid(text):
    with pytest.raises(InvalidImage):
        parse_image(text)


ALLOW = ("registry.example.com/team", "mstc", "pinned.example.com/app@sha256")


@pytest.mark.parametrize("text, allowed", [
    ("registry.example.com/team/app:1", True),
    ("registry.example.com/teamx/app", False),
    ("registry.example.com.evil.io/team/app", False),
    ("evil.io/registry.example.com/team/app", False),
    ("mstc/python-test", True),
    ("docker.io/mstc/python-test", True),
    ("mstcx/python-test", False),
    ("python", False),
    ("pinned.example.com/app:1", False),
    (f"pinned.example.com/app@{DIGEST}", True),
    (f"pinned.example.com/app:1@{DIGEST}", True),
])
def test_the_allowlist_matches_whole_components_and_can_require_digests(text, allowed):
    assert check_allowed(parse_image(text), ALLOW) is allowed


def test_no_allowlist_allows_any_valid_image():
    assert check_allowed(parse_image("anything/at:all"), ())
