"""From raw phase results to the flat metrics, ratios, targets, the table and the JSON.

``METRICS`` is the contract: every key is in the JSON for both subjects (``null`` where
a figure does not apply to the baseline, e.g. throughput at --concurrency 32, which it
does not have), and ``tests/test_bench.py`` checks exactly this list.
"""

from __future__ import annotations

import operator
import os
import platform
import time
from typing import Any

#: key → (label, unit)
METRICS: dict[str, tuple[str, str]] = {
    "cold_start_first_delivery_s": ("cold start: process start → first delivery", "s"),
    "cold_start_job_created_s": ("cold start: process start → Job created", "s"),
    "cold_start_once_exit_s": ("cold start: --once, instant Job, process exit", "s"),
    "dispatch_p50_ms": ("dispatch: published → Job created, p50", "ms"),
    "dispatch_p99_ms": ("dispatch: published → Job created, p99", "ms"),
    "reply_p50_ms": ("reply: Job finished → reply received, p50", "ms"),
    "reply_p99_ms": ("reply: Job finished → reply received, p99", "ms"),
    "overhead_p50_ms": ("overhead per request (dispatch + reply), p50", "ms"),
    "overhead_ratio": ("overhead ÷ bare primitives, p50", "x"),
    "overhead_ratio_with_log": ("overhead ÷ (bare primitives + log read), p50", "x"),
    "throughput_c1_rps": ("throughput, --concurrency 1", "req/s"),
    "throughput_c8_rps": ("throughput, --concurrency 8", "req/s"),
    "throughput_c32_rps": ("throughput, --concurrency 32", "req/s"),
    "api_requests_per_job": ("API requests per Job (highest concurrency)", "req"),
    "cpu_ms_per_request": ("CPU time per request (highest concurrency)", "ms"),
    "rss_idle_mb": ("RSS idle", "MB"),
    "rss_idle_peak_mb": ("peak RSS while idle (VmHWM)", "MB"),
    "rss_inflight_mb": ("RSS with N Jobs in flight", "MB"),
    "rss_inflight_peak_mb": ("peak RSS with N Jobs in flight (VmHWM)", "MB"),
    "inflight_reply_p50_ms": ("reply p50 while N Jobs are in flight", "ms"),
    "inflight_cpu_ms_per_job": ("CPU time per Job, N in flight", "ms"),
    "seeded_first_delivery_s": ("namespace of finished Jobs: start → first delivery", "s"),
    "seeded_start_ratio": ("… ÷ the same in an empty namespace", "x"),
    "seeded_rss_mb": ("namespace of finished Jobs: RSS after start", "MB"),
    "seeded_rss_ratio": ("… ÷ RSS idle in an empty namespace", "x"),
    "cache_bytes_per_job": ("watch cache per followed Job (Job + pod as kept, JSON)", "B"),
    "cache_python_bytes_per_job": ("… the same as Python objects", "B"),
    "import_s": ("import time of what it runs", "s"),
    "import_rss_mb": ("RSS after those imports", "MB"),
}

#: key → (comparison, bound): the issue's targets for the handler (issues 9 and 16).
TARGETS: dict[str, tuple[str, float]] = {
    "cold_start_first_delivery_s": ("<=", 0.5),
    "rss_idle_peak_mb": ("<=", 60.0),
    "dispatch_p50_ms": ("<=", 5.0),
    "reply_p50_ms": ("<=", 5.0),
    "overhead_ratio": ("<=", 1.3),
    "throughput_c32_rps": (">=", 100.0),
    "api_requests_per_job": ("<=", 3.0),
    "rss_inflight_peak_mb": ("<=", 120.0),
    "inflight_reply_p50_ms": ("<=", 10.0),
    "inflight_cpu_ms_per_job": ("<=", 3.0),
    "seeded_start_ratio": ("<=", 2.0),
    "seeded_rss_ratio": ("<=", 1.3),
    "cache_bytes_per_job": ("<=", 2048.0),
}
#: key → (comparison, bound) of the handler's figure ÷ the baseline's.
RATIO_TARGETS: dict[str, tuple[str, float]] = {
    "cpu_ms_per_request": ("<=", 0.5),
    "cold_start_first_delivery_s": ("<", 1.0),
}
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt}


def flatten(raw: dict[str, Any], primitives: dict[str, Any]) -> dict[str, float | None]:
    """One subject's raw phase results as the flat ``METRICS`` keys."""
    cold, lat, fp, imp = raw["cold_start"], raw["latency"], raw["footprint"], raw["imports"]
    bare, log_read = primitives["sum"]["p50_ms"], primitives["log_read"]["p50_ms"]
    by_c = {t["concurrency"]: t for t in raw["throughput"]}
    top = by_c[max(by_c)]
    inflight = fp["inflight"] or {}
    seeded = raw["seeded"]
    cache = seeded["cache"] or {}
    return {
        "cold_start_first_delivery_s": cold["first_delivery_s"],
        "cold_start_job_created_s": cold["job_created_s"],
        "cold_start_once_exit_s": cold["once_exit_s"],
        "dispatch_p50_ms": lat["dispatch"]["p50_ms"],
        "dispatch_p99_ms": lat["dispatch"]["p99_ms"],
        "reply_p50_ms": lat["reply"]["p50_ms"],
        "reply_p99_ms": lat["reply"]["p99_ms"],
        "overhead_p50_ms": lat["overhead"]["p50_ms"],
        "overhead_ratio": lat["overhead"]["p50_ms"] / bare,
        "overhead_ratio_with_log": lat["overhead"]["p50_ms"] / (bare + log_read),
        "throughput_c1_rps": by_c.get(1, {}).get("requests_per_s"),
        "throughput_c8_rps": by_c.get(8, {}).get("requests_per_s"),
        "throughput_c32_rps": by_c.get(32, {}).get("requests_per_s"),
        "api_requests_per_job": top["api_requests_per_job"],
        "cpu_ms_per_request": top["cpu_ms_per_request"],
        "rss_idle_mb": fp["idle"]["rss_mb"],
        "rss_idle_peak_mb": fp["idle"]["peak_mb"],
        "rss_inflight_mb": inflight.get("rss_mb"),
        "rss_inflight_peak_mb": inflight.get("peak_mb"),
        "inflight_reply_p50_ms": (fp["inflight_reply"] or {}).get("p50_ms"),
        "inflight_cpu_ms_per_job": fp["inflight_cpu_ms_per_job"],
        "seeded_first_delivery_s": seeded["first_delivery_s"],
        "seeded_start_ratio": seeded["first_delivery_s"] / cold["first_delivery_s"],
        "seeded_rss_mb": seeded["after_start"]["rss_mb"],
        "seeded_rss_ratio": seeded["after_start"]["rss_mb"] / fp["idle"]["rss_mb"],
        "cache_bytes_per_job": cache.get("json_bytes"),
        "cache_python_bytes_per_job": cache.get("python_bytes"),
        "import_s": imp["seconds"],
        "import_rss_mb": imp["rss_mb"],
    }


def targets(metrics: dict[str, float | None], ratios: dict[str, float | None]) -> list[dict[str, Any]]:
    out = []
    for table, values, suffix in ((TARGETS, metrics, ""), (RATIO_TARGETS, ratios, " × baseline")):
        for key, (op, bound) in table.items():
            value = values.get(key)
            out.append({"metric": key, "of": "ratio" if suffix else "value", "target": f"{op} {bound:g}{suffix}",
                        "value": value, "met": value is not None and _OPS[op](value, bound)})
    return out


def cpu_probe_ms() -> float:
    """A fixed pure-Python workload, best of three, in ms: this VM's speed changes with its
    host's load (by a third during development), so runs are comparable only next to it."""
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        sum(i * i for i in range(1_000_000))
        timings.append((time.perf_counter() - started) * 1000)
    return round(min(timings), 1)


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "kernel": platform.release()}


def build(raw: dict[str, Any], profile: dict[str, Any], seconds: float, load_before: tuple,
          probe_ms: float) -> dict[str, Any]:
    subjects = {name: flatten(raw[name], raw["primitives"]) for name in ("handler", "baseline")}
    ratios = {key: (subjects["handler"][key] / subjects["baseline"][key]
                    if subjects["handler"][key] is not None and subjects["baseline"][key] else None)
              for key in METRICS}
    return {
        "schema": 1,
        "command": "python -m bench" + {"full": "", "quick": " --quick", "smoke": " --smoke"}[profile["name"]],
        "profile": profile,
        # The load average before and after the run: other work on the machine shows in
        # every latency and rate (the subjects and the fake API server share its cores).
        "machine": dict(machine(), load_before=[round(x, 2) for x in load_before],
                        load_after=[round(x, 2) for x in os.getloadavg()], cpu_probe_ms=probe_ms),
        "seconds": seconds,
        "metrics": subjects,
        "ratios": ratios,
        "primitives": raw["primitives"],
        "targets": targets(subjects["handler"], ratios),
        "raw": {name: raw[name] for name in ("handler", "baseline")},
    }


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def table(result: dict[str, Any]) -> str:
    handler, baseline, ratios = result["metrics"]["handler"], result["metrics"]["baseline"], result["ratios"]
    goals: dict[str, list[dict[str, Any]]] = {}
    for goal in result["targets"]:
        goals.setdefault(goal["metric"], []).append(goal)
    rows = [("metric", "unit", "handler", "baseline", "handler/baseline", "target", "")]
    for key, (label, unit) in METRICS.items():
        mine = goals.get(key, [])
        rows.append((label, unit, _fmt(handler[key]), _fmt(baseline[key]), _fmt(ratios[key]),
                     "; ".join(g["target"] for g in mine), " ".join("met" if g["met"] else "MISSED" for g in mine)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    p = result["primitives"]
    lines.append("")
    lines.append(f"bare primitives p50: pika round trip {p['echo']['p50_ms']:.2f} ms + Job create "
                 f"{p['create']['p50_ms']:.2f} ms + watch event {p['watch_event']['p50_ms']:.2f} ms "
                 f"= {p['sum']['p50_ms']:.2f} ms; a pod log read (which the handler's reply needs "
                 f"and the ratio leaves out) {p['log_read']['p50_ms']:.2f} ms")
    m = result["machine"]
    lines.append(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}; "
                 f"run took {result['seconds']:.0f} s ({result['profile']['name']}); load average "
                 f"{m['load_before'][0]:.2f} before, {m['load_after'][0]:.2f} after; CPU probe {m['cpu_probe_ms']} ms")
    return "\n".join(lines)
