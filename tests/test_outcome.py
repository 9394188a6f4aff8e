from datetime import UTC, datetime, timedelta

import pytest

from handler.core.outcome import Status, ended_pod, finished_outcome, pod_is_running, stuck_outcome

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ts(seconds):
    return (T0 + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def job(*conditions, start=0, end=None):
    status = {"startTime": ts(start), "conditions": [
        {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": ts(end or 10)}
        for t, r, m in conditions
    ]}
    if end is not None:
        status["completionTime"] = ts(end)
    return {"metadata": {"name": "j"}, "status": status}


def pod(name="j-abcde", created=0, **state):
    return {"metadata": {"name": name, "creationTimestamp": ts(created)},
            "status": {"containerStatuses": [{"state": state}]}}


COMPLETE = ("Complete", None, None)
BACKOFF = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
DEADLINE = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")


@pytest.mark.parametrize("the_job, pods, status, reason, exit_code, pod_reason", [
    (job(("SuccessCriteriaMet", None, None), COMPLETE, end=7), [pod(terminated={"exitCode": 0, "reason": "Completed"})],
     Status.SUCCEEDED, "Completed", 0, "Completed"),
    (job(("FailureTarget", "BackoffLimitExceeded", ""), BACKOFF), [pod(terminated={"exitCode": 3, "reason": "Error"})],
     Status.FAILED, "BackoffLimitExceeded", 3, "Error"),
    (job(BACKOFF), [pod(terminated={"exitCode": 137, "reason": "OOMKilled"})],
     Status.FAILED, "BackoffLimitExceeded", 137, "OOMKilled"),
    (job(DEADLINE), [], Status.TIMEDOUT, "DeadlineExceeded", None, None),
])
def test_terminal_conditions_decide_the_outcome_and_pods_add_detail(the_job, pods, status, reason, exit_code, pod_reason):
    out = finished_outcome(the_job, pods)
    assert (out.status, out.reason, out.exit_code, out.pod_reason) == (status, reason, exit_code, pod_reason)


def test_a_job_without_terminal_conditions_is_still_running():
    assert finished_outcome(job(("SuccessCriteriaMet", None, None)), []) is None
    assert finished_outcome({"metadata": {"name": "j"}, "status": {}}, []) is None


def test_the_newest_pod_speaks_for_a_retried_job():
    pods = [pod("j-new", created=5, terminated={"exitCode": 2, "reason": "Error"}),
            pod("j-old", created=1, terminated={"exitCode": 1, "reason": "Error"})]
    out = finished_outcome(job(BACKOFF), pods)
    assert (out.pod_name, out.exit_code) == ("j-new", 2)
    assert "exited with code 2" in out.message


def test_duration_comes_from_start_and_completion_times():
    assert finished_outcome(job(COMPLETE, start=2, end=12), []).duration_seconds == 10


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"])
def test_pods_that_cannot_start_fail_the_job_after_the_grace(reason):
    pods = [pod(created=0, waiting={"reason": reason, "message": "nope"})]
    early, recheck = stuck_outcome(job(), pods, T0 + timedelta(seconds=5), grace=10)
    assert early is None and recheck == T0 + timedelta(seconds=10)
    late, _ = stuck_outcome(job(), pods, T0 + timedelta(seconds=11), grace=10)
    assert (late.status, late.reason, late.pod_reason) == (Status.FAILED, reason, reason)
    assert "nope" in late.message


def test_a_pod_waiting_for_an_ordinary_reason_is_not_stuck():
    out, recheck = stuck_outcome(job(), [pod(waiting={"reason": "ContainerCreating"})], T0 + timedelta(hours=1), 1)
    assert out is None and recheck is None


def test_a_pod_counts_as_started_once_its_container_runs():
    assert not pod_is_running([pod(waiting={"reason": "ContainerCreating"})])
    assert pod_is_running([pod(running={"startedAt": ts(1)})])


@pytest.mark.parametrize("pods, expected", [
    ([], None),
    ([pod(running={"startedAt": ts(1)})], None),
    ([pod(terminated={"exitCode": 0, "reason": "Completed"})], ("j-abcde", True)),
    ([pod("j-1", 0, terminated={"exitCode": 2}), pod("j-2", 5, running={"startedAt": ts(6)})], None),
    ([pod("j-1", 0, running={}), pod("j-2", 5, terminated={"exitCode": 137, "reason": "OOMKilled"})], ("j-2", False)),
])
def test_the_newest_pod_has_ended_once_its_container_terminated(pods, expected):
    assert ended_pod(pods) == expected
