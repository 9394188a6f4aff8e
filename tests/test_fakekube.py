"""The fake Kubernetes API server, driven only through the official client.

If these pass, the handler's integration tests exercise the same client code
paths (ApiException bodies, watch streams, 410 recovery) they would against a
cluster. Each test gets its own server, so there is no shared state.
"""

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.fakekube import FakeKube, Sidecar, Timings

NS = "work"
REPO = Path(__file__).resolve().parent.parent


# -- fixtures and helpers -------------------------------------------------------

@pytest.fixture
def make_fake():
    """Factory for started servers; every one is stopped after the test."""
    started = []

    def make(**kwargs) -> FakeKube:
        fake = FakeKube(**{"run_seconds": 0.05, **kwargs}).start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def fake(make_fake) -> FakeKube:
    return make_fake()


def connect(fake: FakeKube, tmp_path: Path, **settings) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(fake.write_kubeconfig(tmp_path / "kubeconfig")),
                            client_configuration=cfg)
    for name, value in settings.items():
        setattr(cfg, name, value)
    return client.ApiClient(cfg)


@pytest.fixture
def api(fake, tmp_path):
    with connect(fake, tmp_path) as api_client:
        yield api_client


@pytest.fixture
def batch(api) -> client.BatchV1Api:
    return client.BatchV1Api(api)


@pytest.fixture
def core(api) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def job(name: str, image: str = "mstc/python-test:latest", labels: dict | None = None,
        env: dict | None = None, finalizers: list[str] | None = None,
        containers: list[client.V1Container] = (), init_containers: list[client.V1Container] | None = None,
        restart_policy: str = "Never", **spec) -> client.V1Job:
    container = client.V1Container(name="main", image=image, env=[
        client.V1EnvVar(name=key, value=value) for key, value in (env or {}).items()])
    template = client.V1PodTemplateSpec(spec=client.V1PodSpec(
        restart_policy=restart_policy, containers=[container, *containers], init_containers=init_containers))
    return client.V1Job(api_version="batch/v1", kind="Job",
                        metadata=client.V1ObjectMeta(name=name, labels=labels, finalizers=finalizers),
                        spec=client.V1JobSpec(template=template, **spec))


def conditions(obj: client.V1Job) -> list[tuple[str, str | None]]:
    return [(c.type, c.reason) for c in (obj.status.conditions or [])]


def wait_for_job(batch: client.BatchV1Api, name: str, timeout: int = 10) -> client.V1Job:
    """Watch the Job until it has a Complete or Failed condition."""
    stream = watch.Watch()
    for event in stream.stream(batch.list_namespaced_job, NS, field_selector=f"metadata.name={name}",
                               timeout_seconds=timeout):
        if any(kind in ("Complete", "Failed") for kind, _ in conditions(event["object"])):
            stream.stop()
            return event["object"]
    raise AssertionError(f"job {name} did not finish within {timeout}s")


def wait_until(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def only_pod(core: client.CoreV1Api, name: str) -> client.V1Pod:
    pods = core.list_namespaced_pod(NS, label_selector=f"job-name={name}").items
    assert len(pods) == 1
    return pods[0]


def running_pod(core: client.CoreV1Api, name: str) -> client.V1Pod | None:
    """The Job's pod once it is Running."""
    pods = core.list_namespaced_pod(NS, label_selector=f"job-name={name}").items
    return pods[0] if pods and pods[0].status.phase == "Running" else None


def container_status(core: client.CoreV1Api, name: str) -> client.V1ContainerStatus | None:
    """The Job's pod's first container status, once there is a pod with one."""
    pods = core.list_namespaced_pod(NS, label_selector=f"job-name={name}").items
    return pods[0].status.container_statuses[0] if pods and pods[0].status.container_statuses else None


def error_body(exc: ApiException) -> dict:
    return json.loads(exc.body)


# -- create, read, list -----------------------------------------------------------------

def test_create_fills_server_side_metadata_and_defaults(batch):
    created = batch.create_namespaced_job(NS, job("alpha", labels={"app": "demo"}))
    meta = created.metadata
    assert meta.uid and meta.namespace == NS and int(meta.resource_version) > 1
    assert meta.creation_timestamp is not None and meta.generation == 1
    assert created.spec.backoff_limit == 6 and created.spec.completions == 1 and created.spec.parallelism == 1
    template_labels = created.spec.template.metadata.labels
    assert template_labels["job-name"] == template_labels["batch.kubernetes.io/job-name"] == "alpha"
    assert template_labels["controller-uid"] == template_labels["batch.kubernetes.io/controller-uid"] == meta.uid


def test_creating_a_job_twice_answers_409_already_exists(batch, fake):
    batch.create_namespaced_job(NS, job("twice"))
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job(NS, job("twice"))
    body = error_body(caught.value)
    assert caught.value.status == 409 and body["reason"] == "AlreadyExists"
    assert body["message"] == 'jobs.batch "twice" already exists'
    assert body["details"] == {"name": "twice", "group": "batch", "kind": "jobs"}
    assert fake.created_jobs(NS) == ["twice"]


@pytest.mark.parametrize("manifest", [
    job("Not_A_Label"),
    job("x" * 64),
    client.V1Job(metadata=client.V1ObjectMeta(name="empty"), spec=client.V1JobSpec(
        template=client.V1PodTemplateSpec(spec=client.V1PodSpec(restart_policy="Never", containers=[])))),
    client.V1Job(metadata=client.V1ObjectMeta(), spec=job("x").spec),
])
def test_invalid_job_is_rejected_with_422_invalid(batch, manifest):
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job(NS, manifest)
    assert caught.value.status == 422 and error_body(caught.value)["reason"] == "Invalid"


def test_generate_name_gets_a_random_suffix(batch):
    manifest = job("ignored")
    manifest.metadata = client.V1ObjectMeta(generate_name="gen-")
    created = batch.create_namespaced_job(NS, manifest)
    assert created.metadata.name.startswith("gen-") and len(created.metadata.name) == 9


def test_reading_a_missing_job_answers_404_not_found(batch, core):
    with pytest.raises(ApiException) as caught:
        batch.read_namespaced_job("ghost", NS)
    assert caught.value.status == 404 and error_body(caught.value)["reason"] == "NotFound"
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_pod("ghost", NS)
    assert error_body(caught.value)["message"] == 'pods "ghost" not found'


def test_read_and_status_return_the_stored_job(batch):
    created = batch.create_namespaced_job(NS, job("reader"))
    assert batch.read_namespaced_job("reader", NS).metadata.uid == created.metadata.uid
    assert batch.read_namespaced_job_status("reader", NS).metadata.uid == created.metadata.uid


def test_list_filters_by_label_and_field_selectors(batch):
    batch.create_namespaced_job(NS, job("a1", labels={"app": "a", "tier": "web"}))
    batch.create_namespaced_job(NS, job("a2", labels={"app": "a"}))
    batch.create_namespaced_job(NS, job("b1", labels={"app": "b"}))
    batch.create_namespaced_job("elsewhere", job("c1", labels={"app": "a"}))

    def names(**selectors) -> list[str]:
        return [j.metadata.name for j in batch.list_namespaced_job(NS, **selectors).items]

    assert names() == ["a1", "a2", "b1"]
    assert names(label_selector="app=a") == ["a1", "a2"]
    assert names(label_selector="app!=a") == ["b1"]
    assert names(label_selector="tier") == ["a1"]
    assert names(label_selector="app=a,!tier") == ["a2"]
    assert names(label_selector="app in (a, b),app!=b") == ["a1", "a2"]
    assert names(field_selector="metadata.name=b1") == ["b1"]
    assert len(batch.list_job_for_all_namespaces(label_selector="app=a").items) == 3


def test_list_carries_the_current_resource_version(batch, fake):
    batch.create_namespaced_job(NS, job("versioned"))
    listing = batch.list_namespaced_job(NS)
    assert listing.kind == "JobList" and int(listing.metadata.resource_version) >= 2


def test_bad_label_selector_answers_400(batch):
    with pytest.raises(ApiException) as caught:
        batch.list_namespaced_job(NS, label_selector="app=(")
    assert caught.value.status == 400


# -- watch ---------------------------------------------------------------------------------

def test_watch_without_resource_version_starts_with_added_for_existing_jobs(batch):
    batch.create_namespaced_job(NS, job("existing", image="scenario/hold"))
    events = watch.Watch().stream(batch.list_namespaced_job, NS, timeout_seconds=1)
    first = next(events)
    events.close()
    assert first["type"] == "ADDED" and first["object"].metadata.name == "existing"


def test_watch_from_a_resource_version_gets_only_later_events(batch, fake):
    batch.create_namespaced_job(NS, job("settled", image="scenario/hold"))
    wait_until(lambda: fake.jobs(NS)[0]["status"].get("ready") == 1)
    version = batch.list_namespaced_job(NS).metadata.resource_version
    batch.patch_namespaced_job("settled", NS, {"metadata": {"annotations": {"seen": "yes"}}})
    events = list(watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=version,
                                       timeout_seconds=1))
    assert [(e["type"], e["object"].metadata.annotations) for e in events] == [("MODIFIED", {"seen": "yes"})]
    assert all(int(e["object"].metadata.resource_version) > int(version) for e in events)


def test_watch_streams_the_whole_lifecycle_in_order(batch):
    version = batch.list_namespaced_job(NS).metadata.resource_version
    batch.create_namespaced_job(NS, job("life"))
    seen, stream = [], watch.Watch()
    for event in stream.stream(batch.list_namespaced_job, NS, resource_version=version, timeout_seconds=5):
        seen.append((event["type"], conditions(event["object"])))
        if ("Complete", "CompletionsReached") in seen[-1][1]:
            stream.stop()
    assert seen[0] == ("ADDED", [])
    assert seen[-2][1] == [("SuccessCriteriaMet", "CompletionsReached")]
    assert seen[-1] == ("MODIFIED", [("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached")])


def test_watch_from_old_version_after_compaction_gets_410(batch, fake):
    old = batch.list_namespaced_job(NS).metadata.resource_version
    batch.create_namespaced_job(NS, job("later"))
    fake.compact()
    with pytest.raises(ApiException) as caught:
        list(watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=old, timeout_seconds=1))
    assert caught.value.status == 410 and "Expired" in caught.value.reason


def test_watch_from_the_current_version_after_compaction_still_works(batch, fake):
    batch.create_namespaced_job(NS, job("before", image="scenario/hold"))
    wait_until(lambda: fake.jobs(NS)[0]["status"].get("ready") == 1)
    fake.compact()
    current = batch.list_namespaced_job(NS).metadata.resource_version
    fake.compact()
    batch.patch_namespaced_job("before", NS, {"metadata": {"labels": {"touched": "1"}}})
    events = watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=current, timeout_seconds=1)
    assert next(events)["object"].metadata.labels["touched"] == "1"
    events.close()


def test_watch_beyond_the_retained_history_gets_410(make_fake, tmp_path):
    fake = make_fake(history_limit=5)
    with connect(fake, tmp_path) as api:
        batch = client.BatchV1Api(api)
        for index in range(6):
            batch.create_namespaced_job(NS, job(f"j{index}", image="scenario/hold"))
        with pytest.raises(ApiException) as caught:
            list(watch.Watch().stream(batch.list_namespaced_job, NS, resource_version="1", timeout_seconds=1))
        assert caught.value.status == 410


def test_watch_ends_cleanly_after_timeout_with_a_bookmark_once_jobs_changed(batch, fake):
    batch.create_namespaced_job("elsewhere", job("moved", image="scenario/hold", suspend=True))
    started = time.monotonic()
    events = list(watch.Watch().stream(batch.list_namespaced_job, NS, resource_version="1", timeout_seconds=1,
                                       allow_watch_bookmarks=True))
    assert 0.9 <= time.monotonic() - started < 3
    assert events[-1]["type"] == "BOOKMARK"
    assert events[-1]["raw_object"]["metadata"]["resourceVersion"] == str(
        int(batch.list_namespaced_job(NS).metadata.resource_version))


def test_watch_filters_pods_by_label_selector(batch, core):
    version = core.list_namespaced_pod(NS).metadata.resource_version
    batch.create_namespaced_job(NS, job("wanted"))
    batch.create_namespaced_job(NS, job("unwanted"))
    names = {e["object"].metadata.labels["job-name"] for e in watch.Watch().stream(
        core.list_namespaced_pod, NS, resource_version=version, label_selector="job-name=wanted",
        timeout_seconds=1)}
    assert names == {"wanted"}


def test_a_change_moving_a_job_out_of_a_watchs_selection_comes_as_deleted_and_back_in_as_added(batch, fake):
    batch.create_namespaced_job(NS, job("mover", image="scenario/hold", labels={"stage": "waiting"}))
    wait_until(lambda: fake.jobs(NS)[0]["status"].get("ready") == 1)
    version = batch.list_namespaced_job(NS).metadata.resource_version
    batch.patch_namespaced_job("mover", NS, {"metadata": {"labels": {"stage": "done"}}})
    batch.patch_namespaced_job("mover", NS, {"metadata": {"labels": {"stage": "waiting"}}})
    events = [(e["type"], e["object"].metadata.labels.get("stage"), int(e["object"].metadata.resource_version))
              for e in watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=version,
                                            label_selector="stage=waiting", timeout_seconds=1)
              if e["object"].metadata.name == "mover"]
    # As the API server's watch cache sends them: the object's previous content, at the new version.
    assert [(kind, stage) for kind, stage, _ in events] == [("DELETED", "waiting"), ("ADDED", "waiting")]
    assert events[0][2] > int(version)


# -- scenarios: the simulated controller and kubelet -------------------------------------------

def test_plain_image_succeeds_with_complete_conditions(batch, core):
    batch.create_namespaced_job(NS, job("plain"))
    done = wait_for_job(batch, "plain")
    assert conditions(done) == [("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached")]
    assert done.status.succeeded == 1 and not done.status.active and done.status.completion_time is not None
    assert all(c.status == "True" for c in done.status.conditions)
    pod = only_pod(core, "plain")
    terminated = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Succeeded" and (terminated.exit_code, terminated.reason) == (0, "Completed")
    assert pod.metadata.owner_references[0].controller and pod.metadata.owner_references[0].name == "plain"


def test_succeed_scenario_runs_for_the_given_seconds(batch):
    started = time.monotonic()
    batch.create_namespaced_job(NS, job("timed", image="scenario/succeed:0.4"))
    assert conditions(wait_for_job(batch, "timed"))[-1] == ("Complete", "CompletionsReached")
    assert time.monotonic() - started >= 0.4


def test_fail_scenario_retries_until_the_backoff_limit_then_fails(batch, core):
    batch.create_namespaced_job(NS, job("flaky", image="scenario/fail:3", backoff_limit=2))
    done = wait_for_job(batch, "flaky")
    assert conditions(done) == [("FailureTarget", "BackoffLimitExceeded"), ("Failed", "BackoffLimitExceeded")]
    assert done.status.conditions[-1].message == "Job has reached the specified backoff limit"
    assert done.status.failed == 3 and not done.status.active
    pods = core.list_namespaced_pod(NS, label_selector="job-name=flaky").items
    assert len(pods) == 3 and {p.status.phase for p in pods} == {"Failed"}
    states = {(s.state.terminated.exit_code, s.state.terminated.reason) for p in pods
              for s in p.status.container_statuses}
    assert states == {(3, "Error")}


def test_oom_scenario_terminates_with_oomkilled_137(batch, core):
    batch.create_namespaced_job(NS, job("hungry", image="scenario/oom", backoff_limit=0))
    assert conditions(wait_for_job(batch, "hungry"))[-1] == ("Failed", "BackoffLimitExceeded")
    terminated = only_pod(core, "hungry").status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (137, "OOMKilled")


def test_imagepull_scenario_stays_pending_in_backoff(batch, core):
    batch.create_namespaced_job(NS, job("pull", image="scenario/imagepull"))
    waiting = wait_until(lambda: container_status(core, "pull"))
    assert waiting.state.waiting.reason == "ErrImagePull"
    time.sleep(0.3)
    pod = only_pod(core, "pull")
    assert pod.status.phase == "Pending"
    assert pod.status.container_statuses[0].state.waiting.reason == "ImagePullBackOff"
    assert pod.status.container_statuses[0].state.waiting.message == 'Back-off pulling image "scenario/imagepull"'
    running = batch.read_namespaced_job("pull", NS)
    assert running.status.active == 1 and not running.status.conditions
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_pod_log(pod.metadata.name, NS)
    assert caught.value.status == 400 and "is waiting to start" in error_body(caught.value)["message"]


@pytest.mark.parametrize(("image", "reason"), [
    ("scenario/invalid-image", "InvalidImageName"),
    ("scenario/configerror", "CreateContainerConfigError"),
])
def test_waiting_scenarios_report_their_reason(batch, core, image, reason):
    batch.create_namespaced_job(NS, job("stuck", image=image))
    status = wait_until(lambda: container_status(core, "stuck"))
    assert status.state.waiting.reason == reason and status.ready is False


def test_deadline_fails_a_long_running_job_with_deadline_exceeded(make_fake, tmp_path):
    fake = make_fake(timings=Timings(deadline_grace=0.2))
    with connect(fake, tmp_path) as api:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        batch.create_namespaced_job(NS, job("slow", image="scenario/sleep:30", active_deadline_seconds=1))
        done = wait_for_job(batch, "slow")
        assert conditions(done) == [("FailureTarget", "DeadlineExceeded"), ("Failed", "DeadlineExceeded")]
        assert done.status.conditions[-1].message == "Job was active longer than specified deadline"
        assert done.status.failed == 1
        killed = only_pod(core, "slow")
        assert killed.status.phase == "Failed" and killed.metadata.deletion_timestamp is not None
        assert "starting scenario/sleep:30" in core.read_namespaced_pod_log(killed.metadata.name, NS)
        wait_until(lambda: not fake.pods(NS))


def test_deadline_applies_to_pods_that_never_start(batch):
    batch.create_namespaced_job(NS, job("never", image="scenario/imagepull", active_deadline_seconds=1))
    assert conditions(wait_for_job(batch, "never"))[-1] == ("Failed", "DeadlineExceeded")


def test_ttl_deletes_the_finished_job_and_its_pods(batch, fake):
    version = batch.list_namespaced_job(NS).metadata.resource_version
    batch.create_namespaced_job(NS, job("brief", ttl_seconds_after_finished=0))
    stream = watch.Watch()
    for event in stream.stream(batch.list_namespaced_job, NS, resource_version=version, timeout_seconds=5):
        if event["type"] == "DELETED":
            stream.stop()
    assert conditions(event["object"])[-1] == ("Complete", "CompletionsReached")
    wait_until(lambda: not fake.pods(NS))
    assert fake.jobs(NS) == [] and fake.created_jobs(NS) == ["brief"]


def test_hold_job_runs_until_finished_from_python(batch, fake):
    batch.create_namespaced_job(NS, job("held", image="scenario/hold"))
    wait_until(lambda: fake.jobs(NS)[0]["status"].get("ready") == 1)
    time.sleep(0.1)
    assert not batch.read_namespaced_job("held", NS).status.conditions
    fake.finish(NS, "held")
    assert conditions(wait_for_job(batch, "held"))[-1] == ("Complete", "CompletionsReached")
    with pytest.raises(ValueError):
        fake.finish(NS, "held")
    with pytest.raises(LookupError):
        fake.finish(NS, "no-such-job")


def test_finish_right_after_create_can_fail_the_job_with_a_chosen_exit(batch, core, fake):
    batch.create_namespaced_job(NS, job("doomed", image="scenario/hold", backoff_limit=0))
    fake.finish(NS, "doomed", succeeded=False, exit_code=7, reason="Error")
    assert conditions(wait_for_job(batch, "doomed"))[-1] == ("Failed", "BackoffLimitExceeded")
    assert only_pod(core, "doomed").status.container_statuses[0].state.terminated.exit_code == 7


def test_deleting_a_running_pod_counts_a_failure_and_starts_a_new_one(batch, core, fake):
    batch.create_namespaced_job(NS, job("resilient", image="scenario/hold"))
    first = wait_until(lambda: fake.pods(NS))[0]["metadata"]["name"]
    core.delete_namespaced_pod(first, NS)
    replacement = wait_until(lambda: [p for p in fake.pods(NS) if p["metadata"]["name"] != first])
    assert replacement[0]["metadata"]["labels"]["job-name"] == "resilient"
    assert batch.read_namespaced_job("resilient", NS).status.failed == 1


# -- logs ----------------------------------------------------------------------------------------

def test_log_shows_bucket_urls_and_honours_tail_lines_and_limit_bytes(batch, core):
    batch.create_namespaced_job(NS, job("talker", env={"INPUT_BUCKET_URL": "s3://in/x",
                                                       "OUTPUT_BUCKET_URL": "s3://out/y"}))
    wait_for_job(batch, "talker")
    pod = only_pod(core, "talker").metadata.name
    assert core.read_namespaced_pod_log(pod, NS).splitlines() == [
        "starting mstc/python-test:latest", "INPUT_BUCKET_URL=s3://in/x", "OUTPUT_BUCKET_URL=s3://out/y", "done"]
    assert core.read_namespaced_pod_log(pod, NS, tail_lines=2) == "OUTPUT_BUCKET_URL=s3://out/y\ndone\n"
    assert core.read_namespaced_pod_log(pod, NS, container="main", limit_bytes=8) == "starting"
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_pod_log(pod, NS, container="sidecar")
    assert caught.value.status == 400


def test_failed_pod_log_ends_with_the_error(batch, core):
    batch.create_namespaced_job(NS, job("broken", image="scenario/fail:2", backoff_limit=0))
    wait_for_job(batch, "broken")
    log = core.read_namespaced_pod_log(only_pod(core, "broken").metadata.name, NS, tail_lines=1)
    assert log == "error: exiting with code 2\n"


# -- patch and delete --------------------------------------------------------------------------

def test_merge_patch_of_annotations_is_a_modified_event(batch):
    created = batch.create_namespaced_job(NS, job("annotated", image="scenario/hold"))
    patched = batch.patch_namespaced_job("annotated", NS, {"metadata": {"annotations": {"a": "1", "b": "2"}}})
    assert patched.metadata.annotations == {"a": "1", "b": "2"}
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)
    assert patched.metadata.generation == 1
    removed = batch.patch_namespaced_job("annotated", NS, {"metadata": {"annotations": {"a": None}}},
                                         _content_type="application/merge-patch+json")
    assert removed.metadata.annotations == {"b": "2"}


def test_json_patch_adds_replaces_and_removes(batch):
    batch.create_namespaced_job(NS, job("jp", image="scenario/hold", labels={"keep": "1", "drop": "1"}))
    patched = batch.patch_namespaced_job("jp", NS, [
        {"op": "add", "path": "/metadata/annotations", "value": {"x": "1"}},
        {"op": "replace", "path": "/metadata/labels/keep", "value": "2"},
        {"op": "remove", "path": "/metadata/labels/drop"},
    ])
    assert patched.metadata.annotations == {"x": "1"} and patched.metadata.labels == {"keep": "2"}
    with pytest.raises(ApiException) as caught:
        batch.patch_namespaced_job("jp", NS, [{"op": "remove", "path": "/metadata/nope"}])
    assert caught.value.status == 422


def test_delete_with_background_propagation_removes_the_job_then_the_garbage_collector_its_pods(batch, fake):
    batch.create_namespaced_job(NS, job("gone", image="scenario/hold"))
    wait_until(lambda: fake.pods(NS))
    status = batch.delete_namespaced_job("gone", NS, propagation_policy="Background")
    # kubernetes 37 types this response as a plain object: a dict
    assert status["status"] == "Success" and status["details"]["name"] == "gone"
    assert fake.jobs(NS) == []
    wait_until(lambda: fake.pods(NS) == [])


def test_delete_with_foreground_propagation_in_the_body_removes_the_pods_before_the_job(batch, fake):
    batch.create_namespaced_job(NS, job("fg", image="scenario/hold"))
    wait_until(lambda: fake.pods(NS))
    marked = batch.delete_namespaced_job("fg", NS, body=client.V1DeleteOptions(propagation_policy="Foreground"))
    assert marked["metadata"]["finalizers"] == ["foregroundDeletion"] and marked["metadata"]["deletionTimestamp"]
    assert fake.jobs(NS) and fake.jobs(NS)[0]["metadata"]["deletionGracePeriodSeconds"] == 0
    wait_until(lambda: fake.jobs(NS) == [] and fake.pods(NS) == [])


def test_delete_without_policy_orphans_pods_like_batch_v1(batch, fake):
    batch.create_namespaced_job(NS, job("orphaner", image="scenario/hold"))
    wait_until(lambda: fake.pods(NS))
    marked = batch.delete_namespaced_job("orphaner", NS)
    assert marked["metadata"]["finalizers"] == ["orphan"]
    wait_until(lambda: fake.jobs(NS) == [])
    pods = fake.pods(NS)
    assert len(pods) == 1 and "ownerReferences" not in pods[0]["metadata"]
    time.sleep(0.1)
    assert len(fake.pods(NS)) == 1 and "deletionTimestamp" not in fake.pods(NS)[0]["metadata"]


def test_deleting_a_missing_job_answers_404(batch):
    with pytest.raises(ApiException) as caught:
        batch.delete_namespaced_job("ghost", NS, propagation_policy="Background")
    assert caught.value.status == 404 and error_body(caught.value)["reason"] == "NotFound"


# -- faults ----------------------------------------------------------------------------------------

def test_error_rate_answers_500_internal_error_without_side_effects(batch, fake):
    fake.faults.error_rate = 1.0
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job(NS, job("unlucky"))
    assert caught.value.status == 500 and error_body(caught.value)["reason"] == "InternalError"
    assert fake.created_jobs(NS) == [] and fake.jobs(NS) == []
    fake.faults.error_rate = 0.0
    batch.create_namespaced_job(NS, job("unlucky"))


def test_error_rate_is_a_seeded_fraction(batch, fake):
    def outcomes() -> list[bool]:
        results = []
        for _ in range(40):
            try:
                batch.list_namespaced_job(NS)
                results.append(True)
            except ApiException:
                results.append(False)
        return results

    fake.faults.error_rate, fake.faults.seed = 0.5, 7
    first = outcomes()
    fake.faults.seed = 8
    fake.faults.seed = 7
    assert outcomes() == first and 5 < first.count(False) < 35


def test_throttle_rate_answers_429_with_retry_after(fake, tmp_path):
    fake.faults.throttle_rate = 1.0
    # urllib3 would otherwise honour Retry-After itself, three times, before giving up
    with connect(fake, tmp_path, retries=False) as api, pytest.raises(ApiException) as caught:
        client.BatchV1Api(api).list_namespaced_job(NS)
    assert caught.value.status == 429 and caught.value.headers["Retry-After"] == "1"
    assert error_body(caught.value)["reason"] == "TooManyRequests"


def test_latency_delays_every_request(batch, fake):
    fake.faults.latency = 0.3
    started = time.monotonic()
    batch.list_namespaced_job(NS)
    assert time.monotonic() - started >= 0.3


def test_cut_watch_after_drops_the_stream_abruptly(batch, fake):
    for index in range(3):
        batch.create_namespaced_job(NS, job(f"c{index}", image="scenario/hold"))
    fake.faults.cut_watch_after = 2
    received = []
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for event in watch.Watch().stream(batch.list_namespaced_job, NS, timeout_seconds=5):
            received.append(event)
    assert len(received) == 2


def test_gone_on_resume_answers_410_to_every_resumed_watch(batch, fake):
    batch.create_namespaced_job(NS, job("resumable", image="scenario/hold"))
    version = batch.list_namespaced_job(NS).metadata.resource_version
    fake.faults.gone_on_resume = True
    with pytest.raises(ApiException) as caught:
        list(watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=version, timeout_seconds=1))
    assert caught.value.status == 410
    fresh = watch.Watch().stream(batch.list_namespaced_job, NS, timeout_seconds=1)
    assert next(fresh)["type"] == "ADDED"
    fresh.close()


def test_faults_never_touch_watches_or_python_methods(batch, fake):
    fake.faults.error_rate = 1.0
    fake.faults.throttle_rate = 0.0
    events = list(watch.Watch().stream(batch.list_namespaced_job, NS, timeout_seconds=1))
    assert events == [] and fake.jobs(NS) == [] and fake.pods(NS) == []


# -- bookkeeping, discovery, standalone ----------------------------------------------------------

def test_request_counts_by_method_and_kind_with_watches_counted_once(batch, core, fake):
    batch.create_namespaced_job(NS, job("counted"))
    wait_for_job(batch, "counted")
    core.read_namespaced_pod_log(only_pod(core, "counted").metadata.name, NS)
    assert fake.request_count("POST", "jobs") == 1
    assert fake.request_count(kind="log") == 1
    assert fake.request_count("WATCH") == 1
    assert fake.request_count(kind="pods") == 1
    assert fake.request_count() == 4
    fake.reset_counts()
    assert fake.request_count() == 0


def test_version_discovery_and_health_endpoints_answer(api, fake):
    assert client.VersionApi(api).get_code().git_version == "v1.33.0"
    for path in ("/api", "/apis", "/apis/batch/v1", "/api/v1"):
        with urllib.request.urlopen(fake.url + path) as response:
            assert json.load(response)["kind"]
    with urllib.request.urlopen(fake.url + "/healthz") as response:
        assert response.read() == b"ok"


def test_unknown_paths_answer_a_404_status(fake):
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(fake.url + "/apis/apps/v1/deployments")
    with caught.value as response:
        assert json.load(response)["reason"] == "NotFound"


def test_module_serves_standalone_and_writes_a_kubeconfig(tmp_path):
    kubeconfig = tmp_path / "standalone.kubeconfig"
    command = [sys.executable, "-m", "tests.fakekube", "--port", "0", "--kubeconfig", str(kubeconfig),
               "--serve-seconds", "20"]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as process:
        try:
            url = process.stdout.readline().split()[-1]
            assert url.startswith("http://127.0.0.1:")
            assert process.stdout.readline().split()[-1] == str(kubeconfig)
            cfg = client.Configuration()
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
            with client.ApiClient(cfg) as api:
                assert client.BatchV1Api(api).list_namespaced_job(NS).items == []
        finally:
            process.terminate()
            process.wait(10)
    assert process.returncode == 0


# -- finalizers, deletionTimestamp, cascading deletion ------------------------------------------

HOLD = "example.com/hold"


def job_events(batch: client.BatchV1Api, version: str, until, timeout: int = 5) -> list[tuple[str, dict]]:
    """(type, raw Job) watch events from ``version`` up to the first for which ``until`` holds."""
    seen, stream = [], watch.Watch()
    for event in stream.stream(batch.list_namespaced_job, NS, resource_version=version, timeout_seconds=timeout):
        seen.append((event["type"], event["raw_object"]))
        if until(event["type"], event["raw_object"]):
            stream.stop()
            return seen
    raise AssertionError(f"watch ended without the awaited event: {[kind for kind, _ in seen]}")


def test_deleting_a_job_with_a_finalizer_marks_it_and_a_patch_emptying_the_finalizers_removes_it(batch, fake):
    batch.create_namespaced_job(NS, job("held", image="scenario/hold", finalizers=[HOLD]))
    wait_until(lambda: fake.pods(NS) and fake.pods(NS)[0]["status"].get("phase") == "Running")
    version = batch.list_namespaced_job(NS).metadata.resource_version
    marked = batch.delete_namespaced_job("held", NS, propagation_policy="Background")
    assert marked["kind"] == "Job" and marked["metadata"]["deletionTimestamp"]
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 0 and marked["metadata"]["finalizers"] == [HOLD]
    assert marked["metadata"]["generation"] == 2
    time.sleep(0.2)  # background: the pods wait until their owner is really gone
    assert [p["metadata"].get("deletionTimestamp") for p in fake.pods(NS)] == [None]
    assert batch.read_namespaced_job("held", NS).metadata.deletion_timestamp is not None
    batch.patch_namespaced_job("held", NS, {"metadata": {"finalizers": None}},
                               _content_type="application/merge-patch+json")
    seen = job_events(batch, version, lambda kind, _: kind == "DELETED")
    assert [kind for kind, _ in seen] == ["MODIFIED", "MODIFIED", "DELETED"]
    assert "finalizers" not in seen[1][1]["metadata"] and seen[2][1]["metadata"]["deletionTimestamp"]
    wait_until(lambda: fake.pods(NS) == [])


def test_a_json_patch_or_a_put_removing_the_last_finalizer_removes_the_object(batch, fake):
    for name in ("by-json-patch", "by-put"):
        batch.create_namespaced_job(NS, job(name, image="scenario/hold", finalizers=[HOLD, "example.com/two"]))
    wait_until(lambda: [j["status"].get("ready") for j in fake.jobs(NS)] == [1, 1])  # no more status writes
    for name in ("by-json-patch", "by-put"):
        batch.delete_namespaced_job(name, NS, propagation_policy="Background")
    batch.patch_namespaced_job("by-json-patch", NS, [{"op": "remove", "path": "/metadata/finalizers/0"}])
    assert batch.read_namespaced_job("by-json-patch", NS).metadata.finalizers == ["example.com/two"]
    batch.patch_namespaced_job("by-json-patch", NS, [{"op": "remove", "path": "/metadata/finalizers"}])
    current = batch.read_namespaced_job("by-put", NS)
    current.metadata.finalizers = []
    replaced = batch.replace_namespaced_job("by-put", NS, current)
    assert replaced.metadata.deletion_timestamp is not None
    assert [j["metadata"]["name"] for j in fake.jobs(NS)] == []


def test_a_put_with_a_stale_resource_version_is_a_conflict(batch):
    created = batch.create_namespaced_job(NS, job("stale", image="scenario/hold"))
    batch.patch_namespaced_job("stale", NS, {"metadata": {"labels": {"a": "b"}}})
    with pytest.raises(ApiException) as caught:
        batch.replace_namespaced_job("stale", NS, created)
    assert caught.value.status == 409 and error_body(caught.value)["reason"] == "Conflict"


def test_adding_a_finalizer_to_an_object_being_deleted_is_refused_with_422(batch):
    batch.create_namespaced_job(NS, job("closing", image="scenario/hold", finalizers=[HOLD]))
    batch.delete_namespaced_job("closing", NS, propagation_policy="Background")
    with pytest.raises(ApiException) as caught:
        batch.patch_namespaced_job("closing", NS, {"metadata": {"finalizers": [HOLD, "example.com/late"]}},
                                   _content_type="application/merge-patch+json")
    body = error_body(caught.value)
    assert caught.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"] == ('Job.batch "closing" is invalid: metadata.finalizers: Forbidden: no new finalizers '
                               'can be added if the object is being deleted, found new finalizers '
                               '[]string{"example.com/late"}')
    assert body["details"]["causes"][0]["field"] == "metadata.finalizers"


def test_a_patch_cannot_change_a_jobs_template(batch):
    batch.create_namespaced_job(NS, job("fixed", image="scenario/hold"))
    with pytest.raises(ApiException) as caught:
        batch.patch_namespaced_job("fixed", NS, {"spec": {"template": {"spec": {"restartPolicy": "OnFailure"}}}},
                                   _content_type="application/merge-patch+json")
    assert caught.value.status == 422 and "spec.template" in error_body(caught.value)["message"]


def test_a_deleted_running_pod_gets_sigterm_after_its_grace_period_then_goes(make_fake, tmp_path):
    fake = make_fake(timings=Timings(pod_termination_grace=0.3))
    with connect(fake, tmp_path) as api:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        batch.create_namespaced_job(NS, job("graceful", image="scenario/hold"))
        pod = wait_until(lambda: [p for p in fake.pods(NS) if p["status"].get("phase") == "Running"])[0]
        name = pod["metadata"]["name"]
        marked = core.delete_namespaced_pod(name, NS)
        assert marked.metadata.deletion_grace_period_seconds == 30 and marked.metadata.deletion_timestamp
        assert marked.status.phase == "Running"
        assert batch.read_namespaced_job("graceful", NS).status.terminating == 1
        version = marked.metadata.resource_version
        seen = [(e["type"], e["raw_object"]) for e in watch.Watch().stream(
            core.list_namespaced_pod, NS, resource_version=version, field_selector=f"metadata.name={name}",
            timeout_seconds=2)]
        assert [kind for kind, _ in seen][-2:] == ["MODIFIED", "DELETED"]
        stopped = seen[-2][1]["status"]
        assert stopped["phase"] == "Failed"
        assert stopped["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143


def test_a_pod_deleted_with_grace_period_zero_goes_at_once(core, batch, fake):
    batch.create_namespaced_job(NS, job("forced", image="scenario/hold"))
    name = wait_until(lambda: fake.pods(NS))[0]["metadata"]["name"]
    core.delete_namespaced_pod(name, NS, grace_period_seconds=0)
    assert name not in [p["metadata"]["name"] for p in fake.pods(NS)]


def test_a_pod_with_a_finalizer_is_stopped_but_kept_until_its_finalizer_is_removed(batch, core, fake):
    batch.create_namespaced_job(NS, job("kept", image="scenario/hold"))
    name = wait_until(lambda: fake.pods(NS))[0]["metadata"]["name"]
    core.patch_namespaced_pod(name, NS, {"metadata": {"finalizers": [HOLD]}})
    core.delete_namespaced_pod(name, NS)
    stopped = wait_until(lambda: [p for p in fake.pods(NS) if p["metadata"]["name"] == name
                                  and p["metadata"].get("deletionGracePeriodSeconds") == 0])[0]
    assert stopped["status"]["phase"] == "Failed" and stopped["metadata"]["finalizers"] == [HOLD]
    core.patch_namespaced_pod(name, NS, [{"op": "remove", "path": "/metadata/finalizers"}])
    assert name not in [p["metadata"]["name"] for p in fake.pods(NS)]


def test_foreground_deletion_removes_the_pods_first_and_then_waits_for_the_jobs_other_finalizers(batch, fake):
    batch.create_namespaced_job(NS, job("fore", image="scenario/hold", finalizers=[HOLD]))
    wait_until(lambda: fake.pods(NS))
    marked = batch.delete_namespaced_job("fore", NS, propagation_policy="Foreground")
    assert marked["metadata"]["finalizers"] == [HOLD, "foregroundDeletion"]
    wait_until(lambda: fake.pods(NS) == [])
    wait_until(lambda: fake.jobs(NS)[0]["metadata"].get("finalizers") == [HOLD])
    time.sleep(0.1)
    assert len(fake.jobs(NS)) == 1
    batch.patch_namespaced_job("fore", NS, {"metadata": {"finalizers": []}},
                               _content_type="application/merge-patch+json")
    assert fake.jobs(NS) == []


def test_the_garbage_collector_deletes_a_pod_whose_owner_is_gone(batch, core, fake):
    batch.create_namespaced_job(NS, job("parent", image="scenario/hold"))
    wait_until(lambda: fake.pods(NS))
    batch.delete_namespaced_job("parent", NS, propagation_policy="Background")
    deleting = wait_until(lambda: [p for p in fake.pods(NS) if p["metadata"].get("deletionTimestamp")]
                          or fake.pods(NS) == [])
    assert deleting  # marked for deletion by the collector (or already gone)
    wait_until(lambda: fake.pods(NS) == [])
    assert fake.created_jobs(NS) == ["parent"]


# -- the TTL-after-finished controller ------------------------------------------------------------

def test_ttl_controller_deletes_in_the_foreground_and_waits_for_finalizers(batch, fake):
    version = batch.list_namespaced_job(NS).metadata.resource_version
    batch.create_namespaced_job(NS, job("tidy", finalizers=[HOLD], ttl_seconds_after_finished=0))
    seen = job_events(batch, version, lambda kind, obj: obj["metadata"].get("deletionTimestamp") is not None)
    marked = seen[-1][1]
    assert marked["metadata"]["finalizers"] == [HOLD, "foregroundDeletion"]
    assert [c["type"] for c in marked["status"]["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    wait_until(lambda: fake.pods(NS) == [])
    wait_until(lambda: fake.jobs(NS)[0]["metadata"].get("finalizers") == [HOLD])
    batch.patch_namespaced_job("tidy", NS, [{"op": "remove", "path": "/metadata/finalizers"}])
    assert fake.jobs(NS) == []


def test_ttl_is_counted_from_the_finish_on_a_scalable_clock(make_fake, tmp_path):
    fake = make_fake(timings=Timings(ttl_scale=0.1))
    with connect(fake, tmp_path) as api:
        batch = client.BatchV1Api(api)
        batch.create_namespaced_job(NS, job("scaled", ttl_seconds_after_finished=5))
        wait_for_job(batch, "scaled")
        finished = time.monotonic()
        wait_until(lambda: fake.jobs(NS) == [], timeout=5)
        assert 0.3 <= time.monotonic() - finished < 3  # 5 TTL seconds of 0.1 s each


def test_removing_the_ttl_before_it_expires_keeps_the_finished_job(make_fake, tmp_path):
    fake = make_fake(timings=Timings(ttl_scale=0.1))
    with connect(fake, tmp_path) as api:
        batch = client.BatchV1Api(api)
        batch.create_namespaced_job(NS, job("keeper", ttl_seconds_after_finished=10))
        wait_for_job(batch, "keeper")
        batch.patch_namespaced_job("keeper", NS, {"spec": {"ttlSecondsAfterFinished": None}},
                                   _content_type="application/merge-patch+json")
        time.sleep(1.3)
        assert [j["metadata"]["name"] for j in fake.jobs(NS)] == ["keeper"]


# -- Job conditions as Kubernetes 1.31+ writes them ------------------------------------------------

def test_deadline_adds_failure_target_at_once_and_failed_only_after_the_pod_has_terminated(make_fake, tmp_path):
    fake = make_fake(timings=Timings(pod_termination_grace=0.4, deadline_grace=0.2))
    with connect(fake, tmp_path) as api:
        batch = client.BatchV1Api(api)
        version = batch.list_namespaced_job(NS).metadata.resource_version
        batch.create_namespaced_job(NS, job("late", image="scenario/sleep:30", active_deadline_seconds=1))
        seen = job_events(batch, version, lambda _, obj: any(
            c["type"] == "FailureTarget" for c in obj["status"].get("conditions") or []))
        target_at = time.monotonic()
        status = seen[-1][1]["status"]
        assert [(c["type"], c["reason"]) for c in status["conditions"]] == [("FailureTarget", "DeadlineExceeded")]
        assert status["startTime"] and "completionTime" not in status
        pod = fake.pods(NS)[0]
        assert pod["status"]["phase"] == "Running" and pod["metadata"]["deletionTimestamp"]
        later = job_events(batch, seen[-1][1]["metadata"]["resourceVersion"], lambda _, obj: any(
            c["type"] == "Failed" for c in obj["status"].get("conditions") or []))
        assert time.monotonic() - target_at >= 0.3
        assert status["terminating"] == 1 and "active" not in status  # while the pod is being stopped
        assert later[-1][1]["status"]["terminating"] == 0
        done = wait_for_job(batch, "late")
        assert conditions(done) == [("FailureTarget", "DeadlineExceeded"), ("Failed", "DeadlineExceeded")]
        assert done.status.terminating == 0 and not done.status.active and done.status.failed == 1
        assert done.status.completion_time is None and done.status.start_time is not None
        killed = fake.pods(NS)[0]["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (killed["exitCode"], killed["reason"]) == (143, "Error")


def test_completion_time_is_set_with_complete_and_only_then(batch):
    batch.create_namespaced_job(NS, job("fine"))
    batch.create_namespaced_job(NS, job("broke", image="scenario/fail", backoff_limit=0))
    fine, broke = wait_for_job(batch, "fine"), wait_for_job(batch, "broke")
    assert fine.status.completion_time is not None and fine.status.completion_time >= fine.status.start_time
    assert broke.status.completion_time is None and broke.status.start_time is not None
    assert fine.status.terminating == 0 and fine.status.ready == 0


# -- containers: sidecars, native sidecars, logs ------------------------------------------------------

def test_an_injected_sidecar_that_runs_forever_keeps_the_pod_running_and_the_job_unfinished(make_fake, tmp_path):
    fake = make_fake(sidecar=Sidecar())
    with connect(fake, tmp_path) as api:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        batch.create_namespaced_job(NS, job("trapped"))
        pod = wait_until(lambda: (p := running_pod(core, "trapped")) and p.status.container_statuses[1].state.terminated
                         and p)
        assert [c.name for c in pod.spec.containers] == ["main", "istio-proxy"]
        sidecar, main = pod.status.container_statuses
        assert (sidecar.name, main.name) == ("istio-proxy", "main")  # sorted by name, as the kubelet does
        assert sidecar.state.running is not None and main.state.terminated.exit_code == 0
        assert pod.status.phase == "Running"
        ready = next(c for c in pod.status.conditions if c.type == "Ready")
        assert (ready.status, ready.reason, ready.message) == ("False", "ContainersNotReady",
                                                               "containers with unready status: [main]")
        time.sleep(0.2)
        status = batch.read_namespaced_job("trapped", NS).status
        assert status.active == 1 and status.ready == 0 and not status.conditions


def test_an_injected_sidecar_that_exits_with_the_others_lets_the_job_complete(fake, batch, core):
    fake.inject_sidecar(Sidecar(image="scenario/sidecar:exits"), namespace=NS)
    batch.create_namespaced_job(NS, job("released"))
    assert conditions(wait_for_job(batch, "released"))[-1] == ("Complete", "CompletionsReached")
    pod = only_pod(core, "released")
    assert pod.status.phase == "Succeeded"
    assert [(s.name, s.state.terminated.exit_code) for s in pod.status.container_statuses] == [
        ("istio-proxy", 0), ("main", 0)]
    fake.inject_sidecar(None, namespace=NS)
    batch.create_namespaced_job(NS, job("plain-again"))
    wait_for_job(batch, "plain-again")
    assert [c.name for c in only_pod(core, "plain-again").spec.containers] == ["main"]


def test_native_sidecars_report_init_container_statuses_and_stop_after_the_main_container(batch, core):
    proxy = client.V1Container(name="proxy", image="scenario/sidecar", restart_policy="Always")
    setup = client.V1Container(name="setup", image="busybox")
    batch.create_namespaced_job(NS, job("native", image="scenario/succeed:0.3", init_containers=[setup, proxy]))
    running = wait_until(lambda: running_pod(core, "native"))
    setup_status, proxy_status = running.status.init_container_statuses
    assert (setup_status.name, setup_status.state.terminated.reason) == ("setup", "Completed")
    assert proxy_status.name == "proxy" and proxy_status.state.running and proxy_status.ready
    assert [c.name for c in running.status.container_statuses] == ["main"]
    assert conditions(wait_for_job(batch, "native"))[-1] == ("Complete", "CompletionsReached")
    done = only_pod(core, "native")
    assert done.status.phase == "Succeeded"
    assert done.status.init_container_statuses[1].state.terminated.exit_code == 0


def test_the_pod_log_needs_a_container_name_when_the_pod_has_several(make_fake, tmp_path):
    fake = make_fake(sidecar=Sidecar())
    with connect(fake, tmp_path) as api:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        proxy = client.V1Container(name="proxy", image="scenario/sidecar", restart_policy="Always")
        batch.create_namespaced_job(NS, job("chatty", image="scenario/hold", init_containers=[proxy]))
        pod = wait_until(lambda: [p for p in fake.pods(NS) if p["status"].get("phase") == "Running"])[0]
        name = pod["metadata"]["name"]
        with pytest.raises(ApiException) as caught:
            core.read_namespaced_pod_log(name, NS)
        assert caught.value.status == 400
        assert error_body(caught.value)["message"] == (
            f"a container name must be specified for pod {name}, choose one of: [main istio-proxy] "
            "or one of the init containers: [proxy]")
        with pytest.raises(ApiException) as caught:
            core.read_namespaced_pod_log(name, NS, container="nope")
        assert error_body(caught.value)["message"] == f"container nope is not valid for pod {name}"
        assert core.read_namespaced_pod_log(name, NS, container="main").startswith("starting scenario/hold\n")
        assert "istio-proxy: proxy ready" in core.read_namespaced_pod_log(name, NS, container="istio-proxy")
        assert "proxy: proxy ready" in core.read_namespaced_pod_log(name, NS, container="proxy")


# -- disruptions and the pod failure policy -------------------------------------------------------------

def policy(*rules: client.V1PodFailurePolicyRule) -> client.V1PodFailurePolicy:
    return client.V1PodFailurePolicy(rules=list(rules))


def on_exit(action: str, operator: str, *values: int) -> client.V1PodFailurePolicyRule:
    return client.V1PodFailurePolicyRule(action=action, on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
        container_name="main", operator=operator, values=list(values)))


def on_disruption(action: str) -> client.V1PodFailurePolicyRule:
    return client.V1PodFailurePolicyRule(action=action, on_pod_conditions=[
        client.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget")])


def pod_states(core: client.CoreV1Api, version: str, name: str, until, timeout: int = 5) -> list[tuple[str, dict]]:
    """(type, raw pod) watch events for pod ``name`` from ``version`` up to the first for which ``until`` holds."""
    seen, stream = [], watch.Watch()
    for event in stream.stream(core.list_namespaced_pod, NS, resource_version=version,
                               field_selector=f"metadata.name={name}", timeout_seconds=timeout):
        seen.append((event["type"], event["raw_object"]))
        if until(event["type"], event["raw_object"]):
            stream.stop()
            return seen
    raise AssertionError(f"watch ended without the awaited event: {[kind for kind, _ in seen]}")


def pod_condition(pod: dict, kind: str) -> dict | None:
    return next((c for c in pod["status"].get("conditions") or [] if c["type"] == kind), None)


@pytest.mark.parametrize(("reason", "message"), [
    ("EvictionByEvictionAPI", "Eviction API: evicting"),
    ("PreemptionByScheduler", "default-scheduler: preempting to accommodate a higher priority pod"),
    ("DeletionByTaintManager", "Taint manager: deleting due to NoExecute taint"),
])
def test_disrupting_a_pod_adds_disruption_target_then_terminates_it_with_143(batch, core, fake, reason, message):
    batch.create_namespaced_job(NS, job("victim", image="scenario/hold"))
    pod = wait_until(lambda: running_pod(core, "victim"))
    fake.disrupt_pod(NS, pod.metadata.name, reason=reason)
    seen = pod_states(core, pod.metadata.resource_version, pod.metadata.name, lambda kind, _: kind == "DELETED")
    stopped = next(obj for _, obj in seen if obj["status"]["phase"] == "Failed")
    target = pod_condition(stopped, "DisruptionTarget")
    assert (target["status"], target["reason"], target["message"]) == ("True", reason, message)
    assert stopped["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143
    assert stopped["metadata"]["deletionTimestamp"]
    # without a pod failure policy it is an ordinary failure: counted, and the pod replaced
    wait_until(lambda: [p for p in fake.pods(NS) if p["metadata"]["name"] != pod.metadata.name])
    assert batch.read_namespaced_job("victim", NS).status.failed == 1


def test_node_pressure_eviction_leaves_a_failed_pod_with_reason_evicted(batch, core, fake):
    batch.create_namespaced_job(NS, job("pressed", image="scenario/hold", backoff_limit=0))
    pod = wait_until(lambda: running_pod(core, "pressed"))
    fake.disrupt_pod(NS, pod.metadata.name, reason="TerminationByKubelet")
    assert conditions(wait_for_job(batch, "pressed"))[-1] == ("Failed", "BackoffLimitExceeded")
    evicted = core.read_namespaced_pod(pod.metadata.name, NS)
    assert (evicted.status.phase, evicted.status.reason) == ("Failed", "Evicted")
    assert evicted.status.message.startswith("The node was low on resource: memory.")
    assert evicted.metadata.deletion_timestamp is None  # the kubelet's eviction keeps the pod object
    target = next(c for c in evicted.status.conditions if c.type == "DisruptionTarget")
    assert (target.reason, target.message) == ("TerminationByKubelet", evicted.status.message)
    assert evicted.status.container_statuses[0].state.terminated.exit_code == 143
    with pytest.raises(ValueError):
        fake.disrupt_pod(NS, pod.metadata.name)
    with pytest.raises(LookupError):
        fake.disrupt_pod(NS, "no-such-pod")


def test_the_eviction_api_evicts_a_pod_as_kubectl_drain_does(batch, core, fake):
    batch.create_namespaced_job(NS, job("drained", image="scenario/hold"))
    pod = wait_until(lambda: running_pod(core, "drained"))
    core.create_namespaced_pod_eviction(pod.metadata.name, NS, client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod.metadata.name, namespace=NS)))
    marked = core.read_namespaced_pod(pod.metadata.name, NS)
    assert marked.metadata.deletion_timestamp is not None
    assert [(c.reason, c.message) for c in marked.status.conditions if c.type == "DisruptionTarget"] == [
        ("EvictionByEvictionAPI", "Eviction API: evicting")]
    assert fake.request_count("POST", "eviction") == 1


def test_a_pod_failure_policy_can_ignore_disruptions_and_replace_the_pod(batch, core, fake):
    batch.create_namespaced_job(NS, job("tolerant", image="scenario/hold", backoff_limit=0,
                                        pod_failure_policy=policy(on_disruption("Ignore"))))
    assert batch.read_namespaced_job("tolerant", NS).spec.pod_replacement_policy == "Failed"
    first = wait_until(lambda: running_pod(core, "tolerant"))
    version = first.metadata.resource_version
    fake.disrupt_pod(NS, first.metadata.name)
    ended = pod_states(core, version, first.metadata.name, lambda _, obj: obj["status"]["phase"] == "Failed")[-1][1]
    assert pod_condition(ended, "DisruptionTarget")["reason"] == "EvictionByEvictionAPI"
    # podReplacementPolicy Failed: the replacement comes only once the first pod has ended
    replacements = [e["raw_object"] for e in watch.Watch().stream(
        core.list_namespaced_pod, NS, resource_version=version, timeout_seconds=1)
        if e["type"] == "ADDED"]
    assert int(replacements[0]["metadata"]["resourceVersion"]) > int(ended["metadata"]["resourceVersion"])
    wait_until(lambda: fake.jobs(NS)[0]["status"].get("ready") == 1)
    assert not fake.jobs(NS)[0]["status"].get("failed")  # ignored: not counted at all
    fake.finish(NS, "tolerant")
    assert conditions(wait_for_job(batch, "tolerant"))[-1] == ("Complete", "CompletionsReached")


def test_a_pod_failure_policy_fail_job_rule_fails_the_job_at_once_naming_the_rule(batch, core):
    batch.create_namespaced_job(NS, job("fatal", image="scenario/fail:42", pod_failure_policy=policy(
        on_disruption("Ignore"), on_exit("FailJob", "In", 42))))
    done = wait_for_job(batch, "fatal")
    pod = only_pod(core, "fatal").metadata.name
    message = f"Container main for pod {NS}/{pod} failed with exit code 42 matching FailJob rule at index 1"
    assert [(c.type, c.reason, c.message) for c in done.status.conditions] == [
        ("FailureTarget", "PodFailurePolicy", message), ("Failed", "PodFailurePolicy", message)]
    assert done.status.failed == 1  # backoffLimit 6 was not waited for


def test_a_pod_failure_policy_that_matches_nothing_or_counts_leaves_it_to_the_backoff_limit(batch):
    batch.create_namespaced_job(NS, job("counted", image="scenario/fail:3", backoff_limit=1, pod_failure_policy=policy(
        on_exit("FailJob", "In", 42), on_exit("Count", "NotIn", 1, 2))))
    batch.create_namespaced_job(NS, job("unmatched", image="scenario/fail:3", backoff_limit=1,
                                        pod_failure_policy=policy(on_exit("Ignore", "In", 5))))
    for name in ("counted", "unmatched"):
        done = wait_for_job(batch, name)
        assert conditions(done)[-1] == ("Failed", "BackoffLimitExceeded") and done.status.failed == 2


def test_a_pod_failure_policy_needs_restart_policy_never_like_the_api_server_says(batch):
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job(NS, job("restarting", restart_policy="OnFailure",
                                            pod_failure_policy=policy(on_disruption("Ignore"))))
    body = error_body(caught.value)
    assert caught.value.status == 422 and body["reason"] == "Invalid"
    assert body["message"] == ('Job.batch "restarting" is invalid: spec.template.spec.restartPolicy: Invalid value: '
                               '"OnFailure": only "Never" is supported when podFailurePolicy is specified')


@pytest.mark.parametrize(("rule", "field"), [
    (client.V1PodFailurePolicyRule(action="FailJob", on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
        operator="In", values=[0])), "spec.podFailurePolicy.rules[0].onExitCodes.values[0]"),
    (client.V1PodFailurePolicyRule(action="Explode", on_pod_conditions=[
        client.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget")]),
     "spec.podFailurePolicy.rules[0].action"),
    (client.V1PodFailurePolicyRule(action="FailIndex", on_pod_conditions=[
        client.V1PodFailurePolicyOnPodConditionsPattern(type="DisruptionTarget")]),
     "spec.podFailurePolicy.rules[0].action"),
    (client.V1PodFailurePolicyRule(action="Ignore"), "spec.podFailurePolicy.rules[0]"),
    (on_exit("Count", "In", 3, 1), "spec.podFailurePolicy.rules[0].onExitCodes.values"),
])
def test_a_pod_failure_policy_the_api_server_would_refuse_is_422(batch, rule, field):
    with pytest.raises(ApiException) as caught:
        batch.create_namespaced_job(NS, job("refused", pod_failure_policy=policy(rule)))
    assert caught.value.status == 422
    assert field in [cause["field"] for cause in error_body(caught.value)["details"]["causes"]]


def test_a_fail_index_rule_fails_the_indexed_job_with_failed_indexes(batch, core):
    batch.create_namespaced_job(NS, job("indexed", image="scenario/fail:7", completion_mode="Indexed",
                                        backoff_limit_per_index=3, pod_failure_policy=policy(
                                            on_exit("FailIndex", "In", 7))))
    done = wait_for_job(batch, "indexed")
    assert conditions(done) == [("FailureTarget", "FailedIndexes"), ("Failed", "FailedIndexes")]
    assert done.status.failed_indexes == "0" and done.status.failed == 1
    pod = only_pod(core, "indexed")
    assert pod.metadata.annotations["batch.kubernetes.io/job-completion-index"] == "0"


# -- suspend --------------------------------------------------------------------------------------------------

def test_a_suspended_job_gets_a_suspended_condition_and_no_pods_until_it_is_resumed(batch, fake):
    batch.create_namespaced_job(NS, job("paused", suspend=True))
    wait_until(lambda: fake.jobs(NS)[0]["status"].get("conditions"))
    time.sleep(0.2)
    suspended = batch.read_namespaced_job("paused", NS)
    assert [(c.type, c.status, c.reason, c.message) for c in suspended.status.conditions] == [
        ("Suspended", "True", "JobSuspended", "Job suspended")]
    assert suspended.status.start_time is None and fake.pods(NS) == []
    batch.patch_namespaced_job("paused", NS, {"spec": {"suspend": False}})
    done = wait_for_job(batch, "paused")
    assert [(c.type, c.status, c.reason) for c in done.status.conditions] == [
        ("Suspended", "False", "JobResumed"), ("SuccessCriteriaMet", "True", "CompletionsReached"),
        ("Complete", "True", "CompletionsReached")]
    assert done.status.start_time is not None
    assert [e["reason"] for e in fake.events(NS)][:2] == ["Suspended", "Resumed"]


def test_suspending_a_running_job_deletes_its_pod_and_resuming_starts_a_new_one(make_fake, tmp_path):
    fake = make_fake(timings=Timings(deadline_grace=0.05))
    with connect(fake, tmp_path) as api:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        batch.create_namespaced_job(NS, job("interrupted", image="scenario/hold"))
        first = wait_until(lambda: running_pod(core, "interrupted")).metadata.name
        batch.patch_namespaced_job("interrupted", NS, {"spec": {"suspend": True}})
        wait_until(lambda: fake.pods(NS) == [])
        status = batch.read_namespaced_job("interrupted", NS).status
        assert ("Suspended", "JobSuspended") in conditions(batch.read_namespaced_job("interrupted", NS))
        assert status.start_time is None and not status.active
        batch.patch_namespaced_job("interrupted", NS, {"spec": {"suspend": False}})
        second = wait_until(lambda: running_pod(core, "interrupted")).metadata.name
        assert second != first


# -- FailedCreate and core/v1 Events ------------------------------------------------------------------------

def job_events_of(core: client.CoreV1Api, name: str, reason: str | None = None) -> list[client.CoreV1Event]:
    found = core.list_namespaced_event(NS, field_selector=f"involvedObject.name={name},involvedObject.kind=Job")
    return [e for e in found.items if reason in (None, e.reason)]


def test_a_pod_quota_makes_the_controller_record_failed_create_events_and_keep_retrying(batch, core, fake):
    fake.set_pod_quota(NS, 0, name="compute-resources")
    created = batch.create_namespaced_job(NS, job("starved"))
    failures = wait_until(lambda: job_events_of(core, "starved", "FailedCreate"))
    event = failures[0]
    assert event.type == "Warning" and event.count >= 1 and event.source.component == "job-controller"
    assert (event.involved_object.kind, event.involved_object.name, event.involved_object.uid) == (
        "Job", "starved", created.metadata.uid)
    assert re.fullmatch(r'Error creating: pods "starved-[a-z0-9]{5}" is forbidden: exceeded quota: compute-resources, '
                        r'requested: pods=1, used: pods=0, limited: pods=0', event.message)
    wait_until(lambda: sum(e.count for e in job_events_of(core, "starved", "FailedCreate")) >= 3)
    assert fake.pods(NS) == [] and not batch.read_namespaced_job("starved", NS).status.active
    fake.set_pod_quota(NS, None)
    assert conditions(wait_for_job(batch, "starved"))[-1] == ("Complete", "CompletionsReached")
    reasons = [e.reason for e in job_events_of(core, "starved")]
    assert "SuccessfulCreate" in reasons and reasons[-1] == "Completed"


def test_a_quota_counts_only_pods_that_have_not_ended(batch, core, fake):
    fake.set_pod_quota(NS, 1)
    batch.create_namespaced_job(NS, job("first", image="scenario/hold"))
    wait_until(lambda: running_pod(core, "first"))
    batch.create_namespaced_job(NS, job("second"))
    refused = wait_until(lambda: job_events_of(core, "second", "FailedCreate"))[0]
    assert "used: pods=1, limited: pods=1" in refused.message
    fake.finish(NS, "first")
    assert conditions(wait_for_job(batch, "second"))[-1] == ("Complete", "CompletionsReached")


def test_pod_security_admission_refusing_the_pod_is_a_failed_create_event(batch, core, fake):
    fake.enforce_pod_security("restricted", NS)
    batch.create_namespaced_job(NS, job("unsafe", active_deadline_seconds=1))
    event = wait_until(lambda: job_events_of(core, "unsafe", "FailedCreate"))[0]
    assert re.fullmatch(r'Error creating: pods "unsafe-[a-z0-9]{5}" is forbidden: violates PodSecurity '
                        r'"restricted:latest": allowPrivilegeEscalation != false \(container "main" must set '
                        r'securityContext.allowPrivilegeEscalation=false\), .*', event.message)
    done = wait_for_job(batch, "unsafe")
    assert conditions(done) == [("FailureTarget", "DeadlineExceeded"), ("Failed", "DeadlineExceeded")]
    assert not done.status.failed
    assert job_events_of(core, "unsafe", "DeadlineExceeded")[0].type == "Warning"


def _handler_pod_spec() -> dict:
    from handler.core.config import Settings
    from handler.core.manifest import build_job
    from handler.core.messages import Message
    from handler.core.request import parse_request

    settings = Settings.from_env({"CLOUD_WORKER_NAMESPACE": NS})
    body = b'{"image": "mstc/python-test", "jobName": "psa", "inputBucketUrl": "http://minio:9000/inputs"}'
    request = parse_request(Message(body, "application/json", correlation_id="c", reply_to="r"), settings)
    return build_job(request, settings)["spec"]["template"]["spec"]


@pytest.mark.parametrize(("loosen", "reason"), [
    pytest.param(lambda c, p: None, None, id="as-built"),
    (lambda c, p: c.update(runAsUser=0), 'runAsUser=0 (container "job" must not set runAsUser=0)'),
    (lambda c, p: c.update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation != false"),
    (lambda c, p: c.pop("capabilities"), 'unrestricted capabilities (container "job" must set'),
    (lambda c, p: c.update(runAsNonRoot=False), "runAsNonRoot != true"),
    (lambda c, p: (c.pop("seccompProfile", None), p.pop("seccompProfile", None)), "seccompProfile (pod or"),
    (lambda c, p: c.update(privileged=True), 'privileged (container "job" must not set'),
])
def test_pod_security_judges_the_security_context_so_a_loosened_handler_job_is_refused(loosen, reason):
    from tests.fakekube.podsecurity import restricted_violations

    spec = _handler_pod_spec()
    loosen(spec["containers"][0]["securityContext"], spec.setdefault("securityContext", {}))
    violations = restricted_violations(spec)
    if reason is None:
        assert violations == []
    else:
        assert len(violations) == 1 and violations[0].startswith(reason), violations


def test_similar_events_are_combined_after_nine_distinct_messages(make_fake, tmp_path):
    fake = make_fake(timings=Timings(backoff_base=0.001, backoff_cap=0.005))
    with connect(fake, tmp_path) as api:
        batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
        fake.set_pod_quota(NS, 0)
        batch.create_namespaced_job(NS, job("noisy"))
        wait_until(lambda: len(job_events_of(core, "noisy", "FailedCreate")) >= 10
                   and job_events_of(core, "noisy", "FailedCreate")[-1].count >= 3)
        events = job_events_of(core, "noisy", "FailedCreate")
        assert len(events) == 10 and all(e.count == 1 for e in events[:9])
        assert events[-1].message.startswith("(combined from similar events): Error creating: pods \"noisy-")


def test_events_can_be_watched_with_a_field_selector(batch, core):
    version = core.list_namespaced_event(NS).metadata.resource_version
    batch.create_namespaced_job(NS, job("watched"))
    batch.create_namespaced_job(NS, job("ignored"))
    reasons, stream = [], watch.Watch()
    for event in stream.stream(core.list_namespaced_event, NS, resource_version=version, timeout_seconds=5,
                               field_selector="involvedObject.name=watched,type=Normal"):
        reasons.append(event["object"].reason)
        if reasons[-1] == "Completed":
            stream.stop()
    assert reasons == ["SuccessfulCreate", "Completed"]
    assert core.list_event_for_all_namespaces(label_selector="nothing=here").items == []


# -- watches that go quiet ---------------------------------------------------------------------------------

def test_bookmarks_come_periodically_while_jobs_elsewhere_change_and_never_on_a_resource_nobody_touches(
        make_fake, tmp_path):
    fake = make_fake(bookmark_interval=0.2)
    with connect(fake, tmp_path) as api:
        batch = client.BatchV1Api(api)
        version = batch.list_namespaced_job(NS).metadata.resource_version
        quiet = [e["type"] for e in watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=version,
                                                         timeout_seconds=1, allow_watch_bookmarks=True)]
        assert quiet == []
        stop = threading.Event()

        def churn() -> None:  # Jobs of another namespace: not in the watch, but the version moves
            for i in range(50):
                if stop.wait(0.05):
                    return
                batch.create_namespaced_job("elsewhere", job(f"other-{i}", image="scenario/hold", suspend=True))

        thread = threading.Thread(target=churn)
        thread.start()
        try:
            kinds = [e["type"] for e in watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=version,
                                                             timeout_seconds=3, allow_watch_bookmarks=True)]
        finally:
            stop.set()
            thread.join()
        assert kinds.count("BOOKMARK") >= 3 and set(kinds) == {"BOOKMARK"}
        assert list(watch.Watch().stream(batch.list_namespaced_job, NS, resource_version=version,
                                         timeout_seconds=1)) == []


def test_a_silent_watch_sends_nothing_at_all_until_the_client_gives_up(make_fake, tmp_path):
    fake = make_fake(bookmark_interval=0.1)
    with connect(fake, tmp_path) as api:
        batch = client.BatchV1Api(api)
        batch.create_namespaced_job(NS, job("one", image="scenario/hold"))
        batch.create_namespaced_job(NS, job("two", image="scenario/hold"))
        fake.faults.silent_watch_after = 1
        received, started = [], time.monotonic()
        with pytest.raises((urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError)):
            for event in watch.Watch().stream(batch.list_namespaced_job, NS, timeout_seconds=1,
                                              allow_watch_bookmarks=True, _request_timeout=(1, 1.5)):
                received.append(event["type"])
        assert received == ["ADDED"]  # then nothing: no second ADDED, no bookmark, no end at timeoutSeconds
        assert time.monotonic() - started >= 1.4
        fake.faults.clear()
        assert len(list(watch.Watch().stream(batch.list_namespaced_job, NS, timeout_seconds=1))) >= 2


# -- LIST in chunks --------------------------------------------------------------------------------------------

def test_list_with_limit_pages_through_one_consistent_snapshot(batch, fake):
    for index in range(5):
        batch.create_namespaced_job(NS, job(f"p{index}", image="scenario/hold"))
    first = batch.list_namespaced_job(NS, limit=2)
    assert [j.metadata.name for j in first.items] == ["p0", "p1"]
    assert first.metadata.remaining_item_count == 3 and first.metadata.var_continue
    batch.delete_namespaced_job("p3", NS, propagation_policy="Background")
    batch.create_namespaced_job(NS, job("p5", image="scenario/hold"))
    batch.patch_namespaced_job("p2", NS, {"metadata": {"labels": {"later": "yes"}}})
    second = batch.list_namespaced_job(NS, limit=2, _continue=first.metadata.var_continue)
    assert [j.metadata.name for j in second.items] == ["p2", "p3"]  # as they were at the first page
    assert second.items[0].metadata.labels is None
    assert second.metadata.resource_version == first.metadata.resource_version
    third = batch.list_namespaced_job(NS, limit=2, _continue=second.metadata.var_continue)
    assert [j.metadata.name for j in third.items] == ["p4"]
    assert third.metadata.var_continue is None and third.metadata.remaining_item_count is None


def test_a_paged_list_with_a_selector_leaves_out_the_remaining_item_count(batch):
    for index in range(3):
        batch.create_namespaced_job(NS, job(f"s{index}", image="scenario/hold", labels={"app": "x"}))
    page = batch.list_namespaced_job(NS, limit=1, label_selector="app=x")
    assert len(page.items) == 1 and page.metadata.var_continue and page.metadata.remaining_item_count is None


def test_a_continue_token_from_before_a_compaction_answers_410_with_a_token_to_go_on(batch, fake):
    for index in range(3):
        batch.create_namespaced_job(NS, job(f"c{index}", image="scenario/hold"))
    first = batch.list_namespaced_job(NS, limit=1)
    batch.create_namespaced_job(NS, job("c9", image="scenario/hold"))
    fake.compact()
    with pytest.raises(ApiException) as caught:
        batch.list_namespaced_job(NS, limit=1, _continue=first.metadata.var_continue)
    body = error_body(caught.value)
    assert caught.value.status == 410 and body["reason"] == "Expired"
    assert body["message"].startswith("The provided continue parameter is too old")
    rest = batch.list_namespaced_job(NS, _continue=body["metadata"]["continue"])
    assert [j.metadata.name for j in rest.items] == ["c1", "c2", "c9"]  # inconsistent: c9 is new


def test_a_garbled_continue_token_answers_400(batch):
    with pytest.raises(ApiException) as caught:
        batch.list_namespaced_job(NS, limit=1, _continue="not-a-token")
    assert caught.value.status == 400 and error_body(caught.value)["reason"] == "BadRequest"
