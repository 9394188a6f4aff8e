"""Which Jobs nobody answered, and the patches that claim and record them: pure rules
over Job objects (``handler.core.unanswered``)."""

from datetime import UTC, datetime, timedelta

import pytest

from handler.core.config import Settings
from handler.core.manifest import ANNOTATION_REPLIED, FINALIZER, build_job, cancel_annotations
from handler.core.outcome import Status
from handler.core.unanswered import ANNOTATION_CLAIMED, claim_patch, held_reply_patch, unanswered_outcome
from tests.test_manifest import request

ENDED = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
AFTER = 120.0


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def job(*, ended: bool = True, deleted: bool = False, **annotations: str) -> dict:
    manifest = build_job(request(), Settings.from_env({}))
    manifest["metadata"].update(uid="u-1", resourceVersion="42", creationTimestamp=iso(ENDED - timedelta(minutes=5)))
    manifest["metadata"]["annotations"].update(annotations)
    conditions = [{"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": iso(ENDED)},
                  {"type": "Complete", "status": "True", "lastTransitionTime": iso(ENDED)}]
    manifest["status"] = {"startTime": iso(ENDED - timedelta(minutes=4)), "completionTime": iso(ENDED),
                          "conditions": conditions if ended else []}
    if deleted:
        manifest["metadata"]["deletionTimestamp"] = iso(ENDED)
    return manifest


def at(seconds: float) -> datetime:
    return ENDED + timedelta(seconds=seconds)


def test_a_job_nobody_answered_is_answered_once_it_waited_long_enough():
    assert unanswered_outcome(job(), [], at(AFTER - 1), AFTER) is None  # its follower may still reply
    answer = unanswered_outcome(job(), [], at(AFTER + 1), AFTER)
    assert answer is not None and answer.status is Status.SUCCEEDED


@pytest.mark.parametrize("why, subject", [
    ("it still runs", job(ended=False)),
    ("it was answered", job(**{ANNOTATION_REPLIED: "succeeded"})),
    ("another replica claimed it a moment ago", job(**{ANNOTATION_CLAIMED: iso(at(AFTER))})),
])
def test_a_job_is_not_answered_when(why, subject):
    assert unanswered_outcome(subject, [], at(AFTER + 5), AFTER) is None, why


def test_a_job_without_the_reply_finalizer_is_not_answered_from_the_cluster():
    released = job()
    released["metadata"]["finalizers"] = [f for f in released["metadata"]["finalizers"] if f != FINALIZER]
    assert unanswered_outcome(released, [], at(AFTER * 10), AFTER) is None


def test_a_claim_whose_replica_died_lapses():
    stale = job(**{ANNOTATION_CLAIMED: iso(at(1))})
    assert unanswered_outcome(stale, [], at(AFTER + 2), AFTER) is not None


def test_a_cancelled_job_is_answered_cancelled_and_one_deleted_by_someone_else_failed():
    cancelled = job(ended=False, deleted=True, **cancel_annotations("the user asked"))
    assert unanswered_outcome(cancelled, [], at(AFTER + 1), AFTER).status is Status.CANCELLED
    deleted = unanswered_outcome(job(ended=False, deleted=True), [], at(AFTER + 1), AFTER)
    assert (deleted.status, deleted.reason) == (Status.FAILED, "JobDeleted")


def test_the_claim_tests_the_version_read_so_one_replica_wins():
    patch = claim_patch(job(), at(AFTER))
    assert patch[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "42"}
    assert patch[1]["value"] == iso(at(AFTER))


def test_recording_a_held_reply_tests_the_identity_and_leaves_the_finalizer_alone():
    subject = job()
    patch = held_reply_patch(subject, "succeeded", request().identity)
    assert patch[0]["op"] == "test" and patch[0]["value"] == request().identity
    assert not any("finalizers" in op["path"] or "labels" in op["path"] for op in patch)
