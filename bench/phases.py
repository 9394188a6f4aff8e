"""The measurements, one function each, run the same way for the handler and the baseline.

Each starts the subject as a real subprocess on a fresh queue and namespace, drives it
through the real broker, takes its timestamps where things happen (see ``rig``), and
returns plain numbers. Requests in the latency phase go one at a time, so queueing
never hides in a latency; the throughput phase queues everything first.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time

from bench import BenchError
from bench.rig import HOLD, INSTANT, PRODUCTION_LIKE, REPO, Rig, Subject
from bench.stats import Samples

#: What ``cloud-worker consume`` and the baseline import before they can work.
IMPORTS = {
    "handler": ["handler.cli", "handler.service.logs", "handler.service.consumer", "handler.service.backends.kubernetes", "handler.service.health"],
    "baseline": ["pika", "kubernetes"],
}
#: Requests before the measured ones in a long-running process (first-call costs:
#: lazy imports, connection pools, code paths warming up).
WARM_UP = 3
#: Pause after each reply in the latency phase, in seconds, so the next request finds the
#: subject idle: the figure is the latency it adds to one request, not queueing behind the
#: previous request's bookkeeping (the handler's "replied" annotation PATCH comes after
#: the reply). Queueing is what the throughput phase measures.
PAUSE = (0.01, 0.02)


def cold_start(rig: Rig, subject: Subject, runs: int, warm: int = 1) -> dict:
    """Start the subject with one instant request waiting, in --once mode; time each step."""
    first, created, replied, exited = Samples(), Samples(), Samples(), Samples()
    for attempt in range(warm + runs):  # the warm run fills the OS page cache; not counted
        stage = rig.stage()
        key, _ = rig.publish(stage, INSTANT)
        proc = rig.spawn(subject, stage, once=True)
        code = proc.wait_exit(60)
        rig.replies.wait([key], 10)
        if code != 0:
            raise BenchError(f"{subject.name} --once exited {code}:\n{proc.log()[-2000:]}")
        if attempt < warm:
            continue
        delivered = subject.first_delivery(proc.log())
        if delivered is None:
            raise BenchError(f"{subject.name} logged no first delivery:\n{proc.log()[-2000:]}")
        first.add(delivered - proc.started_wall)
        created.add(rig.times.created[key] - proc.started)
        replied.add(rig.replies.arrived[key] - proc.started)
        exited.add(proc.exited - proc.started)
    return {
        "first_delivery_s": statistics.median(first.values),
        "job_created_s": statistics.median(created.values),
        "reply_s": statistics.median(replied.values),
        "once_exit_s": statistics.median(exited.values),
        "runs": runs,
    }


def latency(rig: Rig, subject: Subject, count: int, finish_window: float, warm: int = WARM_UP, seed: int = 7) -> dict:
    """Serial requests for ``scenario/hold`` Jobs: publish → created; finish → reply.

    Each Job is finished after a random delay in [0, ``finish_window``): the baseline polls
    once a second, so its window is a second, to sample every phase of its poll; the
    handler has no period to sample and gets a short one.
    """
    rng = random.Random(seed)
    stage = rig.stage()
    proc = rig.spawn(subject, stage, concurrency=1)
    rig.wait_ready(subject, proc)
    dispatch, reply, overhead = Samples(), Samples(), Samples()
    try:
        for i in range(warm + count):
            key, published = rig.publish(stage, HOLD)
            rig.times.wait(rig.times.created, [key], 30, "created")
            time.sleep(rng.uniform(0, finish_window))
            rig.fake.finish(stage.namespace, rig.times.names[key])
            rig.replies.wait([key], 30)
            time.sleep(rng.uniform(*PAUSE))
            if i < warm:
                continue
            d = rig.times.created[key] - published
            r = rig.replies.arrived[key] - rig.times.finished[key]
            dispatch.add(d)
            reply.add(r)
            overhead.add(d + r)
    finally:
        proc.stop()
    return {"dispatch": dispatch.summary_ms(), "reply": reply.summary_ms(), "overhead": overhead.summary_ms()}


def throughput(rig: Rig, subject: Subject, count: int, concurrency: int) -> dict:
    """``count`` instant requests queued first, then one idle-mode process drains them."""
    stage = rig.stage()
    keys = [rig.publish(stage, INSTANT)[0] for _ in range(count)]
    rig.fake.reset_counts()
    proc = rig.spawn(subject, stage, concurrency=concurrency)
    try:
        rig.wait_ready(subject, proc)
        cpu_before, bench_before = proc.cpu_seconds(), _own_cpu()
        rig.replies.wait(keys, 60 + count * (1.5 if not subject.concurrent else 0.2))
        cpu, bench_cpu = proc.cpu_seconds() - cpu_before, _own_cpu() - bench_before
        counts = {
            "create": rig.fake.request_count("POST", "jobs"),
            "log": rig.fake.request_count("GET", "log"),
            "watch": rig.fake.request_count("WATCH"),
            "read/list": rig.fake.request_count("GET", "jobs") + rig.fake.request_count("GET", "pods")
            - rig.fake.request_count("WATCH"),
            "total": rig.fake.request_count(),
        }
    finally:
        proc.stop()
    failed = [k for k in keys if rig.replies.bodies[k].get("data", rig.replies.bodies[k]).get("status") != "succeeded"]
    if failed:
        raise BenchError(f"{len(failed)} request(s) did not succeed, e.g. {rig.replies.bodies[failed[0]]}")
    began = min(rig.times.created[k] for k in keys)
    ended = max(rig.replies.arrived[k] for k in keys)
    return {
        "requests_per_s": count / (ended - began),
        "api_requests_per_job": counts["total"] / count,
        "api_requests": counts,
        # CPU per request of the subject (start-up excluded), and of this process (the
        # fake API server and the client) for comparison: the machine has two cores.
        "cpu_ms_per_request": cpu / count * 1000,
        "bench_cpu_ms_per_request": bench_cpu / count * 1000,
        "count": count,
        "concurrency": concurrency,
    }


def footprint(rig: Rig, subject: Subject, inflight: int, settle: float) -> dict:
    """Resident memory idle (after ``settle`` s) and, if it can, with ``inflight`` Jobs held."""
    stage = rig.stage()
    proc = rig.spawn(subject, stage, concurrency=max(1, inflight) if subject.concurrent else 1)
    try:
        rig.wait_ready(subject, proc)
        time.sleep(settle)
        idle = proc.memory_mb()
        busy = None
        if subject.concurrent and inflight:
            keys = [rig.publish(stage, HOLD)[0] for _ in range(inflight)]
            rig.times.wait(rig.times.running, keys, 60, "running")
            time.sleep(settle)
            busy = proc.memory_mb()
            for key in keys:
                rig.fake.finish(stage.namespace, rig.times.names[key])
            rig.replies.wait(keys, 60)
    finally:
        proc.stop()
    return {"idle": idle, "inflight": busy, "inflight_jobs": inflight if busy else 0}


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_IMPORT_PROBE = """
import importlib, json, sys, time
started = time.perf_counter()
for name in sys.argv[1:]:
    importlib.import_module(name)
took = time.perf_counter() - started
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
print(json.dumps({"seconds": took, "rss_mb": rss}))
"""


def import_cost(subject: Subject, runs: int) -> dict:
    """Median time (and resident memory after) to import what the subject needs, fresh each run."""
    seconds, rss = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, *IMPORTS[subject.name]], cwd=REPO,
                             env={**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                                  "PYTHONPATH": str(PRODUCTION_LIKE)},
                             capture_output=True, text=True, check=True, timeout=60)
        probe = json.loads(out.stdout)
        seconds.append(probe["seconds"])
        rss.append(probe["rss_mb"])
    return {"seconds": statistics.median(seconds), "rss_mb": statistics.median(rss), "modules": IMPORTS[subject.name]}
