"""The local backend: jobs as local processes, reported exactly as the Kubernetes path
reports the same endings (checked side by side against the fake API server)."""

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from handler.core.config import Settings
from handler.core.errors import Interrupted
from handler.core.messages import Message
from handler.core.outcome import Status
from handler.core.request import parse_request
from handler.service.backends.kubernetes import KubernetesBackend
from handler.service.backends.local import LocalBackend, job_base_env, open_local_backend
from handler.service.backends.localimages import load_image_map
from handler.service.backends.localstatus import DEADLINE_MESSAGE
from tests.support.waiting import wait_until

JOB_SCRIPT = r"""
import json, os, sys, time
mode, arg = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "")
if os.environ.get("TRACE_FILE"):
    with open(os.environ["TRACE_FILE"], "a") as trace:
        trace.write(f"{os.getpid()}\n")
if mode == "succeed":
    print("hello from the job", flush=True)
elif mode == "fail":
    print("about to fail", file=sys.stderr, flush=True)
    sys.exit(int(arg))
elif mode == "sleep":
    print("sleeping", flush=True)
    time.sleep(float(arg))
elif mode == "lines":
    for i in range(int(arg)):
        print(f"line {i}")
elif mode == "env":
    with open(os.environ["ENV_FILE"], "w") as out:
        json.dump({"env": dict(os.environ), "cwd": os.getcwd()}, out)
elif mode == "limits":
    import resource
    with open(os.environ["LIMITS_FILE"], "w") as out:
        json.dump({name: resource.getrlimit(getattr(resource, name)) for name in ("RLIMIT_CPU", "RLIMIT_DATA")}, out)
elif mode == "allocate":
    block = bytearray(int(arg) * 2**20)
    print(f"allocated {len(block)} bytes", flush=True)
elif mode == "spin":
    while True:
        pass
"""

IMAGES = """
[images."test/succeed"]
command = ["python", "{here}/job.py", "succeed"]
[images."test/fail"]
command = ["python", "{here}/job.py", "fail", "3"]
env = { TRACE_FILE = "{here}/trace" }
[images."test/sleep"]
command = ["python", "{here}/job.py", "sleep", "60"]
env = { TRACE_FILE = "{here}/trace" }
[images."test/slow"]
command = ["python", "{here}/job.py", "sleep", "1"]
env = { TRACE_FILE = "{here}/trace" }
[images."test/lines"]
command = ["python", "{here}/job.py", "lines", "100"]
[images."test/env"]
command = ["python", "{here}/job.py", "env"]
env = { ENV_FILE = "{here}/env.json", FROM_IMAGE = "yes", MSTC_JOB = "overridden by the Job" }
[images."test/missing-command"]
command = ["/nonexistent/bin/tool"]
[images."test/limits"]
command = ["python", "{here}/job.py", "limits"]
env = { LIMITS_FILE = "{here}/limits.json" }
[images."test/allocate"]
command = ["python", "{here}/job.py", "allocate", "512"]
[images."test/spin"]
command = ["python", "{here}/job.py", "spin"]
"""

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_ENDPOINT_URL_S3": "http://s3:9000"}
HANDLER_ENVIRON = {"PATH": os.environ["PATH"], "HOME": "/home/someone", "CLOUD_WORKER_QUEUE": "q",
                   "UNRELATED_SECRET": "not for jobs"}


@pytest.fixture
def images_dir(tmp_path):
    (tmp_path / "job.py").write_text(JOB_SCRIPT)
    (tmp_path / "images.toml").write_text(IMAGES)
    return tmp_path


@pytest.fixture
def make_backend(images_dir):
    made = []

    def make(profiles=None, **settings):
        settings.setdefault("local_state_dir", images_dir / f"state-{len(made)}")
        s = Settings.from_env({f"CLOUD_WORKER_{k.upper()}": str(v) for k, v in settings.items()})
        backend = LocalBackend(s, load_image_map(images_dir / "images.toml"), CREDENTIALS,
                               job_base_env(HANDLER_ENVIRON), profiles=profiles)
        backend.start()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def request_for(image, timeout=None, message_id=None, settings=None, profile=None, profiles=None):
    body = {"image": image, "jobName": "local-test", "inputBucketUrl": "http://127.0.0.1:9000/bucket/in"}
    if timeout is not None:
        body["timeOut"] = timeout
    if profile is not None:
        body["profile"] = profile
    message = Message(json.dumps(body).encode(), "application/json", message_id=message_id or uuid.uuid4().hex)
    return parse_request(message, settings or Settings.from_env({}), profiles)


def run(backend, request, stop=None, progress=None):
    return backend.run(request, stop or threading.Event(), progress)


def test_a_job_that_exits_0_succeeds_with_its_log_tail_and_times(make_backend):
    request = request_for("test/succeed")
    outcome = run(make_backend(), request)
    assert (outcome.status, outcome.reason, outcome.pod_reason, outcome.exit_code, outcome.message) == (
        Status.SUCCEEDED, "Completed", "Completed", 0, "Job completed")
    assert outcome.log_tail == "hello from the job\n"
    assert outcome.pod_name.startswith(request.job_name + "-")
    assert 0 < outcome.duration_seconds < 10


def test_a_failing_job_reports_its_exit_code_and_stderr(make_backend):
    outcome = run(make_backend(), request_for("test/fail"))
    assert (outcome.status, outcome.reason, outcome.pod_reason, outcome.exit_code) == (
        Status.FAILED, "BackoffLimitExceeded", "Error", 3)
    assert outcome.message == "the job's local process failed; container exited with code 3 (Error)"
    assert "about to fail" in outcome.log_tail


def test_a_job_past_its_deadline_is_stopped_and_times_out(make_backend, images_dir):
    started = time.monotonic()
    outcome = run(make_backend(), request_for("test/sleep", timeout=0.01))  # 0.6 s: a deadline of 1 s
    assert time.monotonic() - started < 5
    assert (outcome.status, outcome.reason, outcome.message, outcome.exit_code, outcome.pod_reason) == (
        Status.TIMEDOUT, "DeadlineExceeded", f"{DEADLINE_MESSAGE}; container exited with code 143 (Error)", 143,
        "Error")
    assert outcome.log_tail == "sleeping\n"
    pid = int((images_dir / "trace").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_log_tail_keeps_the_last_lines_cut_to_the_byte_limit(make_backend):
    outcome = run(make_backend(log_tail_lines=5), request_for("test/lines"))
    assert outcome.log_tail == "".join(f"line {i}\n" for i in range(95, 100))
    outcome = run(make_backend(log_tail_lines=5, log_tail_bytes=10), request_for("test/lines"))
    assert outcome.log_tail == "line 95\nli"  # limitBytes counts from the start of the tail, as the API's does


def test_a_job_gets_the_pods_environment_and_a_working_directory_of_its_own(make_backend, images_dir):
    request = request_for("test/env")
    assert run(make_backend(), request).status is Status.SUCCEEDED
    seen = json.loads((images_dir / "env.json").read_text())
    env = seen["env"]
    assert env["INPUT_BUCKET_URL"] == env["OUTPUT_BUCKET_URL"] == "http://127.0.0.1:9000/bucket/in"
    assert (env["MSTC_REQUEST_ID"], env["MSTC_JOB"], env["FROM_IMAGE"]) == (request.request_id, "true", "yes")
    assert {k: env[k] for k in CREDENTIALS} == CREDENTIALS
    assert "CLOUD_WORKER_QUEUE" not in env and "UNRELATED_SECRET" not in env
    assert env["HOME"] == "/home/someone"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(os.sys.executable).parent)
    assert not Path(seen["cwd"]).exists()  # removed afterwards
    assert Path(seen["cwd"]).parent != images_dir


def test_an_image_the_file_does_not_map_fails_at_once_like_an_unpullable_image(make_backend):
    outcome = run(make_backend(), request_for("mstc/not-mapped:1"))
    assert (outcome.status, outcome.reason, outcome.pod_reason) == (Status.FAILED, "ErrImagePull", "ErrImagePull")
    assert "cannot start" in outcome.message and "images.toml" in outcome.message


def test_a_command_that_cannot_be_executed_fails_as_a_container_that_cannot_be_created(make_backend):
    outcome = run(make_backend(), request_for("test/missing-command"))
    assert (outcome.status, outcome.reason) == (Status.FAILED, "CreateContainerError")
    assert "/nonexistent/bin/tool" in outcome.message


def test_a_redelivered_request_adopts_its_running_job_instead_of_starting_another(make_backend, images_dir):
    backend = make_backend()
    request = request_for("test/slow", message_id="same-request")
    first_stop, errors = threading.Event(), []

    def first_delivery():
        try:
            run(backend, request, first_stop)
        except Interrupted as exc:
            errors.append(exc)

    thread = threading.Thread(target=first_delivery)
    thread.start()
    wait_until(lambda: (images_dir / "trace").exists(), "the job runs")
    first_stop.set()  # the handler shuts down, the request stays unacked ...
    backend.wake()
    thread.join(5)
    assert len(errors) == 1
    kinds = []
    redelivered = request_for("test/slow", message_id="same-request")  # ... and comes back
    outcome = run(backend, redelivered, progress=lambda kind, detail: kinds.append(kind))
    assert outcome.status is Status.SUCCEEDED
    assert kinds == ["accepted", "started"]
    assert len((images_dir / "trace").read_text().splitlines()) == 1  # one process only
    assert run(backend, redelivered).status is Status.SUCCEEDED  # finished jobs are kept for the TTL
    assert len((images_dir / "trace").read_text().splitlines()) == 1


def test_the_backoff_limit_retries_a_failing_job(make_backend, images_dir):
    outcome = run(make_backend(job_backoff_limit=2), request_for("test/fail"))
    assert (outcome.status, outcome.exit_code) == (Status.FAILED, 3)
    assert len((images_dir / "trace").read_text().splitlines()) == 3


def test_closing_the_backend_stops_the_jobs_it_started(make_backend, images_dir):
    backend = make_backend()
    stop = threading.Event()
    thread = threading.Thread(target=lambda: pytest.raises(Interrupted, run, backend, request_for("test/sleep"), stop))
    thread.start()
    wait_until(lambda: (images_dir / "trace").exists(), "the job runs")
    stop.set()
    backend.wake()
    thread.join(5)
    started = time.monotonic()
    backend.close()
    assert time.monotonic() - started < 5
    with pytest.raises(ProcessLookupError):
        os.kill(int((images_dir / "trace").read_text()), 0)


def test_without_an_s3_endpoint_local_mode_starts_an_embedded_one_for_its_jobs(images_dir):
    settings = Settings.from_env({"CLOUD_WORKER_LOCAL_IMAGES": str(images_dir / "images.toml"),
                                  "CLOUD_WORKER_LOCAL_STATE_DIR": str(images_dir / "state")})
    backend = open_local_backend(settings, {"PATH": os.environ["PATH"]})
    try:
        assert run(backend, request_for("test/env")).status is Status.SUCCEEDED
        env = json.loads((images_dir / "env.json").read_text())["env"]
        host, port = env["AWS_ENDPOINT_URL_S3"].removeprefix("http://").split(":")
        socket.create_connection((host, int(port)), timeout=2).close()
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
    finally:
        backend.close()
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2).close()


def test_with_an_s3_endpoint_configured_jobs_use_it_and_nothing_is_embedded(images_dir):
    settings = Settings.from_env({"CLOUD_WORKER_LOCAL_IMAGES": str(images_dir / "images.toml"),
                                  "CLOUD_WORKER_LOCAL_STATE_DIR": str(images_dir / "state")})
    environ = {"PATH": os.environ["PATH"], **CREDENTIALS, "AWS_REGION": "eu-west-1"}
    backend = open_local_backend(settings, environ)
    try:
        assert run(backend, request_for("test/env")).status is Status.SUCCEEDED
    finally:
        backend.close()
    env = json.loads((images_dir / "env.json").read_text())["env"]
    assert {k: env[k] for k in (*CREDENTIALS, "AWS_REGION")} == {**CREDENTIALS, "AWS_REGION": "eu-west-1"}


# --- side by side with the Kubernetes path (the fake API server over real HTTP)

@pytest.fixture
def kube_backend(fakekube, namespace):
    settings = Settings.from_env({"KUBECONFIG": fakekube.kubeconfig, "CLOUD_WORKER_NAMESPACE": namespace,
                                  "CLOUD_WORKER_DEADLINE_SLACK_SECONDS": "5"})
    backend = KubernetesBackend(settings)
    backend.start()
    yield backend
    backend.close()


@pytest.mark.parametrize("kube_image, local_image, timeout", [
    ("scenario/succeed:0.1", "test/succeed", None),
    ("scenario/fail:3", "test/fail", None),
    ("scenario/sleep:60", "test/sleep", 0.01),
])
def test_the_outcome_matches_what_the_kubernetes_path_reports_for_the_same_ending(
        make_backend, kube_backend, kube_image, local_image, timeout):
    from_kube = run(kube_backend, request_for(kube_image, timeout, settings=kube_backend.settings))
    from_local = run(make_backend(), request_for(local_image, timeout))
    fields = ("status", "reason", "pod_reason", "exit_code")
    if from_kube.status is Status.TIMEDOUT and from_kube.exit_code is None:
        # The Kubernetes path does not wait for the killed pod's final status before it
        # reports a timeout, so it may not know the exit code yet; when it does, it is 143.
        fields = fields[:2]
    assert {f: getattr(from_local, f) for f in fields} == {f: getattr(from_kube, f) for f in fields}
    # The words differ (a local process has no backoff limit to reach); the container's account does not.
    if from_kube.exit_code is not None:
        assert from_local.message.partition("; ")[2] == from_kube.message.partition("; ")[2]
    assert "backoff limit" not in from_local.message and "deadline" not in from_local.message
    for outcome in (from_kube, from_local):
        assert outcome.start_time and outcome.completion_time and outcome.pod_name
    assert from_local.log_tail  # (the Kubernetes path has none for a timed-out Job: it is deleted first)


def test_a_cancelled_job_is_stopped_and_its_follower_reports_cancelled(make_backend, images_dir):
    from handler.core.messages import CancelRequest, CancelStatus

    backend, request = make_backend(), request_for("test/sleep")
    result = []
    follower = threading.Thread(target=lambda: result.append(run(backend, request)))
    follower.start()
    deadline = time.monotonic() + 10
    while not (images_dir / "trace").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    target = CancelRequest(request_id=request.request_id, job_name=None, reason="user asked", event_id="e",
                           event_source="/t")
    answer = backend.cancel(target)
    assert answer.status is CancelStatus.CANCELLED
    follower.join(15)
    assert (result[0].status, result[0].reason) == (Status.CANCELLED, "Cancelled")
    assert "user asked" in result[0].message
    assert backend.cancel(target).status is CancelStatus.FINISHED
    unknown = CancelRequest(request_id="nobody", job_name=None, reason="r", event_id="e2", event_source="/t")
    assert backend.cancel(unknown).status is CancelStatus.NOT_FOUND


# --- Job profiles in local mode: limits as resource limits, the rest said to be ignored

def local_profiles(**profiles):
    from handler.core.profiles import parse_profiles

    return parse_profiles({"default": "plain", "profiles": {"plain": {}, **profiles}}, Settings.from_env({}),
                          "profiles.yaml")


def test_a_profiles_cpu_and_memory_limits_become_the_processs_resource_limits(make_backend, images_dir):
    profiles = local_profiles(small={"resources": {"limits": {"cpu": "500m", "memory": "256Mi"}}})
    backend = make_backend(profiles)
    outcome = run(backend, request_for("test/limits", timeout=1, profile="small", profiles=profiles))
    assert outcome.status is Status.SUCCEEDED, outcome.log_tail
    limits = json.loads((images_dir / "limits.json").read_text())
    # CPU: half a core for the seconds left of a 60 s deadline (a moment of it spent starting); memory: 256 MiB.
    assert 28 <= limits["RLIMIT_CPU"][0] <= 30 and limits["RLIMIT_CPU"][1] == limits["RLIMIT_CPU"][0] + 1
    assert limits["RLIMIT_DATA"] == [256 * 2**20, 256 * 2**20]
    run(backend, request_for("test/limits", timeout=1, profile="plain", profiles=profiles))
    unlimited = json.loads((images_dir / "limits.json").read_text())
    assert unlimited["RLIMIT_DATA"] != limits["RLIMIT_DATA"] and unlimited["RLIMIT_CPU"] != limits["RLIMIT_CPU"]


def test_a_job_over_its_profiles_memory_limit_fails_where_it_would_succeed_without_the_profile(make_backend):
    profiles = local_profiles(small={"resources": {"limits": {"memory": "128Mi"}}})
    backend = make_backend(profiles)
    roomy = run(backend, request_for("test/allocate", profile="plain", profiles=profiles))
    assert roomy.status is Status.SUCCEEDED and "allocated 536870912 bytes" in roomy.log_tail
    cramped = run(backend, request_for("test/allocate", profile="small", profiles=profiles))
    assert (cramped.status, cramped.exit_code) == (Status.FAILED, 1) and "MemoryError" in cramped.log_tail


def test_a_job_past_its_profiles_cpu_time_is_stopped_by_the_kernel(make_backend):
    profiles = local_profiles(tiny={"resources": {"limits": {"cpu": "100m"}}})
    started = time.monotonic()
    # A 12 s deadline at a tenth of a core: 2 CPU seconds, then SIGXCPU (exit 128 + 24).
    outcome = run(make_backend(profiles), request_for("test/spin", timeout=0.2, profile="tiny", profiles=profiles))
    assert (outcome.status, outcome.reason, outcome.exit_code) == (Status.FAILED, "BackoffLimitExceeded", 152)
    assert time.monotonic() - started < 11  # the CPU limit, before the deadline


def test_a_profiles_backoff_limit_and_fail_fast_exit_codes_hold_in_local_mode(make_backend, images_dir):
    profiles = local_profiles(retried={"backoffLimit": 2}, fast={"backoffLimit": 2, "failFastExitCodes": [3]})
    backend = make_backend(profiles)
    assert run(backend, request_for("test/fail", profile="retried", profiles=profiles)).exit_code == 3
    assert len((images_dir / "trace").read_text().splitlines()) == 3
    (images_dir / "trace").unlink()
    outcome = run(backend, request_for("test/fail", profile="fast", profiles=profiles))
    assert (outcome.status, outcome.reason, outcome.exit_code) == (Status.FAILED, "PodFailurePolicy", 3)
    assert outcome.message.startswith("Container job for pod local/") and "matching FailJob rule" in outcome.message
    assert len((images_dir / "trace").read_text().splitlines()) == 1


def test_local_mode_says_at_start_up_which_profile_fields_it_ignores(make_backend, caplog):
    profiles = local_profiles(gpu={"resources": {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi",
                                                                                      "nvidia.com/gpu": 1}},
                                   "nodeSelector": {"accelerator": "nvidia"},
                                   "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]})
    with caplog.at_level("INFO", logger="handler.service.backends.local"):
        make_backend(profiles)
    lines = [r.getMessage() for r in caplog.records if "profile gpu" in r.getMessage()]
    assert lines == ["local backend: profile gpu: limits.memory 8Gi as RLIMIT_DATA; ignored here (only a cluster "
                     "has them): resources.limits.nvidia.com/gpu, resources.requests, nodeSelector, tolerations"]


def test_a_jobs_storage_failure_reaches_the_reply_through_its_termination_message(images_dir, s3_endpoint, tmp_path):
    (images_dir / "kit.toml").write_text('[images."test/kit"]\ncommand = ["cloud-worker", "job", "--", "python", '
                                         '"-c", "pass"]\n')
    settings = Settings.from_env({"CLOUD_WORKER_LOCAL_STATE_DIR": str(tmp_path / "kit-state")})
    backend = LocalBackend(settings, load_image_map(images_dir / "kit.toml"), s3_endpoint.env,
                           job_base_env(HANDLER_ENVIRON))
    backend.start()
    body = {"image": "test/kit", "jobName": "kit", "inputBucketUrl": s3_endpoint.bucket_url("no-such-bucket-kit")}
    request = parse_request(Message(json.dumps(body).encode(), "application/json", message_id=uuid.uuid4().hex),
                            settings)
    try:
        outcome = run(backend, request)
    finally:
        backend.close()
    assert (outcome.status, outcome.exit_code) == (Status.FAILED, 70)
    assert "container exited with code 70 (Error): cannot download the inputs: " in outcome.message
    assert "NoSuchBucket" in outcome.message
