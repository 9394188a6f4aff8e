"""``python -m bench [--quick | --smoke] [--cluster]``: run every measurement, print the table, write JSON.

The compared figures (start-up, import, dispatch and reply latency, CPU and API requests
per request) are taken in rounds: each round measures the handler and the baseline once
each, back to back, the order swapped every round, so that both see the same load; every
figure is the median over rounds, and every ratio the median of the rounds' ratios, each
with its lowest and highest round. The handler's other figures (throughput at 1 and 8,
Jobs in flight, a namespace of finished Jobs) are taken once.

The full run takes minutes on a 2-core machine; ``--quick`` fewer rounds and smaller
counts; ``--smoke`` seconds, with counts too small to mean anything (it only proves the
harness works, for ``tests/test_bench.py``). ``--cluster`` runs against the real control
plane of ``scripts/cluster.sh`` instead of the fake API server (see ``bench.cluster``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import phases, primitives, report
from bench.rig import BASELINE, HANDLER, Rig, Subject

# rounds: interleaved rounds of the compared figures; latency: serial requests per subject
# and round (after warm_requests), the baseline's with its poll at fast_poll (None: at its
# own period, in the polled run); polled: the baseline's serial requests at its own poll
# period (reply latency, CPU and API requests per request); primitives: requests through the
# bare primitives per round; throughput: queued requests per round at the top concurrency
# (the handler's CPU and API requests per request); throughput_once: queued requests at the
# lower concurrencies, once; inflight: Jobs held for the footprint, of which inflight_sample
# are finished one by one while the rest stay; seeded: finished Jobs (with their pods)
# already in the namespace at start-up.
FAKE: dict[str, dict[str, Any]] = {
    "full": dict(rounds=7, warm_requests=3, latency=60, fast_poll=0.02, polled=6, primitives=60, throughput=600,
                 throughput_once=300, concurrency=(1, 8, 32), inflight=1000, inflight_sample=50, seeded=10_000,
                 settle=1.0, baseline_poll=1.0),
    "quick": dict(rounds=5, warm_requests=3, latency=30, fast_poll=0.02, polled=4, primitives=30, throughput=200,
                  throughput_once=100, concurrency=(1, 8, 32), inflight=300, inflight_sample=20, seeded=3_000,
                  settle=1.0, baseline_poll=1.0),
    # The smoke run also shortens the baseline's poll period, so it proves the harness quickly.
    "smoke": dict(rounds=2, warm_requests=0, latency=2, fast_poll=0.02, polled=1, primitives=2, throughput=4,
                  throughput_once=4, concurrency=(1, 8, 32), inflight=2, inflight_sample=1, seeded=20,
                  settle=0.1, baseline_poll=0.1),
}
# On the real control plane a Job takes a second or two from creation to its end (the
# scheduler, kwok's pod start, the Job controller's batching), and the controller-manager's
# client is limited to 20 requests/s, so counts are smaller; no primitives, import probes
# or seeded namespaces (the same as on the fake).
CLUSTER: dict[str, dict[str, Any]] = {
    "full": dict(rounds=5, warm_requests=1, latency=8, fast_poll=None, polled=8, primitives=0, throughput=60,
                 throughput_once=20, concurrency=(1, 8, 32), inflight=1000, inflight_sample=20, seeded=0,
                 settle=2.0, baseline_poll=1.0),
    "quick": dict(rounds=3, warm_requests=1, latency=5, fast_poll=None, polled=5, primitives=0, throughput=40,
                  throughput_once=12, concurrency=(1, 8, 32), inflight=300, inflight_sample=10, seeded=0,
                  settle=2.0, baseline_poll=1.0),
    "smoke": dict(rounds=2, warm_requests=0, latency=1, fast_poll=None, polled=1, primitives=0, throughput=3,
                  throughput_once=2, concurrency=(1, 8, 32), inflight=3, inflight_sample=1, seeded=0,
                  settle=0.5, baseline_poll=1.0),
}
#: Random finish delay in the latency phase, in seconds (the baseline's is its poll period).
HANDLER_FINISH_WINDOW = 0.05
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def _round(rig: Rig, p: dict[str, Any], number: int, say) -> dict[str, Any]:
    """One round of the compared figures, the handler's and the baseline's back to back;
    the order alternates from round to round."""
    order: tuple[Subject, Subject] = (HANDLER, BASELINE) if number % 2 == 0 else (BASELINE, HANDLER)
    out: dict[str, Any] = {"handler": {}, "baseline": {}, "load": os.getloadavg()[0]}
    fake = rig.world.name == "fake"
    if fake:
        for subject in order:
            out[subject.name]["imports"] = phases.import_cost(subject)
    for subject in order:
        say(f"round {number + 1}: {subject.name}: cold start")
        out[subject.name]["cold_start"] = phases.cold_start(rig, subject)
    for subject in order:
        if subject is HANDLER:
            say(f"round {number + 1}: handler: dispatch and reply latency ({p['latency']} requests)")
            out["handler"]["latency"] = phases.latency(rig, HANDLER, p["latency"], HANDLER_FINISH_WINDOW,
                                                       p["warm_requests"])
            if p["primitives"]:
                say(f"round {number + 1}: bare primitives ({p['primitives']} requests)")
                out["primitives"] = primitives.measure(rig, p["primitives"], p["warm_requests"])
        elif p["fast_poll"]:
            say(f"round {number + 1}: baseline: dispatch latency ({p['latency']} requests, its poll at "
                f"{p['fast_poll']} s)")
            out["baseline"]["latency"] = phases.latency(rig, BASELINE, p["latency"], HANDLER_FINISH_WINDOW,
                                                        p["warm_requests"], poll=p["fast_poll"])
    top = max(p["concurrency"])
    for subject in order:
        if subject is HANDLER:
            say(f"round {number + 1}: handler: throughput, {p['throughput']} requests, concurrency {top}")
            out["handler"]["throughput"] = phases.throughput(rig, HANDLER, p["throughput"], top)
        else:
            say(f"round {number + 1}: baseline: {p['polled']} requests at its {rig.baseline_poll:g} s poll")
            out["baseline"]["polled"] = phases.latency(rig, BASELINE, p["polled"], rig.baseline_poll,
                                                       min(1, p["warm_requests"]))
    return out


def run(rig: Rig, p: dict[str, Any], say) -> dict[str, Any]:
    raw: dict[str, Any] = {"rounds": [], "handler": {}, "baseline": {}}

    def say(step: str, _say=say) -> None:  # every measurement starts on an empty cluster
        rig.fresh_cluster()
        _say(step)

    fake = rig.world.name == "fake"
    template = None
    if fake and p["seeded"]:
        say("a finished Job and pod of the handler's, to seed namespaces with")
        template = phases.seed_template(rig)
    for subject in (HANDLER, BASELINE):  # fills the OS page cache and the bytecode caches: not counted
        say(f"{subject.name}: a first start, not counted")
        phases.cold_start(rig, subject)
    for number in range(p["rounds"]):
        raw["rounds"].append(_round(rig, p, number, say))
    top = max(p["concurrency"])
    raw["handler"]["throughput"] = []
    for concurrency in p["concurrency"]:
        if concurrency != top:
            say(f"handler: throughput, {p['throughput_once']} requests, concurrency {concurrency}")
            raw["handler"]["throughput"].append(phases.throughput(rig, HANDLER, p["throughput_once"], concurrency))
    for subject in (HANDLER, BASELINE):
        out = raw[subject.name]
        say(f"{subject.name}: one start's API requests")
        out["start_up"] = phases.start_up(rig, subject, p["settle"])
        say(f"{subject.name}: footprint" + (f", {p['inflight']} Jobs in flight" if subject.concurrent else ""))
        out["footprint"] = phases.footprint(rig, subject, p["inflight"], p["settle"], p["inflight_sample"])
        if template is not None:
            say(f"{subject.name}: start-up in a namespace holding {p['seeded']} finished Jobs")
            out["seeded"] = phases.seeded(rig, subject, template, p["seeded"], p["settle"])
    return raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer rounds, smaller counts (a few minutes)")
    size.add_argument("--smoke", action="store_true", help="tiny counts: checks the harness, measures nothing")
    parser.add_argument("--cluster", action="store_true",
                        help="against the real control plane of scripts/cluster.sh (started if it is not up)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the compared figures (default: the profile's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    parser.add_argument("--amqp-url", default=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
    parser.add_argument("--queue-prefix", default="bench",
                        help="what starts the name of each work queue of the run, all deleted at its end (default bench)")
    args = parser.parse_args(argv)
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    world = "cluster" if args.cluster else "fake"
    profile = dict((CLUSTER if args.cluster else FAKE)[name], name=name, world=world)
    if args.rounds is not None:
        profile["rounds"] = max(1, args.rounds)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    started, load_before, probe_ms = time.monotonic(), os.getloadavg(), report.cpu_probe_ms()

    def say(step: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {step}", file=sys.stderr, flush=True)

    # A run stopped by SIGTERM (a timeout, a CI job cancelled) still tidies up: its queues,
    # its processes, its fake cluster or its namespaces.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        rig = Rig(args.amqp_url, Path(tmp), profile["baseline_poll"], args.queue_prefix, world=world)
        try:
            raw = run(rig, profile, say)
            raw["world"] = rig.world.describe() if hasattr(rig.world, "describe") else {"name": world}
        finally:
            rig.close()
    result = report.build(raw, profile, time.monotonic() - started, load_before, probe_ms)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(report.table(result))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
