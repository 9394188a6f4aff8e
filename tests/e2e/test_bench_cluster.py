"""``python -m bench --smoke --cluster`` on the real control plane: every figure for both
subjects, as on the fake (tests/test_bench.py), and the API server's own counts of the
handler's requests: one start costs its LISTs and watches, each Job a create, a log read and
a PATCH."""

import pytest

from bench.report import FAKE_ONLY
from tests.test_bench import check_result, run_smoke

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(600)
def test_the_cluster_smoke_run_writes_every_figure_and_the_api_servers_counts(cluster, rabbitmq, tmp_path):
    result, stdout = run_smoke(rabbitmq, tmp_path, "--cluster", timeout=580)
    check_result(result, stdout, FAKE_ONLY)
    assert result["world"]["name"] == "cluster" and result["world"]["versions"]["kube-apiserver"]
    start = result["api"]["handler"]["start_up"]
    assert start["requests"]["list"] == start["requests"]["watch"] == 3, start
    assert start["requests"]["create"] == start["requests"]["patch"] == 0, start
    inflight = result["api"]["handler"]["inflight"]
    jobs = result["raw"]["handler"]["footprint"]["inflight_jobs"]
    assert inflight["requests"]["create"] == inflight["requests"]["log"] == jobs, inflight
    assert inflight["requests"]["patch"] == jobs, inflight
    assert result["metrics"]["handler"]["watch_events_per_job"] > 0
