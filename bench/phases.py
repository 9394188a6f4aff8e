"""The measurements, one function each, run the same way for the handler and the baseline.

Each starts the subject as a real subprocess on a fresh queue and namespace, drives it
through the real broker, takes its timestamps where things happen (see ``rig``), and
returns plain numbers. Requests in the latency phase go one at a time, so queueing
never hides in a latency; the throughput phase queues everything first. Each compared
phase takes one sample of its figures; ``bench.__main__`` repeats them in rounds, the
handler's and the baseline's interleaved. The phases that use the fake's own levers
(``seed_template``, ``seeded``) run on the fake only.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import time
import urllib.request
import uuid

from bench import BenchError
from bench.rig import PRODUCTION_LIKE, REPO, Proc, Rig, Subject
from bench.stats import Samples, stratified

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
#: The same on the real control plane, where the PATCH and the watch events that follow a
#: reply take milliseconds, not tenths of one.
CLUSTER_PAUSE = (0.2, 0.3)


def cold_start(rig: Rig, subject: Subject) -> dict:
    """One start of the subject with one instant request waiting, in --once mode; the time of
    each step from the process's start."""
    stage = rig.stage(subject)
    key, _ = rig.publish(stage, rig.world.instant)
    proc = rig.spawn(subject, stage, once=True)
    code = proc.wait_exit(120)
    rig.replies.wait([key], 30)
    if code != 0:
        raise BenchError(f"{subject.name} --once exited {code}:\n{proc.log()[-2000:]}")
    delivered = subject.first_delivery(proc.log())
    if delivered is None:
        raise BenchError(f"{subject.name} logged no first delivery:\n{proc.log()[-2000:]}")
    return {"first_delivery_s": delivered - proc.started_wall, "job_created_s": rig.times.created[key] - proc.started,
            "reply_s": rig.replies.arrived[key] - proc.started, "once_exit_s": proc.exited - proc.started}


def latency(rig: Rig, subject: Subject, count: int, finish_window: float, warm: int = WARM_UP,
            poll: float | None = None) -> dict:
    """Serial requests for held Jobs: publish → created; finish → reply; and the subject's
    CPU and API requests per request over them.

    Each Job is finished a while after it was created (on the cluster: after its pod
    runs), the delays spread evenly over ``[0, finish_window)`` (``stats.stratified``):
    the baseline polls once a second, so its window is a second, to sample every phase of
    its poll; the handler has no period to sample and gets a short one. ``poll`` runs the
    baseline with another poll period (its dispatch does not depend on it: a request
    comes when it is idle).
    """
    stage = rig.stage(subject)
    mark = rig.world.mark()
    proc = rig.spawn(subject, stage, concurrency=1, poll=poll)
    rig.wait_ready(subject, proc, timeout=60)
    dispatch, reply, overhead = Samples(), Samples(), Samples()
    timeout = 30 if rig.world.name == "fake" else 120
    delays = [finish_window / 2] * warm + stratified(count, finish_window)
    cpu_before, first = None, None
    try:
        for i, delay in enumerate(delays):
            if i == warm:
                cpu_before = proc.cpu_seconds()
            key, published = rig.publish(stage, rig.world.hold)
            first = first if i != warm else published
            rig.times.wait(rig.times.created, [key], timeout, "created")
            if rig.world.name != "fake":  # a real pod is finished once it runs
                rig.times.wait(rig.times.running, [key], timeout, "running")
            time.sleep(delay)
            rig.world.finish(stage.namespace, rig.times.names[key])
            rig.replies.wait([key], timeout)
            # On the cluster the bench's own watch may hear of the Job's end after the subject.
            rig.times.wait(rig.times.finished, [key], timeout, "finished")
            time.sleep(random.uniform(*_pause(rig)))
            if i < warm:
                continue
            d = rig.times.created[key] - published
            r = rig.replies.arrived[key] - rig.times.finished[key]
            dispatch.add(d)
            reply.add(r)
            overhead.add(d + r)
        cpu, ended = proc.cpu_seconds() - (cpu_before or 0.0), time.monotonic()
    finally:
        proc.stop()
    requests = rig.world.requests_since(mark)
    return {"dispatch": dispatch.summary_ms(), "reply": reply.summary_ms(), "overhead": overhead.summary_ms(),
            "cpu_ms_per_request": cpu / count * 1000, "requests": requests, "jobs": warm + count,
            "api_requests_per_job": requests["requests"]["total"] / (warm + count),
            "requests_per_s": count / (ended - first) if first else None}


def throughput(rig: Rig, subject: Subject, count: int, concurrency: int) -> dict:
    """``count`` instant requests queued first, then one idle-mode process drains them."""
    stage = rig.stage(subject)
    keys = [rig.publish(stage, rig.world.instant)[0] for _ in range(count)]
    mark = rig.world.mark()
    proc = rig.spawn(subject, stage, concurrency=concurrency)
    watch_events = None
    try:
        rig.wait_ready(subject, proc, timeout=60)
        cpu_before, bench_before = proc.cpu_seconds(), _own_cpu()
        per_request = 1.5 if not subject.concurrent else 0.2 if rig.world.name == "fake" else 1.0
        rig.replies.wait(keys, 60 + count * per_request)
        rig.world.settle()  # the handler records each reply on its Job just after sending it
        cpu, bench_cpu = proc.cpu_seconds() - cpu_before, _own_cpu() - bench_before
        watch_events = handler_watch_events(proc)
    finally:
        proc.stop()
    requests = rig.world.requests_since(mark)
    failed = [k for k in keys if rig.replies.bodies[k].get("data", rig.replies.bodies[k]).get("status") != "succeeded"]
    if failed:
        raise BenchError(f"{len(failed)} request(s) did not succeed, e.g. {rig.replies.bodies[failed[0]]}")
    began = min(rig.times.created[k] for k in keys)
    ended = max(rig.replies.arrived[k] for k in keys)
    return {
        "requests_per_s": count / (ended - began),
        "api_requests_per_job": requests["requests"]["total"] / count,
        "api_requests": requests,
        # The handler's own count of the watch events it applied, for comparison with the API server's.
        "handler_watch_events_per_job": watch_events / count if watch_events is not None else None,
        # CPU per request of the subject (start-up excluded), and of this process (the
        # fake API server and the client) for comparison: the machine has two cores.
        "cpu_ms_per_request": cpu / count * 1000,
        "bench_cpu_ms_per_request": bench_cpu / count * 1000,
        "count": count,
        "jobs": count,
        "concurrency": concurrency,
    }


def footprint(rig: Rig, subject: Subject, inflight: int, settle: float, sample: int = 0) -> dict:
    """Resident memory idle (after ``settle`` s) and, if it can, with ``inflight`` Jobs held:
    then ``sample`` of them finished one at a time while the rest stay in flight (the reply
    latency at that load), then the rest at once; CPU from the first request to the last
    reply, per Job, and the API requests of the whole run (start-up included)."""
    stage = rig.stage(subject)
    mark = rig.world.mark()
    proc = rig.spawn(subject, stage, concurrency=max(1, inflight) if subject.concurrent else 1)
    busy, reply, cpu_ms, watch_events = None, Samples(), None, None
    slow = 0.05 if rig.world.name == "fake" else 0.5  # seconds per Job the control plane may take
    try:
        rig.wait_ready(subject, proc, timeout=60)
        time.sleep(settle)
        idle = proc.memory_mb()
        if subject.concurrent and inflight:
            cpu_before = proc.cpu_seconds()
            keys = [rig.publish(stage, rig.world.hold)[0] for _ in range(inflight)]
            rig.times.wait(rig.times.running, keys, 60 + inflight * slow, "running")
            time.sleep(settle)
            busy = proc.memory_mb()
            for key in keys[:sample]:
                rig.world.finish(stage.namespace, rig.times.names[key])
                rig.replies.wait([key], 60)
                rig.times.wait(rig.times.finished, [key], 60, "finished")
                reply.add(rig.replies.arrived[key] - rig.times.finished[key])
                time.sleep(random.uniform(*_pause(rig)))
            for key in keys[sample:]:
                rig.world.finish(stage.namespace, rig.times.names[key])
            rig.replies.wait(keys, 60 + inflight * slow)
            rig.world.settle()  # the last "replied" PATCHes come just after the replies
            cpu_ms = (proc.cpu_seconds() - cpu_before) / inflight * 1000
            busy["peak_mb"] = proc.memory_mb()["peak_mb"]
            busy["threads"] = proc.threads()
            events = handler_watch_events(proc)
            watch_events = events / inflight if events is not None else None
    finally:
        proc.stop()
    requests = rig.world.requests_since(mark)
    return {"idle": idle, "inflight": busy, "inflight_jobs": inflight if busy else 0,
            "inflight_reply": reply.summary_ms() if reply.values else None, "inflight_cpu_ms_per_job": cpu_ms,
            "api_requests": requests if busy else None, "handler_watch_events_per_job": watch_events}


def start_up(rig: Rig, subject: Subject, settle: float) -> dict:
    """What one start costs the API server: the subject started in an empty namespace,
    left idle for ``settle`` seconds, stopped; its API requests (its watches are counted
    as they end)."""
    stage = rig.stage(subject)
    mark = rig.world.mark()
    proc = rig.spawn(subject, stage)
    try:
        rig.wait_ready(subject, proc, timeout=60)
        time.sleep(settle)
    finally:
        proc.stop()
    return rig.world.requests_since(mark)


def handler_watch_events(proc: Proc) -> float | None:
    """``cloud_worker_watch_events_total`` from the handler's /metrics (None for another subject)."""
    if proc.http_port is None:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.http_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("cloud_worker_watch_events_total")]
    return sum(values) if values else None


def seed_template(rig: Rig) -> tuple[dict, dict]:
    """A finished, replied Job of the handler's and its pod, as the API server holds them:
    what a namespace fills with once finished Jobs are kept (a raised TTL)."""
    from bench.rig import HANDLER

    stage = rig.stage(HANDLER)
    key = stage.next_key()
    rig.times.capture.add(key)
    rig.publish(stage, rig.world.instant, key)
    proc = rig.spawn(HANDLER, stage, once=True)
    proc.wait_exit(60)
    rig.replies.wait([key], 10)
    job, pod = rig.times.objects.get(("jobs", key)), rig.times.objects.get(("pods", key))
    if job is None or pod is None:
        raise BenchError("the seeded namespace's template Job or pod was not captured")
    return job, pod


def seed(rig: Rig, namespace: str, template: tuple[dict, dict], count: int) -> None:
    """``count`` copies of the template Job and pod in ``namespace``, restored inertly. The
    copies share the template's spec and status (the fake never changes a stored object:
    a write replaces it), and have their own metadata."""
    job, pod = template
    jobs, pods = [], []
    for i in range(count):
        name, uid = f"seed{i:05d}-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
        meta = {k: v for k, v in job["metadata"].items() if k != "deletionTimestamp"}
        meta.update(name=name, uid=uid, namespace=namespace,
                    labels={**meta.get("labels", {}), "cloud-worker.mstc.io/job-name": name})
        pmeta = {k: v for k, v in pod["metadata"].items() if k != "deletionTimestamp"}
        pmeta.update(name=f"{name}-{uuid.uuid4().hex[:5]}", uid=str(uuid.uuid4()), namespace=namespace,
                     labels={**pmeta.get("labels", {}), "job-name": name, "batch.kubernetes.io/job-name": name,
                             "controller-uid": uid, "batch.kubernetes.io/controller-uid": uid},
                     ownerReferences=[dict(ref, name=name, uid=uid) for ref in pmeta.get("ownerReferences") or []])
        jobs.append(dict(job, metadata=meta))
        pods.append(dict(pod, metadata=pmeta))
    rig.fake.restore("jobs", jobs)
    rig.fake.restore("pods", pods)


def seeded(rig: Rig, subject: Subject, template: tuple[dict, dict], count: int, settle: float) -> dict:
    """Start-up and memory in a namespace already holding ``count`` finished Jobs with their
    pods: a --once run with one instant request waiting (as ``cold_start``, which has
    warmed the OS page cache), then a long-running process's RSS after twice ``settle`` s
    (the handler lists the pods in the background: the figure is once that is done)."""
    stage = rig.stage(subject)
    seed(rig, stage.namespace, template, count)
    key, _ = rig.publish(stage, rig.world.instant)
    proc = rig.spawn(subject, stage, once=True)
    if proc.wait_exit(120) != 0:
        raise BenchError(f"{subject.name} --once exited non-zero:\n{proc.log()[-2000:]}")
    rig.replies.wait([key], 10)
    first = subject.first_delivery(proc.log()) - proc.started_wall
    created, replied = rig.times.created[key] - proc.started, rig.replies.arrived[key] - proc.started
    proc = rig.spawn(subject, stage)
    try:
        rig.wait_ready(subject, proc, timeout=120)
        time.sleep(2 * settle)
        memory = proc.memory_mb()
    finally:
        proc.stop()
    return {"jobs": count, "first_delivery_s": first, "job_created_s": created, "reply_s": replied,
            "after_start": memory, "cache": cache_size(template) if subject.concurrent else None}


def cache_size(template: tuple[dict, dict], copies: int = 200) -> dict:
    """What the handler's watch cache keeps of a Job it follows and its pod (trimmed by
    ``handler.core.trim``), against the whole objects: JSON bytes, and bytes of Python
    objects (every dict, list and string counted once) over ``copies`` copies each parsed
    on its own, as watch events arrive. A finished, replied Job is not cached at all: it
    is outside the Jobs watch's selection (``manifest.waiting_selector``), and its
    finished pod is dropped with it."""
    from handler.core.trim import trim_job, trim_pod

    out: dict = {}
    for kind, obj, trim in (("job", template[0], trim_job), ("pod", template[1], trim_pod)):
        kept = [trim(json.loads(json.dumps(dict(obj, metadata=dict(obj["metadata"], name=f"{i}-{obj['metadata']['name']}")))))
                for i in range(copies)]
        seen: set[int] = set()
        out[kind] = {"python_bytes": sum(_deep_size(o, seen) for o in kept) / copies,
                     "json_bytes": len(json.dumps(trim(obj), separators=(",", ":"))),
                     "whole_json_bytes": len(json.dumps(obj, separators=(",", ":"))),
                     "whole_python_bytes": _deep_size(json.loads(json.dumps(obj)))}
    return {**out, **{key: out["job"][key] + out["pod"][key]
                      for key in ("python_bytes", "json_bytes", "whole_json_bytes", "whole_python_bytes")}}


def _deep_size(obj, seen: set | None = None) -> int:
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list):
        size += sum(_deep_size(v, seen) for v in obj)
    return size


def _pause(rig: Rig) -> tuple[float, float]:
    return PAUSE if rig.world.name == "fake" else CLUSTER_PAUSE


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


def import_cost(subject: Subject) -> dict:
    """Time (and resident memory after) to import what the subject needs, in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, *IMPORTS[subject.name]], cwd=REPO,
                         env={**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
                              "PYTHONPATH": str(PRODUCTION_LIKE)},
                         capture_output=True, text=True, check=True, timeout=60)
    probe = json.loads(out.stdout)
    return {"seconds": probe["seconds"], "rss_mb": probe["rss_mb"]}
