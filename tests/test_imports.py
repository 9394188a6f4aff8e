"""What ``cloud-worker consume`` imports before its first delivery: the S3 client only once a
Job's log is written to its bucket (``service.joblog``), the HTTP stack of ``serve`` (flask,
gunicorn) never. Every module imported is start-up time (docs/benchmarks.md, cold start)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: What ``cmd_consume`` imports, with the parser every command builds first.
CONSUME = ["handler.cli", "handler.service.logs", "handler.adapters.amqp", "handler.service.consumer",
           "handler.service.health", "handler.service.runtime", "handler.service.backends.kubernetes"]
#: Packages ``consume`` has no use for until a log is uploaded (minio) or at all (the rest).
NOT_AT_START = {"minio", "flask", "werkzeug", "gunicorn", "moto", "botocore", "boto3", "requests_toolbelt"}

PROBE = """
import json, sys
import handler.cli
handler.cli.build_parser()
for name in sys.argv[1:]:
    __import__(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def imported(*modules: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *modules], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=60)
    return set(json.loads(out.stdout))


def test_consume_imports_neither_the_s3_client_nor_the_http_stack_of_serve():
    assert not imported(*CONSUME) & NOT_AT_START


def test_the_s3_client_comes_with_the_log_upload():
    assert "minio" in imported(*CONSUME, "handler.adapters.storage")
