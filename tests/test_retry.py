import random

import pytest

from handler.core.errors import JobFailedToStart, Transient
from handler.core.retry import Backoff, retrying


def flaky(failures, error=None):
    error = error or Transient("boom")
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return "ok"
    return fn, calls


def test_transient_errors_are_retried_until_success():
    fn, calls = flaky(3)
    slept = []
    assert retrying(fn, Backoff(attempts=5), "x", sleep=slept.append) == "ok"
    assert len(calls) == 4 and len(slept) == 3


def test_retries_give_up_after_the_attempts():
    fn, calls = flaky(10)
    with pytest.raises(Transient):
        retrying(fn, Backoff(attempts=3), "x", sleep=lambda s: None)
    assert len(calls) == 3


def test_permanent_errors_are_never_retried():
    fn, calls = flaky(1, JobFailedToStart("Forbidden", "no"))
    with pytest.raises(JobFailedToStart):
        retrying(fn, Backoff(), "x", sleep=lambda s: None)
    assert len(calls) == 1


def test_retry_after_from_the_server_is_honoured():
    fn, _ = flaky(1, Transient("429", retry_after=1.5))
    slept = []
    retrying(fn, Backoff(), "x", sleep=slept.append)
    assert slept == [1.5]


def test_delays_are_jittered_below_the_exponential_cap():
    b, rng = Backoff(base=0.1, cap=2.0), random.Random(1)
    delays = [b.delay(n, rng) for n in range(10) for _ in range(50)]
    assert all(0 <= d <= 2.0 for d in delays)
    assert len(set(delays)) > 100
