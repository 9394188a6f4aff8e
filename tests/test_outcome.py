from datetime import UTC, datetime, timedelta

import pytest

from handler.core.outcome import (
    Status,
    current_state,
    ended_pod,
    finished_outcome,
    held_outcome,
    pod_is_running,
    start_outcome,
    stuck_outcome,
    unschedulable_outcome,
    verdict_is_final,
)

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
            "status": {"containerStatuses": [{"name": "job", "state": state}]}}


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


def test_what_the_container_wrote_to_its_termination_message_is_in_the_failed_outcomes_message():
    said = "cannot download the inputs: list objects in http://minio:9000/in/: NoSuchBucket: no such bucket"
    out = finished_outcome(job(BACKOFF), [pod(terminated={"exitCode": 70, "reason": "Error", "message": said})])
    assert out.message.endswith(f"container exited with code 70 (Error): {said}")


def test_a_job_without_terminal_conditions_is_still_running():
    assert finished_outcome({"metadata": {"name": "j"}, "status": {}}, []) is None
    assert finished_outcome(job(("Suspended", "JobSuspended", "")), []) is None


@pytest.mark.parametrize("interim, status", [
    (("SuccessCriteriaMet", "CompletionsReached", ""), Status.SUCCEEDED),
    (("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit"), Status.FAILED),
    (("FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline"), Status.TIMEDOUT),
])
def test_the_interim_conditions_of_kubernetes_1_31_are_already_the_verdict(interim, status):
    the_job = job(interim)
    assert finished_outcome(the_job, []).status is status
    assert not verdict_is_final(the_job)
    assert verdict_is_final(job(interim, ("Complete" if status is Status.SUCCEEDED else "Failed", interim[1], "")))


def test_the_job_container_is_read_by_name_not_position():
    sidecar = {"name": "istio-proxy", "state": {"running": {}}}
    mine = {"name": "job", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
    native = {"name": "log-shipper", "restartPolicy": "Always", "state": {"running": {}}}
    the_pod = {"metadata": {"name": "j-1", "creationTimestamp": ts(0)},
               "status": {"containerStatuses": [sidecar, mine], "initContainerStatuses": [native]}}
    done = finished_outcome(job(BACKOFF), [the_pod])
    assert (done.exit_code, done.pod_reason) == (137, "OOMKilled")
    assert ended_pod([the_pod]) == ("j-1", False)


def test_a_sidecar_waiting_on_its_image_does_not_make_the_job_stuck():
    the_pod = {"metadata": {"name": "j-1", "creationTimestamp": ts(0)},
               "status": {"startTime": ts(0), "containerStatuses": [
                   {"name": "a-sidecar", "state": {"waiting": {"reason": "ImagePullBackOff"}}},
                   {"name": "job", "state": {"running": {}}}]}}
    assert stuck_outcome(job(), [the_pod], T0 + timedelta(hours=1), 60) == (None, None)
    assert pod_is_running([the_pod])


def test_a_disrupted_or_evicted_pod_names_the_cluster_as_the_reason():
    disrupted = pod(terminated={"exitCode": 143, "reason": "Error"})
    disrupted["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True",
                                          "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting"}]
    done = finished_outcome(job(DEADLINE), [disrupted])
    assert (done.status, done.pod_reason, done.exit_code) == (Status.TIMEDOUT, "EvictionByEvictionAPI", 143)
    assert "stopped by the cluster (EvictionByEvictionAPI): Eviction API: evicting" in done.message
    evicted = pod(terminated={"exitCode": 137, "reason": "Error"})
    evicted["status"].update(reason="Evicted", message="The node was low on resource: memory.")
    done = finished_outcome(job(BACKOFF), [evicted])
    assert done.pod_reason == "Evicted" and "low on resource: memory" in done.message


def failed_create(first, last, uid="u1"):
    return {"metadata": {"name": "j.1"}, "reason": "FailedCreate", "type": "Warning",
            "involvedObject": {"kind": "Job", "name": "j", "uid": uid},
            "message": 'Error creating: pods "j-x" is forbidden: exceeded quota: q',
            "firstTimestamp": ts(first), "lastTimestamp": ts(last)}


def test_a_job_refused_its_pod_is_reported_after_the_grace_with_the_clusters_message():
    the_job = job()
    the_job["metadata"]["uid"] = "u1"
    early, recheck = held_outcome(the_job, [], [failed_create(1, 2)], T0 + timedelta(seconds=5), 60)
    assert early is None and recheck == T0 + timedelta(seconds=61)
    done, _ = held_outcome(the_job, [], [failed_create(1, 70)], T0 + timedelta(seconds=70), 60)
    assert (done.status, done.reason) == (Status.FAILED, "FailedCreate")
    assert "exceeded quota" in done.message
    assert held_outcome(the_job, [], [failed_create(1, 70, uid="an-older-namesake")],
                        T0 + timedelta(seconds=70), 60) == (None, None)


def test_a_suspended_job_is_reported_after_the_grace_never_as_a_timeout():
    the_job = job(("Suspended", "JobSuspended", "Job suspended by the queue"))
    done, _ = held_outcome(the_job, [], [], T0 + timedelta(seconds=71), 60)
    assert (done.status, done.reason) == (Status.FAILED, "Suspended")
    assert "Job suspended by the queue" in done.message


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


def unplaced_pod(since=0, message="0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."):
    return {"metadata": {"name": "j-abcde", "creationTimestamp": ts(since)}, "spec": {},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                 "lastTransitionTime": ts(since)}]}}


def test_a_pod_no_node_can_take_fails_the_job_after_the_grace_with_the_schedulers_message():
    pods = [unplaced_pod(since=5)]
    outcome, recheck = unschedulable_outcome(job(), pods, T0 + timedelta(seconds=20), grace=30)
    assert outcome is None and recheck == T0 + timedelta(seconds=35)
    outcome, recheck = unschedulable_outcome(job(), pods, T0 + timedelta(seconds=35), grace=30)
    assert (outcome.status, outcome.reason, outcome.pod_reason, recheck) == (
        Status.FAILED, "Unschedulable", "Unschedulable", None)
    assert outcome.message == ("pod j-abcde cannot be scheduled: 0/1 nodes are available: 1 node(s) didn't match "
                               "Pod's node affinity/selector.")


def test_a_scheduled_or_running_pod_is_never_unschedulable():
    placed = unplaced_pod()
    placed["spec"]["nodeName"] = "node-1"  # bound: a stale condition says nothing any more
    assert unschedulable_outcome(job(), [placed], T0 + timedelta(hours=1), grace=30) == (None, None)
    assert unschedulable_outcome(job(), [pod(running={})], T0 + timedelta(hours=1), grace=30) == (None, None)


def test_a_status_query_reports_an_unplaceable_job_once_its_grace_is_over():
    pods = [unplaced_pod()]
    assert current_state(job(), pods, T0 + timedelta(seconds=10), grace=60, unschedulable_grace=30) == ("pending", None)
    status, outcome = current_state(job(), pods, T0 + timedelta(seconds=31), grace=60, unschedulable_grace=30)
    assert (status, outcome.reason) == ("failed", "Unschedulable")


GRACES = {"pull_grace": 10, "start_grace": 60, "unschedulable_grace": 30}


def test_a_stuck_pods_grace_is_the_moment_to_look_again_though_nothing_else_holds_the_job():
    # The Job's follower waits until this moment unless the Job or its pods change, and an
    # invalid image changes nothing more: had the stuck pod's moment been lost (the later
    # checks, finding nothing, used to overwrite it), its failure would wait for the
    # follower's safety net instead of coming at the grace's end.
    pods = [pod(created=0, waiting={"reason": "InvalidImageName", "message": "bad"})]
    early, recheck = start_outcome(job(), pods, [], T0 + timedelta(seconds=5), **GRACES)
    assert early is None and recheck == T0 + timedelta(seconds=10)
    late, recheck = start_outcome(job(), pods, [], T0 + timedelta(seconds=10), **GRACES)
    assert (late.status, late.reason, recheck) == (Status.FAILED, "InvalidImageName", None)


def test_of_the_graces_still_running_the_soonest_to_end_is_when_to_look_again():
    pods = [unplaced_pod(since=5)]
    assert start_outcome(job(), pods, [], T0 + timedelta(seconds=20), **GRACES) == (None, T0 + timedelta(seconds=35))
    the_job = job()
    the_job["metadata"]["uid"] = "u1"
    assert start_outcome(the_job, [], [failed_create(1, 2)], T0 + timedelta(seconds=5), **GRACES) == (
        None, T0 + timedelta(seconds=61))
    assert start_outcome(job(), [pod(running={})], [], T0 + timedelta(hours=1), **GRACES) == (None, None)
