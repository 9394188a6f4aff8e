"""Job profiles through the real RabbitMQ and the fake API server: a request's profile shapes
its Job, and a profile's ``maxInFlight`` holds its requests back in the broker, on a queue and
lane of their own, while other work goes on (consumer, amqp)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pika
import pytest

from handler.core.profiles import profile_queue
from tests.support.waiting import job_request, wait_until

pytestmark = pytest.mark.integration

PROFILES = """\
default: standard
profiles:
  standard: {}
  gpu-large:
    resources: {requests: {cpu: "2"}, limits: {memory: 8Gi, nvidia.com/gpu: 1}}
    nodeSelector: {accelerator: nvidia}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    volumes: [{name: scratch, emptyDir: {sizeLimit: 20Gi}}]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
    labels: {team: solvers}
    maxTimeoutMinutes: 20
    maxInFlight: 1
"""


@pytest.fixture
def profiles_file(tmp_path: Path) -> str:
    path = tmp_path / "profiles.yaml"
    path.write_text(PROFILES)
    return str(path)


def image_of(job: dict) -> str:
    return job["spec"]["template"]["spec"]["containers"][0]["image"]


def jobs_of(fakekube, namespace: str, profile: str) -> list[dict]:
    return [j for j in fakekube.jobs(namespace) if j["metadata"]["labels"].get("cloud-worker.mstc.io/profile")
            == profile]


def ready_in(requester, queue: str) -> int:
    """Messages waiting in ``queue`` (not delivered to any consumer)."""
    return requester.queue_depth(queue)


def test_a_request_naming_a_profile_runs_a_job_with_exactly_the_profiles_fields(
        handlers, requester, fakekube, namespace, profiles_file):
    handlers.start(profiles_file=profiles_file, job_env_secret="bucket-creds", concurrency=2)
    plain = requester.submit(job_request("scenario/succeed:0.1", timeOut=3), message_id="req-1")
    gpu = requester.submit(job_request("scenario/succeed:0.1", timeOut=3, profile="gpu-large"), message_id="req-2")
    plain_reply, gpu_reply = requester.wait_reply(plain), requester.wait_reply(gpu)
    assert (plain_reply["data"]["status"], plain_reply["data"]["profile"]) == ("succeeded", "standard")
    assert (gpu_reply["data"]["status"], gpu_reply["data"]["profile"]) == ("succeeded", "gpu-large")
    (standard_job,) = jobs_of(fakekube, namespace, "standard")
    (gpu_job,) = jobs_of(fakekube, namespace, "gpu-large")
    # The Jobs as the API server stored them: their pod specs differ by exactly the profile's fields.
    plain_spec, gpu_spec = standard_job["spec"]["template"]["spec"], gpu_job["spec"]["template"]["spec"]
    changed = {k for k in plain_spec.keys() | gpu_spec.keys() if k != "containers" and
               plain_spec.get(k) != gpu_spec.get(k)}
    assert changed == {"nodeSelector", "tolerations", "volumes"}
    assert gpu_spec["nodeSelector"] == {"accelerator": "nvidia"}
    assert gpu_spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert gpu_spec["volumes"] == [{"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}}]
    (plain_container,), (gpu_container,) = plain_spec["containers"], gpu_spec["containers"]
    changed = {k for k in plain_container.keys() | gpu_container.keys() if k != "env" and
               plain_container.get(k) != gpu_container.get(k)}
    assert changed == {"resources", "volumeMounts"}
    assert gpu_container["resources"] == {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi", "nvidia.com/gpu": "1"}}
    assert gpu_container["envFrom"] == plain_container["envFrom"] == [{"secretRef": {"name": "bucket-creds"}}]
    assert gpu_job["spec"]["template"]["metadata"]["labels"]["team"] == "solvers"
    assert "team" not in standard_job["spec"]["template"]["metadata"]["labels"]


def test_an_unknown_profile_is_rejected_naming_the_valid_profiles(handlers, requester, profiles_file):
    handlers.start(profiles_file=profiles_file)
    cid = requester.submit(job_request("scenario/succeed:0.1", profile="gpu-huge"))
    data = requester.wait_reply(cid)["data"]
    assert (data["status"], data["reason"], data["field"]) == ("rejected", "UnknownProfile", "profile")
    assert data["message"] == "'gpu-huge' is not a profile of this handler; it has standard, gpu-large"


def test_requests_over_a_profiles_max_in_flight_wait_in_its_queue_while_other_work_goes_on(
        handlers, requester, fakekube, namespace, profiles_file, queue_name):
    handler = handlers.start(profiles_file=profiles_file, concurrency=2)
    gpu_queue = profile_queue(queue_name, "gpu-large")
    held = [requester.submit(job_request("scenario/hold", profile="gpu-large", jobName=f"gpu-{i}"))
            for i in range(3)]
    wait_until(lambda: len(jobs_of(fakekube, namespace, "gpu-large")) == 1, "the first GPU Job is created")
    # The other two were forwarded to the profile's queue and wait there, in the broker: ready,
    # not held unacked by this replica (another replica with a free GPU slot would take them).
    wait_until(lambda: ready_in(requester, gpu_queue) == 2, "two GPU requests wait in the profile's queue")
    plain = [requester.submit(job_request("scenario/succeed:0.1", jobName=f"plain-{i}")) for i in range(3)]
    for cid in plain:  # never behind the GPU requests
        assert requester.wait_reply(cid)["data"]["status"] == "succeeded"
    assert len(jobs_of(fakekube, namespace, "gpu-large")) == 1 and ready_in(requester, gpu_queue) == 2
    assert handler.consumer.stats.forwarded == 3 and handler.consumer.stats.rejected == 0
    finished: set[str] = set()
    for _ in held:  # one at a time: each finished GPU Job lets the next request in
        wait_until(lambda: len([j for j in jobs_of(fakekube, namespace, "gpu-large")
                                if j["metadata"]["name"] not in finished]) == 1, "one GPU Job runs")
        running = [j for j in jobs_of(fakekube, namespace, "gpu-large") if j["metadata"]["name"] not in finished]
        assert len(running) == 1
        name = running[0]["metadata"]["name"]
        fakekube.finish(namespace, name)
        finished.add(name)
    statuses = [requester.wait_reply(cid)["data"]["status"] for cid in held]
    assert statuses == ["succeeded"] * 3
    wait_until(lambda: handler.consumer.inflight == 0, "every request is settled")
    assert ready_in(requester, gpu_queue) == 0 and requester.queue_depth() == 0
    assert len(jobs_of(fakekube, namespace, "gpu-large")) == 3 and handler.consumer.stats.rejected == 0


def test_requests_waiting_in_a_profiles_queue_survive_a_killed_handler_and_run_once(
        handlers, requester, fakekube, namespace, profiles_file, queue_name):
    first = handlers.spawn(profiles_file=profiles_file)
    gpu_queue = profile_queue(queue_name, "gpu-large")
    cids = [requester.submit(job_request("scenario/hold", profile="gpu-large", jobName=f"gpu-{i}"),
                             message_id=f"gpu-{i}") for i in range(2)]
    wait_until(lambda: len(jobs_of(fakekube, namespace, "gpu-large")) == 1 and ready_in(requester, gpu_queue) == 1,
               "one GPU Job runs, one request waits in the profile's queue", timeout=30)
    first.kill()  # SIGKILL: the running request goes back to its queue, unacked; the waiting one never left
    first.wait(10)
    handlers.spawn(profiles_file=profiles_file)
    (running,) = jobs_of(fakekube, namespace, "gpu-large")
    fakekube.finish(namespace, running["metadata"]["name"])  # the new handler adopts it and replies
    assert requester.wait_reply(cids[0], timeout=30)["data"]["status"] == "succeeded"
    wait_until(lambda: len(jobs_of(fakekube, namespace, "gpu-large")) == 2, "the waiting request runs next",
               timeout=30)
    second = next(j for j in jobs_of(fakekube, namespace, "gpu-large") if j["metadata"]["name"] !=
                  running["metadata"]["name"])
    fakekube.finish(namespace, second["metadata"]["name"])
    assert requester.wait_reply(cids[1], timeout=30)["data"]["status"] == "succeeded"
    time.sleep(1)
    requester.collect(0.5)
    # One Job each, and one reply each (at least once: a reply sent again after a lost connection has
    # the same event id, so the requester drops the copy).
    assert len(jobs_of(fakekube, namespace, "gpu-large")) == 2
    assert [len({r["id"] for r in requester.terminal_replies_for(c)}) for c in cids] == [1, 1]


def test_a_forwarded_request_keeps_its_properties_and_its_expiration_counts_in_the_profiles_queue(
        handlers, requester, fakekube, namespace, profiles_file, queue_name):
    handler = handlers.start(profiles_file=profiles_file)
    busy = requester.submit(job_request("scenario/hold", profile="gpu-large", jobName="busy"))
    wait_until(lambda: len(jobs_of(fakekube, namespace, "gpu-large")) == 1, "the GPU lane is busy")
    # Nobody takes this one within its 2 s: it expires in the profile's queue and never runs.
    late = requester.submit(job_request("scenario/succeed:0.1", profile="gpu-large", jobName="late"),
                            message_id="late-1", expiration="2000")
    wait_until(lambda: handler.consumer.stats.forwarded == 2, "both are forwarded")
    time.sleep(3)
    assert ready_in(requester, profile_queue(queue_name, "gpu-large")) == 0  # expired, dropped by the broker
    fakekube.finish(namespace, jobs_of(fakekube, namespace, "gpu-large")[0]["metadata"]["name"])
    assert requester.wait_reply(busy)["data"]["status"] == "succeeded"
    requester.collect(1.0)
    assert requester.replies_for(late) == [] and len(jobs_of(fakekube, namespace, "gpu-large")) == 1


def test_a_copy_of_a_request_in_the_profile_queue_carries_what_the_original_did(
        handlers, requester, fakekube, namespace, profiles_file, queue_name):
    handler = handlers.start(profiles_file=profiles_file)
    gpu_queue = profile_queue(queue_name, "gpu-large")
    busy = requester.submit(job_request("scenario/hold", profile="gpu-large", jobName="busy"))
    wait_until(lambda: len(jobs_of(fakekube, namespace, "gpu-large")) == 1, "the GPU lane is busy")
    body = json.dumps(job_request("scenario/succeed:0.1", profile="gpu-large")).encode()
    requester.channel.basic_publish("mstc.exchange", queue_name, body, pika.BasicProperties(
        content_type="application/json", correlation_id="c-9", message_id="m-9", reply_to="replies-9",
        expiration="60000", headers={"x-mstc-progress": "true"}, delivery_mode=2))
    wait_until(lambda: handler.consumer.stats.forwarded == 2 and ready_in(requester, gpu_queue) == 1,
               "the copy waits in the profile's queue")
    props, copy = requester.get_one(gpu_queue)
    assert copy == body
    assert (props.correlation_id, props.message_id, props.reply_to, props.content_type) == (
        "c-9", "m-9", "replies-9", "application/json")
    assert props.headers["x-mstc-progress"] == "true" and props.expiration == "60000"
    assert requester.queue_depth() == 0  # the original was acked once the copy was confirmed
    fakekube.finish(namespace, jobs_of(fakekube, namespace, "gpu-large")[0]["metadata"]["name"])
    assert requester.wait_reply(busy)["data"]["status"] == "succeeded"


def test_a_profiles_request_retried_after_a_transient_failure_goes_back_to_its_own_queue(
        handlers, requester, fakekube, namespace, profiles_file, faults):
    handler = handlers.start(profiles_file=profiles_file, max_attempts=5, retry_delay_seconds=0.2)
    faults.reject_create_status = 503  # the API server is unwell: the Job cannot be created yet
    cid = requester.submit(job_request("scenario/succeed:0.1", profile="gpu-large"))
    wait_until(lambda: handler.consumer.stats.requeued >= 1, "the request is put back for a retry", timeout=60)
    faults.reject_create_status = None
    data = requester.wait_reply(cid, timeout=30)["data"]
    assert (data["status"], data["profile"]) == ("succeeded", "gpu-large")
    # Forwarded once, from the work queue; its retry copies went straight to the profile's queue.
    assert handler.consumer.stats.forwarded == 1 and len(jobs_of(fakekube, namespace, "gpu-large")) == 1
