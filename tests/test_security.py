"""Security of what a request can reach: nothing it sends is expanded by the kubelet
into a secret (``$(VAR)``), a bad ``traceparent`` never reaches the Job, and a local
process sees exactly what a pod would. The HTTP face's own security (tokens, probes,
limits) is in ``test_http.py``; the property test over every field and header, with
its reliability figure, in ``tests/reliability/test_secrets.py``."""

from __future__ import annotations

import json
import re

import pytest

from handler.core.config import Settings
from handler.core.manifest import build_job, container_env, escape_env_value, expand_env_value
from handler.core.messages import Message
from handler.core.outcome import Status
from handler.core.request import is_valid_traceparent, parse_request
from tests.test_backends_local import images_dir, make_backend, request_for, run  # noqa: F401 - fixtures

SETTINGS = Settings(namespace="mstc-dev", job_env_secret="bucket-credentials")
SECRET_NAMES = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "INPUT_BUCKET_URL", "MSTC_JOB")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def kubelet_expand(value: str, defined: dict[str, str]) -> str:
    """The kubelet's rules (k8s.io/kubernetes third_party/forked/golang/expansion), written
    independently of ``manifest.expand_env_value``: ``$$`` is ``$``; ``$(NAME)`` is the
    value of NAME if defined, else kept; any other ``$`` is kept."""
    def one(match: re.Match) -> str:
        token = match.group(0)
        if token == "$$":
            return "$"
        if token.startswith("$(") and token.endswith(")"):
            return defined.get(token[2:-1], token)
        return token
    return re.sub(r"\$\$|\$\([^)]*\)|\$.?", one, value, flags=re.DOTALL)


def unescaped_references(value: str) -> list[str]:
    """Every ``$(`` the kubelet would read as the start of a reference."""
    return [m.group(0) for m in re.finditer(r"\$\$|\$\(", value) if m.group(0) == "$("]


def job_for(body: dict, **message) -> dict:
    msg = Message(json.dumps(body).encode(), "application/json", **message)
    return build_job(parse_request(msg, SETTINGS), SETTINGS)


def env_of(job: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_a_bucket_url_naming_a_secret_reaches_the_job_escaped_and_the_container_sees_it_unexpanded():
    url = "http://minio:9000/bucket/$(AWS_SECRET_ACCESS_KEY)/$$x/$"
    job = job_for({"image": "mstc/python-test", "jobName": "j", "inputBucketUrl": url},
                  message_id="$(AWS_ACCESS_KEY_ID)", headers={"traceparent": "$(AWS_SECRET_ACCESS_KEY)"})
    env = env_of(job)
    assert env["INPUT_BUCKET_URL"] == "http://minio:9000/bucket/$$(AWS_SECRET_ACCESS_KEY)/$$$$x/$$"
    secrets = {name: f"<{name}>" for name in SECRET_NAMES}
    seen = {name: kubelet_expand(value, secrets) for name, value in env.items()}
    assert seen["INPUT_BUCKET_URL"] == seen["OUTPUT_BUCKET_URL"] == url
    assert seen["MSTC_REQUEST_ID"] == "$(AWS_ACCESS_KEY_ID)"
    assert "TRACEPARENT" not in env  # not a W3C traceparent: dropped
    assert all(not unescaped_references(value) for value in env.values())
    assert "<AWS" not in json.dumps(seen)


@pytest.mark.parametrize("value", ["", "$", "$$", "$(X)", "$$(X)", "a$(X", "$(X)$(Y)", "$x$", "(", ")$(", "$(A)b$"])
def test_the_local_expansion_is_the_kubelets_and_undoes_the_escape(value):
    defined = {"X": "<x>", "Y": "<y>", "A": "<a>"}
    assert expand_env_value(value, defined) == kubelet_expand(value, defined)
    assert expand_env_value(escape_env_value(value), defined) == value


def test_every_env_value_of_the_job_but_the_constant_is_escaped():
    request = parse_request(Message(json.dumps({"image": "i", "jobName": "j", "inputBucketUrl": "s3://b-1/$a"})
                                    .encode(), "application/json", message_id="$id"), SETTINGS)
    env = {e["name"]: e["value"] for e in container_env(request)}
    assert (env["INPUT_BUCKET_URL"], env["OUTPUT_BUCKET_URL"], env["MSTC_REQUEST_ID"]) == ("s3://b-1/$$a",) * 2 + ("$$id",)
    assert env["MSTC_JOB"] == "true"
    assert all(not unescaped_references(value) and "$" not in value.replace("$$", "") for value in env.values())


def test_the_annotations_keep_the_requests_own_values():
    job = job_for({"image": "mstc/python-test", "jobName": "j", "inputBucketUrl": "http://minio:9000/bucket/$(X)"},
                  message_id="m-$")
    annotations = job["metadata"]["annotations"]
    assert annotations["cloud-worker.mstc.io/input-bucket-url"] == "http://minio:9000/bucket/$(X)"
    assert annotations["cloud-worker.mstc.io/request-id"] == "m-$"


@pytest.mark.parametrize("value, valid", [
    (TRACEPARENT, True),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", True),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", True),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", False),
    ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
    ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", False),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", False),
    ("$(AWS_SECRET_ACCESS_KEY)", False),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01$(X)", False),
])
def test_a_traceparent_is_kept_only_in_the_w3c_format(value, valid):
    assert is_valid_traceparent(value) is valid
    job = job_for({"image": "mstc/python-test", "jobName": "j", "inputBucketUrl": "s3://bucket"},
                  message_id="m-1", headers={"traceparent": value})
    assert (env_of(job).get("TRACEPARENT") == value) is valid
    assert ("cloud-worker.mstc.io/traceparent" in job["metadata"]["annotations"]) is valid


def test_a_local_process_sees_the_requests_values_as_a_pod_would(make_backend, images_dir):  # noqa: F811
    body = {"image": "test/env", "jobName": "local-test", "inputBucketUrl": "http://127.0.0.1:9000/bucket/$(HOME)/$$"}
    request = parse_request(Message(json.dumps(body).encode(), "application/json", message_id="$(PATH)"),
                            Settings())
    assert run(make_backend(), request).status is Status.SUCCEEDED
    env = json.loads((images_dir / "env.json").read_text())["env"]
    assert env["INPUT_BUCKET_URL"] == "http://127.0.0.1:9000/bucket/$(HOME)/$$"
    assert env["MSTC_REQUEST_ID"] == "$(PATH)"


def test_the_http_token_never_appears_in_the_logged_settings():
    assert Settings(http_token="s3cr3t-token").redacted()["http_token"] == "***"
