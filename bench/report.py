"""From raw phase results to the flat metrics, their spread over rounds, the ratios, the
targets, the table and the JSON.

``METRICS`` is the contract: every key is in the JSON for both subjects (``null`` where
a figure does not apply: throughput at --concurrency 32 for the baseline, which does not
have it; the primitives and the seeded namespace on the cluster; the API server's watch
events on the fake), and ``tests/test_bench.py`` checks exactly this list.

A figure taken in rounds (``ROUNDS``) is the median of its rounds, with the lowest and the
highest (``spread``); its ratio to the baseline is the median of the rounds' ratios, each
round's handler and baseline taken back to back, with the lowest and highest round
(``ratio_spread``). A figure taken once has no spread (n = 1).
"""

from __future__ import annotations

import operator
import os
import platform
import time
from typing import Any

from bench.stats import spread

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
    "watch_events_per_job": ("watch events the API server sent per Job (every watcher)", "ev"),
    "own_watch_events_per_job": ("watch events the subject applied per Job", "ev"),
    "start_up_requests": ("API requests of one start", "req"),
    "rss_idle_mb": ("RSS idle", "MB"),
    "rss_idle_peak_mb": ("peak RSS while idle (VmHWM)", "MB"),
    "rss_inflight_mb": ("RSS with N Jobs in flight", "MB"),
    "rss_inflight_peak_mb": ("peak RSS with N Jobs in flight (VmHWM)", "MB"),
    "inflight_reply_p50_ms": ("reply p50 while N Jobs are in flight", "ms"),
    "inflight_cpu_ms_per_job": ("CPU time per Job, N in flight", "ms"),
    "inflight_api_requests_per_job": ("API requests per Job, N in flight (start-up included)", "req"),
    "seeded_first_delivery_s": ("namespace of finished Jobs: start → first delivery", "s"),
    "seeded_start_ratio": ("… ÷ the same in an empty namespace", "x"),
    "seeded_rss_mb": ("namespace of finished Jobs: RSS after start", "MB"),
    "seeded_rss_ratio": ("… ÷ RSS idle in an empty namespace", "x"),
    "cache_bytes_per_job": ("watch cache per followed Job (Job + pod as kept, JSON)", "B"),
    "cache_python_bytes_per_job": ("… the same as Python objects", "B"),
    "import_s": ("import time of what it runs", "s"),
    "import_rss_mb": ("RSS after those imports", "MB"),
}
#: The figures taken in every round (the others once).
ROUNDS = {"cold_start_first_delivery_s", "cold_start_job_created_s", "cold_start_once_exit_s", "dispatch_p50_ms",
          "dispatch_p99_ms", "reply_p50_ms", "reply_p99_ms", "overhead_p50_ms", "overhead_ratio",
          "overhead_ratio_with_log", "throughput_c32_rps", "api_requests_per_job", "cpu_ms_per_request",
          "watch_events_per_job", "own_watch_events_per_job", "import_s", "import_rss_mb"}
#: Figures only one world has: the fake's own levers, and the real API server's metrics.
FAKE_ONLY = {"overhead_ratio", "overhead_ratio_with_log", "seeded_first_delivery_s", "seeded_start_ratio",
             "seeded_rss_mb", "seeded_rss_ratio", "cache_bytes_per_job", "cache_python_bytes_per_job", "import_s",
             "import_rss_mb"}
CLUSTER_ONLY = {"watch_events_per_job"}

#: key → (comparison, bound): the issue's targets for the handler (issues 9, 16 and 22).
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
    "dispatch_p50_ms": ("<", 1.0),
    "import_s": ("<", 1.0),
}
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt}


def round_metrics(rnd: dict[str, Any], name: str) -> dict[str, float | None]:
    """One round's figures of one subject (``None`` where it has none)."""
    s = rnd[name]
    out: dict[str, float | None] = dict.fromkeys(ROUNDS)
    if "imports" in s:
        out["import_s"], out["import_rss_mb"] = s["imports"]["seconds"], s["imports"]["rss_mb"]
    cold = s["cold_start"]
    out["cold_start_first_delivery_s"] = cold["first_delivery_s"]
    out["cold_start_job_created_s"] = cold["job_created_s"]
    out["cold_start_once_exit_s"] = cold["once_exit_s"]
    if name == "handler":
        lat, cost = s["latency"], s["throughput"]
        dispatch = lat
        out["throughput_c32_rps"] = cost["requests_per_s"]
        out["own_watch_events_per_job"] = cost["handler_watch_events_per_job"]
        api = cost["api_requests"]
    else:
        lat = cost = s["polled"]
        dispatch = s.get("latency") or lat
        api = cost["requests"]
    prim = rnd.get("primitives")
    if prim:
        out["overhead_ratio"] = lat["overhead"]["p50_ms"] / prim["sum"]["p50_ms"]
        out["overhead_ratio_with_log"] = lat["overhead"]["p50_ms"] / (prim["sum"]["p50_ms"] + prim["log_read"]["p50_ms"])
    out["dispatch_p50_ms"] = dispatch["dispatch"]["p50_ms"]
    out["dispatch_p99_ms"] = dispatch["dispatch"]["p99_ms"]
    out["reply_p50_ms"] = lat["reply"]["p50_ms"]
    out["reply_p99_ms"] = lat["reply"]["p99_ms"]
    out["overhead_p50_ms"] = lat["overhead"]["p50_ms"]
    out["cpu_ms_per_request"] = cost["cpu_ms_per_request"]
    out["api_requests_per_job"] = cost["api_requests_per_job"]
    events = (api or {}).get("watch_events")
    out["watch_events_per_job"] = events["total"] / cost["jobs"] if events else None
    return out


def once_metrics(raw: dict[str, Any], name: str) -> dict[str, float | None]:
    """The figures of one subject taken once (``None`` where it has none)."""
    s = raw[name]
    out: dict[str, float | None] = dict.fromkeys(METRICS.keys() - ROUNDS)
    fp = s["footprint"]
    inflight = fp["inflight"] or {}
    out["rss_idle_mb"], out["rss_idle_peak_mb"] = fp["idle"]["rss_mb"], fp["idle"]["peak_mb"]
    out["rss_inflight_mb"], out["rss_inflight_peak_mb"] = inflight.get("rss_mb"), inflight.get("peak_mb")
    out["inflight_reply_p50_ms"] = (fp["inflight_reply"] or {}).get("p50_ms")
    out["inflight_cpu_ms_per_job"] = fp["inflight_cpu_ms_per_job"]
    if fp.get("api_requests") and fp["inflight_jobs"]:
        out["inflight_api_requests_per_job"] = fp["api_requests"]["requests"]["total"] / fp["inflight_jobs"]
    out["start_up_requests"] = s["start_up"]["requests"]["total"]
    for t in s.get("throughput", []):
        out[f"throughput_c{t['concurrency']}_rps"] = t["requests_per_s"]
    seeded = s.get("seeded")
    if seeded:
        cold = [r[name]["cold_start"]["first_delivery_s"] for r in raw["rounds"]]
        out["seeded_first_delivery_s"] = seeded["first_delivery_s"]
        out["seeded_start_ratio"] = seeded["first_delivery_s"] / sorted(cold)[len(cold) // 2]
        out["seeded_rss_mb"] = seeded["after_start"]["rss_mb"]
        out["seeded_rss_ratio"] = seeded["after_start"]["rss_mb"] / fp["idle"]["rss_mb"]
        cache = seeded["cache"] or {}
        out["cache_bytes_per_job"] = cache.get("json_bytes")
        out["cache_python_bytes_per_job"] = cache.get("python_bytes")
    return out


def aggregate(raw: dict[str, Any]) -> dict[str, Any]:
    """Medians, spreads, ratios and their spreads, from the rounds and the once figures."""
    rounds = {name: [round_metrics(r, name) for r in raw["rounds"]] for name in ("handler", "baseline")}
    once = {name: once_metrics(raw, name) for name in ("handler", "baseline")}
    spreads: dict[str, dict[str, Any]] = {"handler": {}, "baseline": {}}
    ratio_spread: dict[str, Any] = {}
    for key in METRICS:
        per_round: dict[str, list[float | None]] = {
            name: [r[key] for r in rounds[name]] if key in ROUNDS else [once[name][key]] for name in rounds}
        for name in rounds:
            spreads[name][key] = spread(per_round[name])
        pairs = zip(per_round["handler"], per_round["baseline"], strict=True)
        ratio_spread[key] = spread(h / b if h is not None and b else None for h, b in pairs)
        if key == "throughput_c1_rps":  # the handler's once, the baseline's in every round (its polled run)
            h, b = spreads["handler"][key], spread(_baseline_rate(r) for r in raw["rounds"])
            spreads["baseline"][key] = b
            ratio_spread[key] = spread([h["median"] / b["median"]]) if h and b else None
    metrics = {name: {key: (s["median"] if s else None) for key, s in spreads[name].items()} for name in spreads}
    ratios = {key: (s["median"] if s else None) for key, s in ratio_spread.items()}
    return {"metrics": metrics, "spread": spreads, "ratios": ratios, "ratio_spread": ratio_spread}


def _baseline_rate(rnd: dict[str, Any]) -> float | None:
    return rnd["baseline"]["polled"].get("requests_per_s")


def targets(metrics: dict[str, float | None], ratios: dict[str, float | None],
            spreads: dict[str, Any], ratio_spread: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target, met or not by the median; ``every_round`` says whether the worst round
    meets it too."""
    out = []
    for table, values, spread_of, suffix in ((TARGETS, metrics, spreads, ""), (RATIO_TARGETS, ratios, ratio_spread,
                                                                                " × baseline")):
        for key, (op, bound) in table.items():
            value, s = values.get(key), spread_of.get(key)
            worst = None if s is None else (s["min"] if op == ">=" else s["max"])
            out.append({"metric": key, "of": "ratio" if suffix else "value", "target": f"{op} {bound:g}{suffix}",
                        "value": value, "met": value is not None and _OPS[op](value, bound),
                        "every_round": worst is not None and _OPS[op](worst, bound)})
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
    agg = aggregate(raw)
    flags = {"full": "", "quick": " --quick", "smoke": " --smoke"}[profile["name"]]
    return {
        "schema": 2,
        "command": "python -m bench" + flags + (" --cluster" if profile["world"] == "cluster" else ""),
        "world": raw.get("world", {"name": profile["world"]}),
        "profile": profile,
        # The load average before and after the run, and at the start of each round: other
        # work on the machine shows in every latency and rate (the subjects and the fake
        # API server share its cores).
        "machine": dict(machine(), load_before=[round(x, 2) for x in load_before],
                        load_after=[round(x, 2) for x in os.getloadavg()], cpu_probe_ms=probe_ms,
                        load_by_round=[round(r["load"], 2) for r in raw["rounds"]]),
        "seconds": seconds,
        **agg,
        "primitives": _primitives(raw),
        "targets": targets(agg["metrics"]["handler"], agg["ratios"], agg["spread"]["handler"], agg["ratio_spread"]),
        "api": {name: {"start_up": raw[name]["start_up"], "inflight": raw[name]["footprint"].get("api_requests")}
                for name in ("handler", "baseline")},
        "raw": raw,
    }


def _primitives(raw: dict[str, Any]) -> dict[str, Any] | None:
    """The bare primitives' p50s, median over rounds."""
    taken = [r["primitives"] for r in raw["rounds"] if r.get("primitives")]
    if not taken:
        return None
    return {part: {"p50_ms": spread(t[part]["p50_ms"] for t in taken)["median"]}  # type: ignore[index]
            for part in ("echo", "create", "watch_event", "sum", "log_read")}


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _cell(s: dict[str, Any] | None) -> str:
    """A figure with its spread: ``median [min–max]``, or the figure alone when taken once."""
    if s is None:
        return "n/a"
    if s["n"] < 2:
        return _fmt(s["median"])
    return f"{_fmt(s['median'])} [{_fmt(s['min'])}–{_fmt(s['max'])}]"


def table(result: dict[str, Any]) -> str:
    spreads, ratios = result["spread"], result["ratio_spread"]
    goals: dict[str, list[dict[str, Any]]] = {}
    for goal in result["targets"]:
        goals.setdefault(goal["metric"], []).append(goal)
    rows = [("metric", "unit", "handler", "baseline", "handler/baseline", "target", "")]
    for key, (label, unit) in METRICS.items():
        if all(spreads[name][key] is None for name in spreads):
            continue  # not a figure of this world
        mine = goals.get(key, [])
        rows.append((label, unit, _cell(spreads["handler"][key]), _cell(spreads["baseline"][key]), _cell(ratios[key]),
                     "; ".join(g["target"] for g in mine),
                     " ".join(("met" if g["every_round"] else "met (median)") if g["met"] else "MISSED"
                              for g in mine)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    rounds = result["profile"]["rounds"]
    lines.append(f"{rounds} rounds, the handler's and the baseline's interleaved: each figure is the median of the "
                 "rounds [lowest–highest round]; each ratio the median of the rounds' ratios [lowest–highest].")
    p = result["primitives"]
    if p:
        lines.append(f"bare primitives p50: pika round trip {p['echo']['p50_ms']:.2f} ms + Job create "
                     f"{p['create']['p50_ms']:.2f} ms + watch event {p['watch_event']['p50_ms']:.2f} ms "
                     f"= {p['sum']['p50_ms']:.2f} ms; a pod log read (which the handler's reply needs "
                     f"and the ratio leaves out) {p['log_read']['p50_ms']:.2f} ms")
    for name in ("handler", "baseline"):
        api = result["api"][name]
        lines.append(f"{name}: one start: {_requests(api['start_up'])}")
        if api["inflight"]:
            lines.append(f"{name}: {result['raw'][name]['footprint']['inflight_jobs']} Jobs in flight, start-up "
                         f"included: {_requests(api['inflight'])}")
    world = result["world"]
    if world.get("versions"):
        lines.append("control plane: " + "; ".join(f"{k} {v}" for k, v in world["versions"].items()))
    m = result["machine"]
    lines.append(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}; "
                 f"run took {result['seconds']:.0f} s ({result['command']}); load average "
                 f"{m['load_before'][0]:.2f} before, {m['load_after'][0]:.2f} after, "
                 f"{min(m['load_by_round'], default=0):.2f}–{max(m['load_by_round'], default=0):.2f} at the rounds' "
                 f"starts; CPU probe {m['cpu_probe_ms']} ms")
    return "\n".join(lines)


def _requests(api: dict[str, Any]) -> str:
    counts = api["requests"]
    text = ", ".join(f"{k} {v:g}" for k, v in counts.items() if v and k != "total") + f"; total {counts['total']:g}"
    by_verb = api.get("by_verb")
    if by_verb:
        text += " (API server: " + ", ".join(f"{k} {v:g}" for k, v in by_verb.items()) + ")"
    events = api.get("watch_events")
    if events:
        text += f"; watch events sent {events['total']:g}"
    return text
