"""The benchmark harness keeps working: ``python -m bench --smoke`` (tiny counts, two rounds,
over the real RabbitMQ and the fake API server) writes a JSON with every metric for both
the handler and the baseline, each compared figure with its spread over the rounds and its
ratio's, and prints the table. The numbers themselves are not judged. (The same on the real
control plane: tests/e2e/test_bench_cluster.py.)"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import CLUSTER_ONLY, FAKE_ONLY, METRICS, RATIO_TARGETS, ROUNDS, TARGETS
from bench.stats import spread, stratified
from tests.support.rabbit import fresh_queue, queues_named

REPO = Path(__file__).resolve().parents[1]
#: What the single-threaded baseline cannot have: --concurrency 8/32, Jobs in flight, a watch
#: cache, watches of its own.
NOT_FOR_THE_BASELINE = {"throughput_c8_rps", "throughput_c32_rps", "rss_inflight_mb", "rss_inflight_peak_mb",
                        "inflight_reply_p50_ms", "inflight_cpu_ms_per_job", "inflight_api_requests_per_job",
                        "cache_bytes_per_job", "cache_python_bytes_per_job", "own_watch_events_per_job"}


def _number(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


def run_smoke(rabbitmq: str, tmp_path: Path, *flags: str, timeout: float) -> tuple[dict, str]:
    out = tmp_path / "latest.json"
    prefix = fresh_queue("bench")  # its queues are this session's: the session's check sees none is left
    run = subprocess.run([sys.executable, "-m", "bench", "--smoke", *flags, "--out", str(out), "--amqp-url", rabbitmq,
                          "--queue-prefix", prefix], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    assert queues_named(prefix) in ([], None)  # every queue of the run deleted (None: rabbitmqctl cannot say)
    return json.loads(out.read_text()), run.stdout


def check_result(result: dict, stdout: str, not_here: set[str]) -> None:
    """Every metric for both subjects (``null`` only where it cannot apply), the compared
    ones with a spread over every round, the targets in order, the table printed."""
    handler, baseline = result["metrics"]["handler"], result["metrics"]["baseline"]
    assert set(handler) == set(baseline) == set(METRICS)
    assert all(_number(handler[key]) for key in METRICS.keys() - not_here), handler
    assert all(handler[key] is None for key in not_here), handler
    assert all(_number(baseline[key]) for key in METRICS.keys() - NOT_FOR_THE_BASELINE - not_here), baseline
    assert all(baseline[key] is None for key in NOT_FOR_THE_BASELINE | not_here)
    rounds = result["profile"]["rounds"]
    assert rounds >= 2 and len(result["machine"]["load_by_round"]) == rounds
    for key in ROUNDS - not_here - NOT_FOR_THE_BASELINE:
        for name in ("handler", "baseline"):
            taken = result["spread"][name][key]
            assert taken["n"] == rounds and taken["min"] <= taken["median"] <= taken["max"], (name, key, taken)
        assert result["ratio_spread"][key]["n"] == rounds, key
    assert [(t["of"], t["metric"]) for t in result["targets"]] == [("value", k) for k in TARGETS] + [
        ("ratio", k) for k in RATIO_TARGETS]
    assert result["machine"]["cores"] >= 1
    for key, (label, _unit) in METRICS.items():
        if key not in not_here:
            assert label in stdout, label


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_smoke_run_writes_every_metric_for_the_handler_and_the_baseline(rabbitmq, tmp_path):
    result, stdout = run_smoke(rabbitmq, tmp_path, timeout=280)
    check_result(result, stdout, CLUSTER_ONLY)
    assert result["world"]["name"] == "fake"
    assert result["primitives"]["sum"]["p50_ms"] > 0
    assert result["api"]["handler"]["start_up"]["requests"]["watch"] >= 2


def test_a_spread_is_the_median_of_the_rounds_with_the_lowest_and_the_highest():
    assert spread([3.0, 1.0, None, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert spread([None]) is None


def test_finish_delays_cover_the_window_evenly_whatever_the_count():
    for count in (1, 2, 5, 20):
        delays = stratified(count, 1.0)
        assert sorted(delays) == [(i + 0.5) / count for i in range(count)]
    assert stratified(4, 1.0)[:2] == [0.125, 0.875]  # short and long alternate


def test_the_figures_of_one_world_only_are_known_apart():
    assert not FAKE_ONLY & CLUSTER_ONLY and (FAKE_ONLY | CLUSTER_ONLY) <= METRICS.keys() and ROUNDS <= METRICS.keys()
