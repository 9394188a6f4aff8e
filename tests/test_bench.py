"""The benchmark harness keeps working: ``python -m bench --smoke`` (tiny counts, over the
real RabbitMQ and the fake API server) writes a JSON with every metric for both the
handler and the baseline, and prints the table. The numbers themselves are not judged."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import METRICS, RATIO_TARGETS, TARGETS
from tests.support.rabbit import fresh_queue, queues_named

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
#: What the single-threaded baseline cannot have: --concurrency 8/32, Jobs in flight, a watch cache.
NOT_FOR_THE_BASELINE = {"throughput_c8_rps", "throughput_c32_rps", "rss_inflight_mb", "rss_inflight_peak_mb",
                        "inflight_reply_p50_ms", "inflight_cpu_ms_per_job", "cache_bytes_per_job",
                        "cache_python_bytes_per_job"}


def _number(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


def test_the_smoke_run_writes_every_metric_for_the_handler_and_the_baseline(rabbitmq, tmp_path):
    out = tmp_path / "latest.json"
    prefix = fresh_queue("bench")  # its queues are this session's: the session's check sees none is left
    run = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--amqp-url", rabbitmq,
                          "--queue-prefix", prefix], cwd=REPO, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    handler, baseline = result["metrics"]["handler"], result["metrics"]["baseline"]
    assert set(handler) == set(baseline) == set(METRICS)
    assert all(_number(handler[key]) for key in METRICS), handler
    assert all(_number(baseline[key]) for key in METRICS.keys() - NOT_FOR_THE_BASELINE), baseline
    assert all(baseline[key] is None for key in NOT_FOR_THE_BASELINE)
    assert [(t["of"], t["metric"]) for t in result["targets"]] == [("value", k) for k in TARGETS] + [
        ("ratio", k) for k in RATIO_TARGETS]
    assert result["primitives"]["sum"]["p50_ms"] > 0 and result["machine"]["cores"] >= 1
    for label, _unit in METRICS.values():
        assert label in run.stdout
    assert queues_named(prefix) in ([], None)  # every queue of the run deleted (None: rabbitmqctl cannot say)
