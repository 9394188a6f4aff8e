import io
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from handler.core.bucketurl import parse_bucket_url
from handler.tools import jobkit

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "python-test" / "main.py"


def _python(code):
    return [sys.executable, "-c", code]


def _put(s3_endpoint, url, key, body):
    parsed = parse_bucket_url(url)
    s3_endpoint.client.put_object(
        bucket_name=parsed.bucket, object_name=parsed.prefix + key, data=io.BytesIO(body), length=len(body)
    )


def _objects(s3_endpoint, url):
    """{key relative to the URL's prefix: body} for everything under it."""
    parsed = parse_bucket_url(url)
    found = {}
    for obj in s3_endpoint.client.list_objects(bucket_name=parsed.bucket, prefix=parsed.prefix, recursive=True):
        response = s3_endpoint.client.get_object(bucket_name=parsed.bucket, object_name=obj.object_name)
        try:
            found[obj.object_name[len(parsed.prefix) :]] = response.read()
        finally:
            response.close()
            response.release_conn()
    return found


@pytest.fixture
def job_env(s3_endpoint, s3_bucket):
    """Input and output bucket URLs (inputs pre-loaded) plus credentials, as a Job gets them."""
    input_url, output_url = s3_bucket("requests/1"), s3_bucket("results/1")
    _put(s3_endpoint, input_url, "data.txt", b"hello")
    _put(s3_endpoint, input_url, "nested/more.bin", b"\x00\x01")
    return {**s3_endpoint.env, "INPUT_BUCKET_URL": input_url, "OUTPUT_BUCKET_URL": output_url}


COPY_INPUTS = """
import os, pathlib, shutil
src, dst = pathlib.Path(os.environ["INPUT_DIR"]), pathlib.Path(os.environ["OUTPUT_DIR"])
for path in src.rglob("*"):
    if path.is_file():
        target = dst / "copy" / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
(dst / "cwd.txt").write_text(os.getcwd())
"""


def test_inputs_are_downloaded_and_everything_the_command_writes_is_uploaded(s3_endpoint, job_env, tmp_path):
    assert jobkit.run_job(_python(COPY_INPUTS), job_env, tmp_path) == 0

    outputs = _objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"])
    assert outputs == {
        "copy/data.txt": b"hello",
        "copy/nested/more.bin": b"\x00\x01",
        "cwd.txt": str(tmp_path.resolve()).encode(),
    }


def test_the_command_sees_input_and_output_dirs_and_the_rest_of_its_environment(s3_endpoint, job_env, tmp_path):
    code = "import os; open(os.environ['OUTPUT_DIR'] + '/env.txt', 'w').write(os.environ['INPUT_DIR'] + ' ' + os.environ['EXTRA'])"

    assert jobkit.run_job(_python(code), {**job_env, "EXTRA": "passed"}, tmp_path) == 0

    env_txt = _objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"])["env.txt"].decode()
    assert env_txt == f"{tmp_path.resolve() / 'input'} passed"


def test_a_successful_command_uploads_no_error_files(s3_endpoint, job_env, tmp_path):
    assert jobkit.run_job(_python("print('fine')"), job_env, tmp_path) == 0
    assert _objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"]) == {}


def test_the_exit_code_of_a_failing_command_is_mirrored_and_its_errors_uploaded(s3_endpoint, job_env, tmp_path):
    code = """
import os, sys
open(os.environ["OUTPUT_DIR"] + "/partial.txt", "w").write("half")
sys.stderr.write("boom: it broke\\n")
sys.exit(3)
"""

    assert jobkit.run_job(_python(code), job_env, tmp_path) == 3

    outputs = _objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"])
    assert outputs == {
        "partial.txt": b"half",  # partial results are uploaded too
        "errors/exit-code.txt": b"3\n",
        "errors/stderr.txt": b"boom: it broke\n",
    }


def test_the_stderr_tail_is_bounded_and_keeps_the_end(s3_endpoint, job_env, tmp_path, monkeypatch):
    monkeypatch.setattr(jobkit, "STDERR_TAIL_BYTES", 1000)
    code = "import sys; sys.stderr.write('x' * 50000 + 'THE END'); sys.exit(1)"

    assert jobkit.run_job(_python(code), job_env, tmp_path) == 1

    tail = _objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"])["errors/stderr.txt"]
    assert len(tail) == 1000
    assert tail.endswith(b"xTHE END")


def test_the_commands_stdout_and_stderr_stream_through_to_the_job_log(job_env, tmp_path, capfd):
    code = "import sys; print('to stdout', flush=True); sys.stderr.write('to stderr\\n')"

    assert jobkit.run_job(_python(code), job_env, tmp_path) == 0

    captured = capfd.readouterr()
    assert "to stdout" in captured.out
    assert "to stderr" in captured.err


def test_a_command_killed_by_a_signal_exits_128_plus_the_signal(s3_endpoint, job_env, tmp_path):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"

    assert jobkit.run_job(_python(code), job_env, tmp_path) == 137
    assert _objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"])["errors/exit-code.txt"] == b"137\n"


def test_a_command_that_does_not_exist_exits_127_and_says_so(s3_endpoint, job_env, tmp_path):
    assert jobkit.run_job(["/no/such/program"], job_env, tmp_path) == jobkit.EX_NOT_FOUND

    outputs = _objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"])
    assert outputs["errors/exit-code.txt"] == b"127\n"
    assert b"command not found: /no/such/program" in outputs["errors/stderr.txt"]
    assert b"FileNotFoundError" in outputs["errors/traceback.txt"]


def test_the_output_url_defaults_to_the_input_url(s3_endpoint, job_env, tmp_path):
    env = {key: value for key, value in job_env.items() if key != "OUTPUT_BUCKET_URL"}
    code = "import os; open(os.environ['OUTPUT_DIR'] + '/out.txt', 'w').write('o')"

    assert jobkit.run_job(_python(code), env, tmp_path) == 0

    assert set(_objects(s3_endpoint, env["INPUT_BUCKET_URL"])) == {"data.txt", "nested/more.bin", "out.txt"}


def test_without_a_workdir_the_job_runs_in_a_temporary_directory_that_is_removed(s3_endpoint, job_env):
    code = "import os; open(os.environ['OUTPUT_DIR'] + '/where.txt', 'w').write(os.getcwd())"

    assert jobkit.run_job(_python(code), job_env) == 0

    workdir = Path(_objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"])["where.txt"].decode())
    assert "cloud-worker-job-" in workdir.name
    assert not workdir.exists()


def test_a_missing_input_bucket_fails_the_job_with_a_traceback_and_never_runs_the_command(
    s3_endpoint, job_env, tmp_path
):
    env = {**job_env, "INPUT_BUCKET_URL": s3_endpoint.bucket_url("no-such-input-bucket")}

    assert jobkit.run_job(_python("open('ran', 'w')"), env, tmp_path) == jobkit.EX_SOFTWARE

    assert not (tmp_path / "ran").exists()
    outputs = _objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"])
    assert set(outputs) == {"errors/exit-code.txt", "errors/traceback.txt"}
    assert outputs["errors/exit-code.txt"] == b"70\n"
    assert b"NoSuchBucket" in outputs["errors/traceback.txt"]


@pytest.fixture
def termination_log(tmp_path):
    """A container's /dev/termination-log, as the kubelet makes it (empty, before the job starts)."""
    path = tmp_path / "termination-log"
    path.write_bytes(b"")
    return path


def test_a_missing_input_bucket_is_named_in_the_termination_message_the_reply_carries(
    s3_endpoint, job_env, tmp_path, termination_log
):
    env = {**job_env, "INPUT_BUCKET_URL": s3_endpoint.bucket_url("no-such-input-bucket"),
           "MSTC_TERMINATION_LOG": str(termination_log)}

    assert jobkit.run_job(_python("pass"), env, tmp_path / "work") == jobkit.EX_SOFTWARE

    message = termination_log.read_text()
    assert message.startswith("cannot download the inputs: ") and "NoSuchBucket" in message
    assert "\n" not in message.strip() and "Traceback" not in message


def test_a_lost_output_bucket_and_an_unusable_environment_say_why_in_the_termination_message(
    s3_endpoint, job_env, tmp_path, termination_log
):
    code = "import os; open(os.environ['OUTPUT_DIR'] + '/out.txt', 'w').write('o')"
    env = {**job_env, "OUTPUT_BUCKET_URL": s3_endpoint.bucket_url("no-such-output-bucket"),
           "MSTC_TERMINATION_LOG": str(termination_log)}
    assert jobkit.run_job(_python(code), env, tmp_path / "work") == jobkit.EX_SOFTWARE
    assert termination_log.read_text().startswith("cannot upload the outputs: ")
    assert "NoSuchBucket" in termination_log.read_text()

    env = {k: v for k, v in env.items() if k != "AWS_ACCESS_KEY_ID"}
    assert jobkit.run_job(_python(code), env, tmp_path / "again") == jobkit.EX_CONFIG
    assert termination_log.read_text().startswith("the job cannot start: S3 credentials missing")


def test_a_successful_job_and_a_job_outside_a_container_write_no_termination_message(
    s3_endpoint, job_env, tmp_path, termination_log
):
    assert jobkit.run_job(_python("pass"), {**job_env, "MSTC_TERMINATION_LOG": str(termination_log)},
                          tmp_path / "work") == 0
    assert termination_log.read_bytes() == b""
    nowhere = tmp_path / "no-such-file"
    env = {**job_env, "INPUT_BUCKET_URL": s3_endpoint.bucket_url("no-such-input-bucket"),
           "MSTC_TERMINATION_LOG": str(nowhere)}
    assert jobkit.run_job(_python("pass"), env, tmp_path / "again") == jobkit.EX_SOFTWARE
    assert not nowhere.exists()  # (as /dev/termination-log outside a pod: never created)


def test_an_input_key_escaping_the_workdir_fails_the_job_before_the_command_runs(s3_endpoint, job_env, tmp_path):
    parsed = parse_bucket_url(job_env["INPUT_BUCKET_URL"])
    s3_endpoint.put_raw_object(parsed.bucket, parsed.prefix + "../../../escaped.txt")

    assert jobkit.run_job(_python("open('ran', 'w')"), job_env, tmp_path) == jobkit.EX_SOFTWARE

    assert not (tmp_path / "ran").exists()
    assert b"UnsafeKey" in _objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"])["errors/traceback.txt"]


def test_a_lost_output_bucket_turns_success_into_a_toolkit_failure(s3_endpoint, job_env, tmp_path):
    env = {**job_env, "OUTPUT_BUCKET_URL": s3_endpoint.bucket_url("no-such-output-bucket")}
    code = "import os; open(os.environ['OUTPUT_DIR'] + '/out.txt', 'w').write('o')"

    assert jobkit.run_job(_python(code), env, tmp_path) == jobkit.EX_SOFTWARE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"INPUT_BUCKET_URL": None}, "INPUT_BUCKET_URL is not set"),
        ({"INPUT_BUCKET_URL": "ftp://host/bucket"}, "INPUT_BUCKET_URL: bucket URL 'ftp://host/bucket' has scheme"),
        ({"OUTPUT_BUCKET_URL": "http://u:p@host/bucket"}, "OUTPUT_BUCKET_URL: bucket URL 'http://***@host/bucket'"),
        ({"AWS_ACCESS_KEY_ID": None}, "set AWS_ACCESS_KEY_ID (or MINIO_ACCESS_KEY, MINIO_ROOT_USER)"),
    ],
    ids=["no input URL", "bad scheme", "credentials in URL", "no credentials"],
)
def test_an_unusable_environment_exits_78_with_a_clear_message_and_runs_nothing(
    job_env, tmp_path, caplog, change, message
):
    env = {key: value for key, value in {**job_env, **change}.items() if value is not None}

    assert jobkit.run_job(_python("open('ran', 'w')"), env, tmp_path) == jobkit.EX_CONFIG

    assert message in caplog.text
    assert "p@host" not in caplog.text
    assert not (tmp_path / "ran").exists()


def test_main_runs_the_command_after_the_double_dash(s3_endpoint, job_env, tmp_path):
    argv = ["--workdir", str(tmp_path), "--", sys.executable, "-c", "import sys; sys.exit(5)"]
    assert jobkit.main(argv, job_env) == 5


def test_main_without_a_command_is_a_usage_error(job_env, caplog):
    assert jobkit.main(["--"], job_env) == jobkit.EX_USAGE
    assert "no command given" in caplog.text


def test_the_python_test_example_summarises_its_inputs(s3_endpoint, job_env, tmp_path):
    env = {**job_env, "SLEEP_SECONDS": "0"}

    assert jobkit.run_job([sys.executable, str(EXAMPLE)], env, tmp_path) == 0

    result = _objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"])["result.txt"].decode()
    assert result.startswith("2 input files\n")
    assert "data.txt\t5\t2cf24dba" in result
    assert "nested/more.bin\t2\t" in result


def test_the_python_test_example_fails_on_request_and_never_logs_secrets(s3_endpoint, job_env, tmp_path, capfd):
    env = {**job_env, "SLEEP_SECONDS": "0", "FAIL": "4", "AMQP_URL": "amqp://guest:hunter2@rabbit/"}

    assert jobkit.run_job([sys.executable, str(EXAMPLE)], env, tmp_path) == 4

    captured = capfd.readouterr()
    assert "FAIL=4 is set" in captured.err and "SUCCESS" not in captured.out  # the word means it went well
    assert job_env["AWS_SECRET_ACCESS_KEY"] not in captured.err + captured.out
    assert "hunter2" not in captured.err + captured.out
    outputs = _objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"])
    assert {"result.txt", "errors/exit-code.txt", "errors/stderr.txt"} <= set(outputs)
    assert b"FAIL=4 is set" in outputs["errors/stderr.txt"]


def test_the_toolkit_logs_a_summary_line_when_the_job_finishes(job_env, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="handler")

    jobkit.run_job(_python("pass"), job_env, tmp_path)

    assert "job finished: exit code 0, 2 inputs, 0 outputs" in caplog.text


def test_sigterm_to_the_toolkit_is_passed_on_to_the_command(s3_endpoint, job_env, tmp_path):
    # A pod being deleted sends SIGTERM to PID 1, the toolkit; the command must hear it.
    # The safety net keeps pytest alive should the signal ever arrive unforwarded.
    safety_net = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    code = "import os, signal, time; time.sleep(0.2); os.kill(os.getppid(), signal.SIGTERM); time.sleep(10)"
    try:
        assert jobkit.run_job(_python(code), job_env, tmp_path) == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, safety_net)
    assert _objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"])["errors/exit-code.txt"] == b"143\n"


def test_importing_the_toolkit_and_url_parsing_does_not_load_the_s3_client():
    code = "import sys, handler.tools.jobkit, handler.core.bucketurl; sys.exit('minio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, cwd=Path(__file__).parents[1]).returncode == 0


def test_without_the_s3_extra_the_job_exits_78_naming_the_extra(job_env, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "minio", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "handler.adapters.storage")

    assert jobkit.run_job(_python("open('ran', 'w')"), job_env, tmp_path) == jobkit.EX_CONFIG

    assert "mstc-cloud-worker[s3]" in caplog.text
    assert not (tmp_path / "ran").exists()


def test_with_a_file_prefix_only_that_requests_files_come_in_and_every_upload_carries_it(
    s3_endpoint, s3_bucket, tmp_path
):
    url = s3_bucket()
    for key, body in (("17-data.txt", b"mine"), ("17-nested/more.bin", b"\x01"), ("99-data.txt", b"theirs"),
                      ("data.txt", b"no prefix")):
        _put(s3_endpoint, url, key, body)
    env = {**s3_endpoint.env, "INPUT_BUCKET_URL": url, "FILE_PREFIX": "17"}
    code = COPY_INPUTS + "\nimport sys; sys.exit(4)"

    assert jobkit.run_job(_python(code), env, tmp_path) == 4

    objects = _objects(s3_endpoint, url)
    assert objects["17-copy/data.txt"] == b"mine" and objects["17-copy/nested/more.bin"] == b"\x01"
    assert objects["17-errors/exit-code.txt"] == b"4\n"
    assert set(objects) == {"17-data.txt", "17-nested/more.bin", "99-data.txt", "data.txt", "17-copy/data.txt",
                            "17-copy/nested/more.bin", "17-cwd.txt", "17-errors/exit-code.txt",
                            "17-errors/stderr.txt"}


def test_the_originals_credential_names_work_for_a_job(s3_endpoint, job_env, tmp_path):
    env = {k: v for k, v in job_env.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    env.update(MINIO_ROOT_USER="minioadmin", MINIO_ROOT_PASSWORD="minioadmin")

    assert jobkit.run_job(_python(COPY_INPUTS), env, tmp_path) == 0
    assert _objects(s3_endpoint, job_env["OUTPUT_BUCKET_URL"])["copy/data.txt"] == b"hello"
