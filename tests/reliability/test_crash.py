"""Crash: the handler is SIGKILLed at random moments while it works through a queue of
requests, and restarted each time. Afterwards every request must have exactly one Job
and at least one terminal reply: nothing lost, nothing run twice."""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.support.waiting import job_request

pytestmark = pytest.mark.integration

REQUESTS = 80
KILLS = 12
#: Reproduce a run (or explore others) with RELIABILITY_SEED=<n>.
SEED = int(os.environ.get("RELIABILITY_SEED", "6"))


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(handlers, requester, fakekube, namespace, figures):
    rng = random.Random(SEED)
    cids = [requester.submit(job_request(f"scenario/succeed:{rng.uniform(0.2, 1.5):.2f}"), correlation_id=f"crash-{i}")
            for i in range(REQUESTS)]
    proc = handlers.spawn("--concurrency", "8")
    kills, kill_times = 0, []
    while kills < KILLS:
        pause = rng.uniform(0.3, 3.0)  # sometimes before the handler even connected
        requester.collect(pause)
        proc.kill()
        proc.wait(10)
        kills += 1
        kill_times.append(round(pause, 2))
        proc = handlers.spawn("--concurrency", "8")
    deadline = time.monotonic() + 60
    missing = set(cids)
    while missing and time.monotonic() < deadline:
        requester.collect(0.5)
        missing = {c for c in missing if not requester.terminal_replies_for(c)}
    created = fakekube.created_jobs(namespace)
    statuses = {r["data"]["status"] for c in cids for r in requester.terminal_replies_for(c)}
    duplicate_replies = sum(max(0, len(requester.terminal_replies_for(c)) - 1) for c in cids)
    logs = [handlers.log_of(i) for i in range(len(handlers.processes))]
    figures.update(adoptions=sum(log.count("adopting") for log in logs),
                   killed_mid_job=sum(1 for log in logs[:-1] if "created job" in log or "adopting" in log))
    figures.update(requests=REQUESTS, kills=kills, seconds_between_kills=kill_times, jobs=len(created),
                   duplicate_jobs=len(created) - len(set(created)), lost=len(missing),
                   duplicate_replies=duplicate_replies, seed=SEED)
    assert not missing, f"no terminal reply for {sorted(missing)}\n{handlers.log_of()}"
    assert statuses == {"succeeded"}
    assert len(created) == len(set(created)) == REQUESTS
    for cid in cids:  # duplicates of a reply are the same event
        assert len({r["id"] for r in requester.terminal_replies_for(cid)}) == 1
