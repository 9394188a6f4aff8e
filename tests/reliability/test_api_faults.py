"""The API server misbehaving: 500s, 429s with Retry-After, slow answers, watch streams
cut every few events and 410 Gone on every resume, all at once. Every Job must still be
created once and reported correctly. The faults are switched off again afterwards."""

from __future__ import annotations

import pytest

from tests.support.waiting import job_request

pytestmark = pytest.mark.integration

REQUESTS = 24


@pytest.fixture
def faults(fakekube):
    yield fakekube.faults
    fakekube.faults.clear()
    fakekube.faults.seed = 0


def test_every_job_finishes_correctly_through_api_server_faults(handlers, requester, fakekube, namespace, faults,
                                                                figures):
    faults.seed = 11
    faults.error_rate, faults.throttle_rate, faults.latency = 0.2, 0.05, 0.02
    faults.cut_watch_after, faults.gone_on_resume = 3, True
    requests_before = {kind: fakekube.request_count(None, kind) for kind in ("jobs", "pods", "log")}
    handler = handlers.start(concurrency=8)  # after the faults: its first watches are cut too
    images = ["scenario/succeed:0.3", "scenario/fail:4", "scenario/oom"]
    cids = {requester.submit(job_request(images[i % 3]), correlation_id=f"fault-{i}"): images[i % 3]
            for i in range(REQUESTS)}
    for cid, image in cids.items():
        data = requester.wait_reply(cid, timeout=60)["data"]
        expected = ("succeeded", 0) if "succeed" in image else ("failed", 4 if "fail" in image else 137)
        assert (data["status"], data["exitCode"]) == expected, data
    requester.collect(0.5)
    created = fakekube.created_jobs(namespace)
    counters = handler.backend.tracker.counters
    figures.update(requests=REQUESTS, jobs=len(created), duplicate_jobs=len(created) - len(set(created)),
                   api_requests={k: fakekube.request_count(None, k) - n for k, n in requests_before.items()},
                   watch_restarts=counters.restarts, relists=counters.relists,
                   duplicate_replies=sum(len(requester.terminal_replies_for(c)) - 1 for c in cids),
                   faults="500 20%, 429 5%, +20 ms, watch cut every 3 events, 410 on every resume")
    assert len(created) == len(set(created)) == REQUESTS
    assert all(len(requester.terminal_replies_for(c)) == 1 for c in cids)
