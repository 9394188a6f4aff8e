"""``python -m bench [--quick | --smoke]``: run every measurement, print the table, write JSON.

The full run takes a few minutes on a 2-core machine; ``--quick`` a minute or so with
smaller counts; ``--smoke`` seconds, with counts too small to mean anything (it only
proves the harness works, for ``tests/test_bench.py``).
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
from bench.rig import BASELINE, HANDLER, Rig

PROFILES: dict[str, dict[str, Any]] = {
    # cold: counted --once runs (after `warm` uncounted ones); latency: serial requests (after
    # `warm_requests`); throughput: queued requests; inflight: Jobs held for the footprint, of
    # which inflight_sample are finished one by one while the rest stay; seeded: finished Jobs
    # (with their pods) already in the namespace at start-up.
    "full": dict(cold=10, warm=1, warm_requests=3, latency=500, baseline_latency=20, primitives=200, throughput=1000,
                 baseline_throughput=20, concurrency=(1, 8, 32), inflight=1000, inflight_sample=50, seeded=10_000,
                 settle=1.0, imports=5, baseline_poll=1.0),
    "quick": dict(cold=3, warm=1, warm_requests=3, latency=100, baseline_latency=5, primitives=50, throughput=200,
                  baseline_throughput=5, concurrency=(1, 8, 32), inflight=300, inflight_sample=20, seeded=10_000,
                  settle=1.0, imports=3, baseline_poll=1.0),
    # The smoke run also shortens the baseline's poll period, so it proves the harness quickly.
    "smoke": dict(cold=1, warm=0, warm_requests=0, latency=2, baseline_latency=1, primitives=2, throughput=4,
                  baseline_throughput=2, concurrency=(1, 8, 32), inflight=2, inflight_sample=1, seeded=20,
                  settle=0.1, imports=1, baseline_poll=0.1),
}
#: Random finish delay in the latency phase, in seconds (the baseline's is its poll period).
HANDLER_FINISH_WINDOW = 0.05
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


def run(rig: Rig, p: dict[str, Any], say) -> dict[str, Any]:
    raw: dict[str, Any] = {}

    def say(step: str, _say=say) -> None:  # every measurement starts on an empty cluster
        rig.fresh_cluster()
        _say(step)

    say("bare primitives")
    raw["primitives"] = primitives.measure(rig, p["primitives"], p["warm_requests"])
    say("a finished Job and pod of the handler's, to seed namespaces with")
    template = phases.seed_template(rig)
    for subject in (HANDLER, BASELINE):
        out = raw[subject.name] = {}
        say(f"{subject.name}: import cost")
        out["imports"] = phases.import_cost(subject, p["imports"])
        say(f"{subject.name}: cold start ({p['cold']} runs)")
        out["cold_start"] = phases.cold_start(rig, subject, p["cold"], p["warm"])
        count = p["latency"] if subject.concurrent else p["baseline_latency"]
        window = HANDLER_FINISH_WINDOW if subject.concurrent else p["baseline_poll"]
        say(f"{subject.name}: dispatch and reply latency ({count} requests)")
        out["latency"] = phases.latency(rig, subject, count, window, p["warm_requests"])
        out["throughput"] = []
        for concurrency in p["concurrency"] if subject.concurrent else (1,):
            count = p["throughput"] if subject.concurrent else p["baseline_throughput"]
            say(f"{subject.name}: throughput, {count} requests, concurrency {concurrency}")
            out["throughput"].append(phases.throughput(rig, subject, count, concurrency))
        say(f"{subject.name}: footprint" + (f", {p['inflight']} Jobs in flight" if subject.concurrent else ""))
        out["footprint"] = phases.footprint(rig, subject, p["inflight"], p["settle"], p["inflight_sample"])
        say(f"{subject.name}: start-up in a namespace holding {p['seeded']} finished Jobs")
        out["seeded"] = phases.seeded(rig, subject, template, p["seeded"], p["settle"])
    return raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller counts (about a minute)")
    size.add_argument("--smoke", action="store_true", help="tiny counts: checks the harness, measures nothing")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    parser.add_argument("--amqp-url", default=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
    parser.add_argument("--queue-prefix", default="bench",
                        help="what starts the name of each work queue of the run, all deleted at its end (default bench)")
    args = parser.parse_args(argv)
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    profile = dict(PROFILES[name], name=name)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    started, load_before, probe_ms = time.monotonic(), os.getloadavg(), report.cpu_probe_ms()

    def say(step: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {step}", file=sys.stderr, flush=True)

    # A run stopped by SIGTERM (a timeout, a CI job cancelled) still tidies up: its queues,
    # its processes, its fake cluster.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        rig = Rig(args.amqp_url, Path(tmp), profile["baseline_poll"], args.queue_prefix)
        try:
            raw = run(rig, profile, say)
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
