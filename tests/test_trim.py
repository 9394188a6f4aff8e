"""The watch cache's trimmed objects say what the whole ones say: every reader of Jobs,
pods and events in the handler (``outcome``, ``manifest``, the tracker's indexes) is run
on every state the fake API server writes for Jobs that end in every way it models,
whole and trimmed, and must give the same answers."""

import dataclasses
import json
import time
from datetime import timedelta

import pytest

from handler.adapters.kube import Kube
from handler.core import manifest, outcome, unanswered
from handler.core.config import Settings
from handler.core.messages import Message
from handler.core.request import parse_request
from handler.core.trim import trim_event, trim_job, trim_pod
from handler.service.tracker import event_job_name, pod_job_name
from tests.fakekube import FakeKube

IMAGES = ["scenario/succeed:0", "scenario/fail:3", "scenario/oom", "scenario/imagepull", "scenario/configerror",
          "mstc/root", "scenario/hold", "scenario/hold", "scenario/hold"]


def _request(settings, image, name):
    body = {"image": image, "jobName": name, "inputBucketUrl": "http://minio:9000/inputs", "timeOut": 1}
    return parse_request(Message(json.dumps(body).encode(), "application/json", correlation_id=name,
                                 reply_to="amq.gen-x", message_id=name), settings)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Every state written of every Job, pod and event, in order: Jobs succeeding, failing,
    OOM-killed, stuck pulling or configuring, refused by admission, disrupted, cancelled
    (marked, deleted, held by the finalizer) and replied to."""
    writes: list[tuple[str, str, dict]] = []
    with FakeKube(run_seconds=0.05, pod_security="restricted") as fake:
        fake.on_write(lambda plural, kind, ns, obj: writes.append((plural, kind, obj)))
        settings = Settings.from_env({"CLOUD_WORKER_NAMESPACE": "trim",
                                      "KUBECONFIG": str(fake.write_kubeconfig(
                                          tmp_path_factory.mktemp("trim") / "kubeconfig"))})
        kube = Kube(settings)
        requests = [_request(settings, image, f"t{i}") for i, image in enumerate(IMAGES)]
        manifests = [manifest.build_job(r, settings) for r in requests]
        for m in manifests:  # mstc/root runs as root: Pod Security admission refuses its pod
            if manifest.job_image(m) == "mstc/root":
                m["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUser"] = 0
        jobs = [kube.create_job(m) for m in manifests]
        time.sleep(1.0)
        held = [j["metadata"]["name"] for j in jobs if "hold" in manifest.job_image(j)]
        pods = {p["metadata"]["labels"]["job-name"]: p["metadata"]["name"] for p in fake.pods("trim")}
        fake.disrupt_pod("trim", pods[held[0]])
        kube.patch_job_annotations(held[1], manifest.cancel_annotations("the user asked"))
        kube.delete_job(held[1])
        fake.finish("trim", held[2])
        time.sleep(1.0)
        for request, job in zip(requests, jobs, strict=True):
            current = kube.read_job(job["metadata"]["name"])
            if current is not None and outcome.verdict(current) is not None:
                kube.patch_job(current["metadata"]["name"], manifest.replied_patch(current, "succeeded",
                                                                                    request.identity))
        time.sleep(0.3)
        kube.close()
    return settings, requests, writes


def _states(writes):
    """Each Job state with the pods and events of that Job as they were at that moment."""
    pods: dict[str, dict] = {}
    events: dict[str, dict] = {}
    for plural, _kind, obj in writes:
        name = obj["metadata"]["name"]
        if plural == "pods":
            pods[name] = obj
        elif plural == "events":
            events[name] = obj
        else:
            own_pods = [p for p in pods.values() if pod_job_name(p) == name]
            own_events = [e for e in events.values() if event_job_name(e) == name]
            yield obj, own_pods, own_events


def _readings(settings, requests, job, pods, events):
    """What every reader says of one Job state (in plain, comparable values)."""
    created = outcome.parse_time(job["metadata"]["creationTimestamp"])
    said = {
        # (the condition as its callers read it: reason, message, lastTransitionTime)
        "verdict": [(v[0], {k: v[1].get(k) for k in ("type", "reason", "message", "lastTransitionTime")}, v[2])
                    for v in [outcome.verdict(job)] if v is not None],
        "final": outcome.verdict_is_final(job),
        "latest": (outcome.latest_pod(pods) or {}).get("metadata", {}).get("name"),
        "running": outcome.pod_is_running(pods), "ended": outcome.ended_pod(pods),
        "finished": outcome.finished_outcome(job, pods),
        "request": dataclasses.asdict(manifest.request_from_job(job)),
        "mismatch": [manifest.mismatch(job, r) for r in requests],
        "image": manifest.job_image(job), "holds": manifest.holds(job), "owned": manifest.owned(job, settings),
        "pod_jobs": sorted(str(pod_job_name(p)) for p in pods),
        "event_jobs": sorted(str(event_job_name(e)) for e in events),
    }
    for later in (0, 30, 3600, 86400):
        now = created + timedelta(seconds=later)
        said[f"state+{later}"] = outcome.current_state(job, pods, now, 20, events)
        said[f"stuck+{later}"] = outcome.stuck_outcome(job, pods, now, 20)
        said[f"held+{later}"] = outcome.held_outcome(job, pods, events, now, 20)
        said[f"unschedulable+{later}"] = outcome.unschedulable_outcome(job, pods, now, 20)
        said[f"state+{later}+unschedulable"] = outcome.current_state(job, pods, now, 20, events, unschedulable_grace=20)
        said[f"expired+{later}"] = manifest.finalizer_expired(job, now, 60)
        said[f"cancelled+{later}"] = manifest.cancelled_outcome(job, now)
        said[f"unanswered+{later}"] = unanswered.unanswered_outcome(job, pods, now, 10)
        said[f"claim+{later}"] = unanswered.claim_patch(job, now)
    return said


def test_every_reader_says_the_same_of_trimmed_objects_as_of_whole_ones(history):
    settings, requests, writes = history
    states = list(_states(writes))
    assert len(states) > 40
    for job, pods, events in states:
        whole = _readings(settings, requests, job, pods, events)
        trimmed = _readings(settings, requests, trim_job(job), [trim_pod(p) for p in pods],
                            [trim_event(e) for e in events])
        assert trimmed == whole, job["metadata"]["name"]


def test_the_history_covers_every_way_a_job_ends(history):
    """The comparison above means something only if the states cover the outcomes."""
    settings, requests, writes = history
    seen = {str(_readings(settings, requests, j, p, e)["state+86400"][0]) for j, p, e in _states(writes)}
    reasons = {o.reason for j, p, e in _states(writes)
               if (o := _readings(settings, requests, j, p, e)["state+86400"][1]) is not None}
    assert {"succeeded", "failed", "running", "pending"} <= seen
    assert {"ImagePullBackOff", "CreateContainerConfigError", "FailedCreate", "BackoffLimitExceeded"} & reasons
    jobs = [j for j, _, _ in _states(writes)]
    assert any(manifest.ANNOTATION_CANCELLED in (j["metadata"].get("annotations") or {}) for j in jobs)
    assert any(manifest.LABEL_REPLIED in (j["metadata"].get("labels") or {}) for j in jobs)
    assert any(outcome.condition(obj, outcome.DISRUPTION) for plural, _, obj in writes if plural == "pods")


def test_trimmed_jobs_and_pods_are_a_fraction_of_the_whole(history):
    """(Events are small and few: only a Job's ``FailedCreate`` ones are watched.)"""
    _, _, writes = history
    for plural, trim, share in (("jobs", trim_job, 0.6), ("pods", trim_pod, 0.25)):
        objects = [obj for p, _, obj in writes if p == plural]
        whole = sum(len(json.dumps(o)) for o in objects)
        kept = sum(len(json.dumps(trim(o))) for o in objects)
        assert kept < whole * share, plural


#: A pod as a real API server (Kubernetes 1.35, tests/e2e) writes it when no node matches its
#: selector: the fake cluster binds every pod, so the history above has none.
UNSCHEDULABLE_POD = {
    "metadata": {"name": "nowhere-wtcn8", "creationTimestamp": "2026-12-07T19:48:22Z",
                 "labels": {"batch.kubernetes.io/job-name": "nowhere", "job-name": "nowhere",
                            "app.kubernetes.io/managed-by": "mstc-cloud-worker"}},
    "spec": {"containers": [{"name": "job", "image": "e2e/ok:1"}], "nodeSelector": {"e2e.mstc.io/pool": "absent"},
             "restartPolicy": "Never", "schedulerName": "default-scheduler"},
    "status": {"phase": "Pending", "qosClass": "BestEffort", "conditions": [{
        "lastProbeTime": None, "lastTransitionTime": "2026-12-07T19:48:22Z", "observedGeneration": 1,
        "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. no new claims to "
                   "deallocate, preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
        "reason": "Unschedulable", "status": "False", "type": "PodScheduled"}]},
}


def test_a_trimmed_unschedulable_pod_still_says_no_node_can_take_it_and_a_bound_one_that_it_was_placed():
    job = {"metadata": {"name": "nowhere", "creationTimestamp": "2026-12-07T19:48:22Z"}, "spec": {}, "status": {}}
    bound = json.loads(json.dumps(UNSCHEDULABLE_POD))
    bound["spec"]["nodeName"] = "kwok-node-0"  # placed since: the condition above is stale
    for pod in (UNSCHEDULABLE_POD, bound):
        for later in (1, 30):
            now = outcome.parse_time("2026-12-07T19:48:22Z") + timedelta(seconds=later)
            assert outcome.unschedulable_outcome(job, [trim_pod(pod)], now, 20) == \
                outcome.unschedulable_outcome(job, [pod], now, 20)
    now = outcome.parse_time("2026-12-07T19:48:52Z")
    assert outcome.unschedulable_outcome(job, [trim_pod(UNSCHEDULABLE_POD)], now, 20)[0].reason == "Unschedulable"
    assert outcome.unschedulable_outcome(job, [trim_pod(bound)], now, 20) == (None, None)
