"""Recording a confirmed reply on the Job (``KubernetesBackend.mark_replied``) happens after
the request was acked, so it never raises: whatever the API server answers, or however
the Job was edited, the worst outcome is a Job kept until a redelivery or the janitor
lets it go."""

import pytest

from handler.core.config import Settings
from handler.core.errors import JobExists, Transient
from handler.core.manifest import ANNOTATION_REPLIED, build_job
from handler.core.unanswered import held_reply_patch
from handler.service.backends.kubernetes import KubernetesBackend
from tests.test_manifest import request

SETTINGS = Settings.from_env({})


class Kube:
    """Reads back one Job; answers every PATCH with ``answer`` (an exception is raised)."""

    def __init__(self, job, answer):
        self.job, self.answer, self.patches = job, answer, []

    def read_job(self, name):
        return self.job

    def patch_job(self, name, operations):
        self.patches.append(operations)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer()


def backend_with(job, answer) -> KubernetesBackend:
    return KubernetesBackend(SETTINGS, kube=Kube(job, answer))


def not_json():
    import json

    return json.loads("<html>502 from a proxy</html>")


@pytest.mark.parametrize("answer", [
    JobExists("409 Conflict: the object has been modified"),
    Transient("503 the API server is restarting"),
    not_json,
], ids=["409", "503", "a 200 that is not JSON"])
def test_whatever_the_api_server_answers_recording_the_reply_does_not_raise(answer):
    req = request()
    backend = backend_with(build_job(req, SETTINGS), answer)
    backend.mark_replied(req, "succeeded")
    assert backend.kube.patches  # it was tried


@pytest.mark.parametrize("edit", [
    lambda job: job["metadata"].update(annotations="not a map"),
    lambda job: job["metadata"].update(finalizers={"not": "a list"}),
    lambda job: job["metadata"].pop("name"),
], ids=["annotations", "finalizers", "no name"])
def test_a_job_edited_into_another_shape_does_not_make_recording_the_reply_raise(edit):
    req = request()
    job = build_job(req, SETTINGS)
    edit(job)
    backend_with(job, lambda: job).mark_replied(req, "succeeded")


def test_recording_without_letting_go_keeps_the_finalizer_and_the_watch():
    req = request()
    job = build_job(req, SETTINGS)
    backend = backend_with(job, lambda: job)
    backend.mark_replied(req, "succeeded", release=False)
    (patch,) = backend.kube.patches
    assert patch == held_reply_patch(job, "succeeded", req.identity)
    assert {op["path"] for op in patch if op["op"] != "test"} == {
        "/metadata/annotations/" + ANNOTATION_REPLIED.replace("/", "~1")}
