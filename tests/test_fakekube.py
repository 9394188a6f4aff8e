"""The fake Kubernetes API server, driven only through the official client.

If these pass, the handler's integration tests exercise the same client code
paths (ApiException bodies, watch streams, 410 recovery) they would against a
cluster. Each test gets its own server, so there is no shared state.
"""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.fakekube import FakeKube, Timings

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
        env: dict | None = None, **spec) -> client.V1Job:
    container = client.V1Container(name="main", image=image, env=[
        client.V1EnvVar(name=key, value=value) for key, value in (env or {}).items()])
    template = client.V1PodTemplateSpec(spec=client.V1PodSpec(restart_policy="Never", containers=[container]))
    return client.V1Job(api_version="batch/v1", kind="Job",
                        metadata=client.V1ObjectMeta(name=name, labels=labels),
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


def test_watch_ends_cleanly_after_timeout_with_a_bookmark(batch, fake):
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


def test_delete_with_background_propagation_removes_the_pods(batch, fake):
    batch.create_namespaced_job(NS, job("gone", image="scenario/hold"))
    wait_until(lambda: fake.pods(NS))
    status = batch.delete_namespaced_job("gone", NS, propagation_policy="Background")
    # kubernetes 37 types this response as a plain object: a dict
    assert status["status"] == "Success" and status["details"]["name"] == "gone"
    assert fake.jobs(NS) == [] and fake.pods(NS) == []


def test_delete_with_foreground_propagation_in_the_body_removes_the_pods(batch, fake):
    batch.create_namespaced_job(NS, job("fg", image="scenario/hold"))
    wait_until(lambda: fake.pods(NS))
    batch.delete_namespaced_job("fg", NS, body=client.V1DeleteOptions(propagation_policy="Foreground"))
    assert fake.jobs(NS) == [] and fake.pods(NS) == []


def test_delete_without_policy_orphans_pods_like_batch_v1(batch, fake):
    batch.create_namespaced_job(NS, job("orphaner", image="scenario/hold"))
    wait_until(lambda: fake.pods(NS))
    batch.delete_namespaced_job("orphaner", NS)
    pods = fake.pods(NS)
    assert fake.jobs(NS) == [] and len(pods) == 1 and "ownerReferences" not in pods[0]["metadata"]


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
