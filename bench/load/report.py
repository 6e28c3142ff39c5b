"""From the raw results of a load test to report.json, report.md and the PNG plots.

The table is the feature log's ("WebSocket Load Testing Results"), with this machine's targets
and the log's staging figures beside ours; peers side by side with our ratio to each (lower is
better for every figure, so a ratio above 1 is a figure where the peer wins).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
from collections import Counter
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from statistics import median
from typing import Any

from bench import lib
from bench.lib import percentile
from bench.load.profiles import Profile
from bench.load.sampler import cpu_percent, delta, window

TARGETS = {  # this machine, a pod = one process on one core (issue 10)
    "failed_connections": 0,
    "establish_p99_ms": 20.0,
    "delivery_p99_ms": 2.0,
    "heartbeat_p99_ms": 5.0,
    "rss_per_connection_kb": 10.0,  # `make bench`'s target; it measured 7.4 KB at 19,500
}
LOG = {  # the feature log's staging run: 50,000 connections over 2 pods
    "established": "49,847", "failed": "153 (0.3 %)", "establish_p50_ms": 45,
    "establish_p99_ms": 312, "delivery_p50_ms": 3, "delivery_p99_ms": 18,
    "heartbeat_p50_ms": 12, "heartbeat_p99_ms": 48, "heartbeat_timeouts": "247 (0.5 %)",
    "graceful_disconnects": "1,203", "reconnects": "1,189 (98.8 %)",
    "rss_per_connection_kb": "~72", "publish_p99_ms": 1.1,
}
WINDOW_SECONDS = 5.0


# --- pure summaries -----------------------------------------------------------------------------


def pcts(values: list[float]) -> dict[str, float | None]:
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {"count": len(ordered), "p50_ms": percentile(ordered, 50) * 1e3,
            "p99_ms": percentile(ordered, 99) * 1e3, "max_ms": ordered[-1] * 1e3}


def merged(workers: list[dict], key: str) -> list:
    return [item for w in workers for item in w[key]]


def counted(workers: list[dict], key: str) -> dict[str, int]:
    total: Counter = Counter()
    for w in workers:
        total.update(w[key])
    return dict(total)


def windows(samples: list[tuple[float, float]], start: float,
            width: float = WINDOW_SECONDS) -> list[dict[str, float]]:
    """p50/p99 (ms) of (time, seconds) samples per `width`-second window from `start`."""
    buckets: dict[int, list[float]] = {}
    for at, value in samples:
        buckets.setdefault(int((at - start) // width), []).append(value)
    out = []
    for k in sorted(buckets):
        values = sorted(buckets[k])
        out.append({"t": (k + 0.5) * width, "p50_ms": percentile(values, 50) * 1e3,
                    "p99_ms": percentile(values, 99) * 1e3, "count": len(values)})
    return out


def pod_figures(name: str, samples: list[dict], tl: dict, fallback_active: int) -> dict[str, Any]:
    own = [s for s in samples if name in s["pods"]]
    before = [s for s in own if s["t"] < tl["t0"]]
    hold = window(own, tl["hold_start"], tl["hold_end"])
    ramp = window(own, tl["t0"], tl["hold_start"])
    idle = (before or own)[0]["pods"][name]["rss_kb"] if own else None
    actives = [s["pods"][name].get("active") for s in hold]
    actives = [a for a in actives if a is not None]
    active = median(actives) if actives else fallback_active
    rss_hold = median(s["pods"][name]["rss_kb"] for s in hold) if hold else None
    peak = max((s["pods"][name].get("active") or 0 for s in own), default=0) or fallback_active
    return {
        "peak_connections": int(peak),
        "idle_rss_mb": idle / 1024 if idle else None,
        "hold_rss_mb": rss_hold / 1024 if rss_hold else None,
        "rss_per_connection_kb": ((rss_hold - idle) / active
                                  if rss_hold and idle and active else None),
        "ramp_cpu_percent": cpu_percent(ramp, lambda s: s["pods"][name]["cpu_s"]),
        "hold_cpu_percent": cpu_percent(hold, lambda s: s["pods"][name]["cpu_s"]),
        # ms a second its loop thread was runnable but had no CPU (cpu_percent's % -> ms/s)
        "hold_runqueue_ms_per_s": _times10(cpu_percent(hold, lambda s: s["pods"][name].get("runq_s"))),
    }


def _times10(value: float | None) -> float | None:
    return None if value is None else value * 10


def redis_figures(samples: list[dict], tl: dict, feed: dict, hold_seconds: float) -> dict[str, Any]:
    has = [s for s in samples if "redis" in s]
    hold = window(has, tl["hold_start"], tl["hold_end"])
    before = [s for s in has if s["t"] < tl["t0"]] or has[:1]

    def per_second(key: str) -> float | None:
        d = delta(hold, lambda s: s["redis"][key])
        return d[0] / d[1] if d and d[1] > 0 else None

    used_before = before[0]["redis"]["used_memory"] if before else None
    used_hold = hold[-1]["redis"]["used_memory"] if hold else None
    return {
        "hold_cpu_percent": cpu_percent(hold, lambda s: s["redis"]["cpu_seconds"]),
        "used_memory_mb": used_hold / 1e6 if used_hold else None,
        "memory_growth_mb": (used_hold - used_before) / 1e6 if used_hold and used_before else None,
        "messages_per_second": feed["sent"] / hold_seconds,
        "publish_p50_ms": feed["publish_p50_ms"],
        "publish_p99_ms": feed["publish_p99_ms"],
        "net_in_bytes_per_second": per_second("net_in"),
        "net_out_bytes_per_second": per_second("net_out"),
        "commands_per_second": per_second("commands"),
    }


# --- where the time goes (issue 23) -----------------------------------------------------------

PROBE = "ordertrack_ws_latency_probe_seconds"


def probe_buckets(lines: list[str]) -> dict[str, list[tuple[float, float]]]:
    """stage -> [(le, cumulative count)] of the pod's probe histogram lines, +Inf last."""
    out: dict[str, list[tuple[float, float]]] = {}
    for line in lines:
        if not line.startswith(PROBE + "_bucket{"):
            continue
        labels, _, value = line[len(PROBE) + 8:].rpartition("} ")
        fields = dict(item.split("=", 1) for item in labels.split(","))
        stage, le = fields["stage"].strip('"'), fields["le"].strip('"')
        out.setdefault(stage, []).append((math.inf if le == "+Inf" else float(le), float(value)))
    return {stage: sorted(points) for stage, points in out.items()}


def bucket_quantile(points: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile over cumulative (le, count): linear within a bucket."""
    if not points or points[-1][1] <= 0:
        return None
    rank = q * points[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in points:
        if count >= rank:
            if math.isinf(le):
                return lower_le
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return lower_le


def pod_probe(snapshots: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, dict]]:
    """pod -> stage -> {count, p50_ms, p99_ms} over the hold (its end minus its start)."""
    out: dict[str, dict[str, dict]] = {}
    for pod, edges in snapshots.items():
        start, end = probe_buckets(edges.get("hold_start", [])), probe_buckets(edges.get("hold_end", []))
        stages = {}
        for stage, points in end.items():
            before = dict(start.get(stage, []))
            diff = [(le, count - before.get(le, 0.0)) for le, count in points]
            stages[stage] = {"count": int(diff[-1][1]) if diff else 0,
                             "p50_ms": _ms(bucket_quantile(diff, 0.50)),
                             "p99_ms": _ms(bucket_quantile(diff, 0.99))}
        if stages:
            out[pod] = stages
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


#: a delivery sent this long after a /metrics scrape of our pod began counts as in its shadow
SHADOW_SECONDS = 0.02


def scrape_shadow(samples: list[dict], delivery: list[tuple[float, float]]) -> dict[str, Any] | None:
    """How the deliveries sent in the `SHADOW_SECONDS` after a scrape of our pod's /metrics
    fare against the rest (the scrape holds the pod's GIL): their share of all and of the
    tail above the p99, and the p99 inside and outside. None when nothing was scraped."""
    import bisect

    scrapes = sorted(v["scraped_at"] for s in samples for v in s["pods"].values()
                     if "scraped_at" in v)
    if not scrapes or not delivery:
        return None
    cut = percentile(sorted(lat for _, lat in delivery), 99)
    inside, outside = [], []
    for sent, lat in delivery:
        i = bisect.bisect_right(scrapes, sent) - 1
        (inside if i >= 0 and sent - scrapes[i] < SHADOW_SECONDS else outside).append(lat)
    tail_inside = sum(1 for lat in inside if lat > cut)
    tail = tail_inside + sum(1 for lat in outside if lat > cut)
    return {"scrapes": len(scrapes), "shadow_ms": SHADOW_SECONDS * 1e3,
            "share_percent": 100.0 * len(inside) / len(delivery),
            "tail_share_percent": 100.0 * tail_inside / tail if tail else None,
            "p99_inside_ms": pcts(inside)["p99_ms"], "p99_outside_ms": pcts(outside)["p99_ms"]}


def storm_figures(workers: list[dict], tl: dict, profile: Profile) -> dict[str, Any] | None:
    """The storm: cut, back, not back, retries, time until all are back, re-establishment."""
    if profile.storm_at is None:
        return None
    began = tl["hold_start"] + profile.storm_at
    acks = merged(workers, "storm_establish")
    cut = sum(w["storm_cut"] for w in workers)
    return {
        "cut": cut, "back": len(acks),
        "not_back": sum(w["storm_not_back"] for w in workers),
        "retries": sum(w["storm_retries"] for w in workers),
        "spread_seconds": profile.storm_seconds,
        "all_back_seconds": (max(at for at, _ in acks) - began) if acks and len(acks) == cut else None,
        "last_back_seconds": (max(at for at, _ in acks) - began) if acks else None,
        "establish": pcts([took for _, took in acks]),
        "generator_lateness": pcts([late for _, late in merged(workers, "storm_lag")]),
        "failures": counted(workers, "reconnect_failures"),
    }


def summarize(run: dict[str, Any], profile: Profile) -> dict[str, Any]:
    workers, tl = run["workers"], run["timeline"]
    feed = {key: value for key, value in run["feed"].items() if key != "lag"}
    establish = [lat for _, lat in merged(workers, "establish")]
    start_lag = [lag for _, lag in merged(workers, "start_lag")]
    reestablish = [lat for _, lat in merged(workers, "reestablish")]
    delivery = [lat for _, lat in merged(workers, "delivery")]
    heartbeat = [lat for _, lat in merged(workers, "heartbeat")]
    closes = counted(workers, "closes")
    failures = counted(workers, "failures")
    graceful = sum(w["graceful_disconnects"] for w in workers)
    reconnected = sum(w["reconnects_ok"] for w in workers)
    frames = sum(w["frame_bytes"] for w in workers)
    pods = {name: pod_figures(name, run["samples"], tl, len(establish) // len(run["pods"]))
            for name in run["pods"]}
    return {
        "connections": {
            "target": profile.connections, "established": len(establish),
            "failed": sum(failures.values()), "failures": failures,
            "peak_open_on_pods": sum(p["peak_connections"] for p in pods.values()),
            "dropped_unexpectedly": sum(w["dropped"] for w in workers),
            "generator_start_lag_p99_ms": pcts(start_lag)["p99_ms"],
        },
        "generator_lateness": pcts(start_lag),
        "establish": pcts(establish),
        # where an establishment goes: the TCP connect and the upgrade (-> 101), then the
        # server's admission (101 -> connection_ack)
        "establish_upgrade": pcts([up for up, _ in merged(workers, "establish_split")]),
        "establish_admission": pcts([adm for _, adm in merged(workers, "establish_split")]),
        "delivery": {**pcts(delivery), "published": feed["sent"],
                     "received_live": len(delivery),
                     "replayed_on_resume": sum(w["replayed"] for w in workers),
                     "duplicates": sum(w["duplicates"] for w in workers),
                     "gaps": sum(w["gaps"] for w in workers),
                     "publish_errors": feed["errors"], "publish_refused": feed["refused"],
                     "frame_bytes_mean": frames / len(delivery) if delivery else None},
        "heartbeat": {**pcts(heartbeat),
                      "unanswered": sum(w["heartbeats_unanswered"] for w in workers),
                      "timeouts_4000": closes.get("4000", 0)},
        # the hold alone: no upgrades competing for the server's loop (the ramp's are)
        "heartbeat_hold": pcts([rtt for sent, rtt in merged(workers, "heartbeat")
                                if tl["hold_start"] <= sent <= tl["hold_end"]]),
        "reconnect": {"graceful_disconnects": graceful, "reconnected": reconnected,
                      "success_percent": 100.0 * reconnected / graceful if graceful else None,
                      "failures": counted(workers, "reconnect_failures"),
                      **{f"establish_{k}": v for k, v in pcts(reestablish).items()
                         if k != "count"}},
        "server_closes": closes,
        "errors": counted(workers, "errors"),
        "pods": pods,
        "redis": redis_figures(run["samples"], tl, feed, profile.hold_seconds),
        "feed": feed,
        # published, minus what each client got (live or replayed) or was told by its first ack
        # it had missed (published before it connected)
        "lost_updates": max(0, feed["sent"] - sum(w.get("unique", 0) + w.get("acked_seq", 0)
                                                  for w in workers)),
        "generator_loop_lag": pcts([lag for at, lag in merged(workers, "loop_lag")
                                    if tl["hold_start"] <= at <= tl["hold_end"]]),
        "pod_probe": pod_probe(run.get("pod_probe") or {}),
        "delivery_by_path": ({"publish_lua": pcts([x for w in workers
                                                   for x in w["delivery_by_parity"][0]]),
                              "bare_publish": pcts([x for w in workers
                                                    for x in w["delivery_by_parity"][1]])}
                             if feed.get("mode") == "mixed" else None),
        "scrape_shadow": scrape_shadow(run["samples"], [
            d for d in merged(workers, "delivery") if tl["hold_start"] <= d[0] <= tl["hold_end"]]),
        "storm": storm_figures(workers, tl, profile),
        "loadgen": run["loadgen"],
        "load_average_at_start": run.get("load_average"),
    }


def cpu_per_1000_messages(summary: dict[str, Any]) -> float | None:
    """Server CPU (% of one core, all its processes) per 1,000 updates/s published."""
    cpus = [p["hold_cpu_percent"] for p in summary["pods"].values()]
    rate = summary["redis"]["messages_per_second"]
    if not rate or any(c is None for c in cpus):
        return None
    return sum(cpus) / (rate / 1000)


COMPARED = {  # figure: how to read it from a summary (lower is better for all)
    "memory per connection (KB)": lambda s: max(
        (p["rss_per_connection_kb"] for p in s["pods"].values()
         if p["rss_per_connection_kb"] is not None), default=None),
    "establishment p99 (ms)": lambda s: s["establish"]["p99_ms"],
    "delivery p99 (ms)": lambda s: s["delivery"]["p99_ms"],
    "heartbeat p99 (ms)": lambda s: s["heartbeat"]["p99_ms"],
    "CPU per 1,000 messages/s (% of a core)": cpu_per_1000_messages,
    "failed connections": lambda s: s["connections"]["failed"],
}


def ratios(results: dict[str, dict]) -> dict[str, dict[str, Any]]:
    ours = results.get("ordertrack")
    out: dict[str, dict[str, Any]] = {}
    if ours is None:
        return out
    for peer, theirs in results.items():
        if peer == "ordertrack":
            continue
        row = {}
        for figure, get in COMPARED.items():
            a, b = get(ours), get(theirs)
            row[figure] = {"ordertrack": a, peer: b,
                           "ratio": (a / b) if a is not None and b not in (None, 0) else None,
                           "peer_wins": a is not None and b is not None and b < a}
        out[peer] = row
    return out


def capacity_inputs(summary: dict[str, Any], profile: Profile, started_at: str) -> dict[str, Any]:
    """The figures `ordertrack capacity --report` reads (capacity.Measured)."""
    pods = list(summary["pods"].values())
    n = len(pods)
    redis = summary["redis"]
    sent = summary["delivery"]["published"] or 0
    hold = profile.hold_seconds
    per_pod_rate = summary["delivery"]["received_live"] / hold / n
    cpu = [p["hold_cpu_percent"] or 0.0 for p in pods]
    ok = summary["connections"]["failed"] == 0

    def per_update(rate: float | None, divide: float = 1.0) -> float | None:
        return rate * hold / sent / divide if rate is not None and sent else None

    return {
        "pod_idle_rss_kb": sum((p["idle_rss_mb"] or 0) for p in pods) / n * 1024,
        "rss_per_connection_kb": max((p["rss_per_connection_kb"] or 0) for p in pods),
        "pod_cpu_percent_per_1000_deliveries": (sum(cpu) / n) / (per_pod_rate / 1000)
        if per_pod_rate else 0.0,
        "redis_in_bytes_per_update": per_update(redis["net_in_bytes_per_second"]) or 0.0,
        "redis_out_bytes_per_update_per_pod": per_update(redis["net_out_bytes_per_second"], n) or 0.0,
        "redis_memory_bytes_per_order": (redis["memory_growth_mb"] or 0) * 1e6 / profile.connections,
        "redis_cpu_percent_per_1000_updates": (redis["hold_cpu_percent"] or 0)
        / (redis["messages_per_second"] / 1000) if redis["messages_per_second"] else 0.0,
        "client_frame_bytes": summary["delivery"]["frame_bytes_mean"] or 0.0,
        "pod_connections_per_second": (profile.ramp_per_second / n if ok else
                                       summary["connections"]["established"]
                                       / profile.ramp_seconds / n),
        "max_connections_per_pod": 10_000,
        "source": f"bench-load profile {profile.name}, {started_at}, {n} pod(s)",
    }


def verdict(results: dict[str, dict]) -> dict[str, Any]:
    ours = results.get("ordertrack")
    if ours is None:
        return {"ran": False, "targets": {}}
    per_conn = COMPARED["memory per connection (KB)"](ours)

    def within(value: float | None, limit: float) -> bool:
        return value is not None and value <= limit

    return {"ran": ours["connections"]["established"] > 0, "targets": {
        "failed_connections": ours["connections"]["failed"] <= TARGETS["failed_connections"],
        "establish_p99_ms": within(ours["establish"]["p99_ms"], TARGETS["establish_p99_ms"]),
        "delivery_p99_ms": within(ours["delivery"]["p99_ms"], TARGETS["delivery_p99_ms"]),
        "heartbeat_p99_ms": within(ours["heartbeat"]["p99_ms"], TARGETS["heartbeat_p99_ms"]),
        "rss_per_connection_kb": within(per_conn, TARGETS["rss_per_connection_kb"]),
    }}


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "kernel": platform.release()}
    for package in ("picows", "uvloop", "redis", "hiredis", "orjson", "websockets", "matplotlib"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    try:
        out["redis-server"] = subprocess.run(["redis-server", "--version"], capture_output=True,
                                             text=True, timeout=5).stdout.split()[2][2:]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        pass
    return out


def machine() -> dict[str, Any]:
    import resource

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_gb": round(mem_kb / 1024**2, 1),
            "open_files_per_process": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "load_average_at_end": os.getloadavg(),
            "server_cpus": sorted(lib.SERVER_CPUS) if lib.SERVER_CPUS else None}


def tail_lines(path: Path, count: int = 5) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if '"level": "ERROR"' in line or "Traceback" in line][-count:]


def build(profile: Profile, runs: dict[str, dict], extra: dict[str, Any],
          logs: dict[str, list[str]]) -> dict[str, Any]:
    started = dt.datetime.fromtimestamp(
        runs["ordertrack"]["timeline"]["t0"] if "ordertrack" in runs else 0, dt.UTC
    ).isoformat(timespec="seconds")
    results = {name: summarize(run, profile.scaled(run.get("connections")))
               for name, run in runs.items()}
    report = {
        "profile": {**asdict(profile), "ramp_seconds": profile.ramp_seconds,
                    "ramp_down_seconds": profile.ramp_down_seconds,
                    "updates_per_second": profile.updates_per_second,
                    "reconnects": profile.reconnects},
        "started_at": started,
        "machine": machine(),
        "versions": versions(),
        "balancing": ("one pod" if profile.pods == 1 else
                      f"{profile.pods} pods listening on one port with REUSE_PORT (SO_REUSEPORT): "
                      "the kernel hashes each connection's 4-tuple to one of the listeners"),
        "targets": TARGETS,
        "results": results,
        "ratios": ratios(results),
        "artillery": extra.get("artillery"),
        "peers_skipped": extra.get("peers_skipped", {}),
        "peers_capped": extra.get("capped", {}),
        "pod_log_errors": {name: lines for name, lines in logs.items() if lines},
        "verdict": verdict(results),
    }
    if "ordertrack" in results:
        report["capacity_inputs"] = capacity_inputs(results["ordertrack"], profile, started)
    return report


# --- Markdown -----------------------------------------------------------------------------------


def _f(value: Any, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return str(value)


def lateness_sentence(summary: dict[str, Any]) -> str:
    late, gen = summary["generator_lateness"], summary["loadgen"]
    return (f"Generator lateness (open loop: a connection starts at its scheduled time or is "
            f"recorded late): p50 / p99 / max {_f(late['p50_ms'])} / {_f(late['p99_ms'])} / "
            f"{_f(late['max_ms'])} ms over {_f(late['count'])} starts ({gen['processes']} "
            f"processes over {len(gen['source_addresses'])} source addresses).")


def feeder_sentence(feed: dict[str, Any]) -> str:
    late = feed.get("lateness") or {"p50_ms": None, "p99_ms": feed.get("schedule_lag_p99_ms"),
                                    "max_ms": None}
    how = ("one pipeline of publish-Lua calls per round trip" if feed["mode"] == "lua" else
           "one pipeline of PUBLISHes per round trip" if feed["mode"] == "redis-publish" else
           "HTTP POSTs to nchan's publisher")
    per_batch = feed.get("updates_per_batch")
    return (f"Feeder ({how}, {_f(per_batch, 1)} updates per batch on average, "
            f"{_f(feed.get('cpu_percent'), 1)} % of a core): {_f(feed['sent'])} of "
            f"{_f(feed['scheduled'])} scheduled updates published ({_f(feed['errors'])} errors, "
            f"{_f(feed['refused'])} refused) at {_f(feed['rate'], 0)}/s; lateness against its "
            f"schedule p50 / p99 / max {_f(late['p50_ms'])} / {_f(late['p99_ms'])} / "
            f"{_f(late['max_ms'])} ms. A delivery is timed from the feeder's stamp, taken just "
            "before its batch is sent, so a late feeder does not inflate delivery latency; it "
            "shows up here.")


PEER_FEED = {"redis-publish": "PUBLISH order:tracking:{order_id}",
             "nchan-http": "POST to nchan's /pub/{order_id}"}


def peers_section(report: dict[str, Any]) -> list[str]:
    """Every peer's figures beside ours, our ratio to each, and plainly where a peer wins."""
    lines = ["", "## Peers (same scenario, same run, one after another)", ""]
    ratio_rows, results = report["ratios"], report["results"]
    peers = list(ratio_rows)
    for peer, why in report["peers_skipped"].items():
        lines.append(f"- {peer}: skipped, {why}")
    if not peers:
        if not report["peers_skipped"]:
            lines.append("Not run in this profile (`--peers` runs them).")
        return lines
    ours = results["ordertrack"]
    lines += [
        "Each ran the same timeline (ramp, hold, ramp down, heartbeats, graceful reconnects) "
        "on the same orders at one update per connection per interval, fed the way it is "
        "built to be fed: ordertrack through the publish Lua, " + ", ".join(
            f"{peer} by {PEER_FEED.get(results[peer]['feed']['mode'], results[peer]['feed']['mode'])}"
            for peer in peers) + ". The peers do not resume (`last_seq`), so their reconnects "
        "may count gaps; their auth is a shared secret, not an RS256 check.", ""]
    for peer, why in report.get("peers_capped", {}).items():
        lines.append(f"- {peer} ran {why}; per-connection and per-message figures compare, its "
                     "latencies were measured at that lower load.")
    for peer in peers:
        c = results[peer]["connections"]
        if c["failed"]:
            lines.append(
                f"- {peer}: {_f(c['failed'])} of {_f(c['target'])} connections failed "
                f"({c['failures']}; no_ack: upgraded, but no connection_ack within 10 s). Its "
                f"figures are over the {_f(c['established'])} that got in, and its memory per "
                "connection also carries the ones that never got their ack.")
        feed = results[peer]["feed"]
        if feed.get("errors"):
            lines.append(f"- {peer}'s feeder ({feed['mode']}): {_f(feed['errors'])} of "
                         f"{_f(feed['scheduled'])} updates could not be published (the run's "
                         "log has the first errors); they count as neither sent nor received.")
        elif feed["sent"] < feed["scheduled"] or (
                (feed.get("lateness") or {}).get("p99_ms") or 0) > 1_000:
            lines.append(f"- {peer}'s feeder ({feed['mode']}) fell behind: its delivery "
                         "figures start at each update's send stamp, so they do not include "
                         "that lateness.")
    header = "| figure | ordertrack | " + " | ".join(f"{p} | ours / {p}" for p in peers) + " |"
    lines += ["", header, "|---|---|" + "---|---|" * len(peers)]

    def context(label: str, get) -> str:
        return (f"| {label} | {get(ours)} | "
                + " | ".join(f"{get(results[p])} | " for p in peers) + "|")

    lines.append(context("machine load average (1 min) as its run started", lambda r: (
        _f(r.get("load_average_at_start"), 1))))
    lines.append(context("connections established / target", lambda r: (
        f"{_f(r['connections']['established'])} / {_f(r['connections']['target'])}")))
    lines.append(context("updates published / received live (gaps)", lambda r: (
        f"{_f(r['delivery']['published'])} / {_f(r['delivery']['received_live'])} "
        f"({_f(r['delivery']['gaps'])})")))
    lines.append(context("feeder: published of scheduled, lateness p99", lambda r: (
        f"{_f(r['feed']['sent'])} of {_f(r['feed']['scheduled'])}, "
        f"{_f((r['feed'].get('lateness') or {}).get('p99_ms'), 0)} ms")))
    for figure in COMPARED:
        cells = [f"{_f(ratio_rows[p][figure][p])} | {_f(ratio_rows[p][figure]['ratio'])}"
                 + (" (peer wins)" if ratio_rows[p][figure]["peer_wins"] else "") for p in peers]
        lines.append(f"| {figure} | {_f(ratio_rows[peers[0]][figure]['ordertrack'])} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Lower is better for every compared figure: a ratio below 1 is ours ahead, "
              "above 1 the peer ahead. The runs are one after another, so on a shared machine "
              "a p99 carries the machine's load during that run as well (the load average row).",
              ""]
    for peer in peers:
        wins = [f"{figure} ({_f(cell[peer])} against our {_f(cell['ordertrack'])})"
                for figure, cell in ratio_rows[peer].items() if cell["peer_wins"]]
        lines.append(f"- {peer} wins on: {'; '.join(wins)}." if wins
                     else f"- {peer} wins on no compared figure.")
    return lines


def tail_section(report: dict[str, Any]) -> list[str]:
    """Where an update's time goes, stage by stage, for every target (issue 23)."""
    results = report["results"]
    if not results:
        return []
    names = list(results)
    lines = ["", "## Where the time goes (p50 / p99 ms, during the hold)", "",
             "Stages of an update's way, each measured on its own (percentiles do not add up): "
             "the feeder stamps each batch, stages it, writes it (`stamp -> write`) and gets "
             "the reply (`stamp -> reply`: ordertrack's publish Lua, a peer's PUBLISH or "
             "nchan's POST); our pod, for every Nth update (LATENCY_SAMPLE_EVERY), times "
             "`published_at -> read` and `read -> written`, and probes its loop's lag every "
             "50 ms (a timerfd's expiry -> the loop runs it: microseconds); the generator "
             "probes its own loop likewise.", "",
             "| stage | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def pair(d: dict | None) -> str:
        return f"{_f((d or {}).get('p50_ms'))} / {_f((d or {}).get('p99_ms'))}" if d else "n/a"

    def probe(r: dict, stage: str) -> str:
        pods = r.get("pod_probe") or {}
        cells = [pair(stages.get(stage)) for stages in pods.values() if stages.get(stage)]
        return "; ".join(cells) if cells else "n/a"

    rows = [
        ("delivery (stamp -> client receive)", lambda r: pair(r["delivery"])),
        ("feeder: stamp -> batch written", lambda r: pair(r["feed"].get("stamp_to_write"))),
        ("feeder: stamp -> Redis / nchan replied", lambda r: pair(r["feed"].get("stamp_to_reply"))),
        ("pod: published_at -> read (sampled)", lambda r: probe(r, "redis_to_read")),
        ("pod: read -> frames written (sampled)", lambda r: probe(r, "fanout")),
        ("pod: event loop lag (50 ms timerfd probe)", lambda r: probe(r, "loop_lag")),
        ("generator: its own loop lag (50 ms timerfd probe)", lambda r: pair(r.get("generator_loop_lag"))),
        ("server: waited for a CPU, ms per s (main thread, /proc schedstat)", lambda r: "; ".join(
            _f(p.get("hold_runqueue_ms_per_s")) for p in r["pods"].values())),
        ("heartbeat round trip", lambda r: pair(r["heartbeat"])),
        ("heartbeat round trip, the hold only", lambda r: pair(r.get("heartbeat_hold"))),
        ("establishment", lambda r: pair(r["establish"])),
        ("establishment: TCP connect -> 101", lambda r: pair(r.get("establish_upgrade"))),
        ("establishment: 101 -> connection_ack", lambda r: pair(r.get("establish_admission"))),
    ]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(get(results[n]) for n in names) + " |")
    lines += ["", "Updates lost (published, never received live nor replayed): " + ", ".join(
        f"{n} {_f(results[n].get('lost_updates'))}" for n in names) + "."]
    for n in names:
        paths = results[n].get("delivery_by_path")
        if paths:
            lines.append(
                f"- {n}, fed both ways in this run (even orders through the publish Lua, odd "
                f"ones by a bare PUBLISH): delivery p50 / p99 {pair(paths['publish_lua'])} ms "
                f"through the Lua ({_f(paths['publish_lua']['count'])}) against "
                f"{pair(paths['bare_publish'])} ms by PUBLISH ({_f(paths['bare_publish']['count'])}).")
        shadow = results[n].get("scrape_shadow")
        if shadow:
            lines.append(
                f"- {n}: of the deliveries sent within {_f(shadow['shadow_ms'], 0)} ms after "
                f"one of the {shadow['scrapes']} scrapes of its /metrics ({_f(shadow['share_percent'])} % "
                f"of all), p99 {_f(shadow['p99_inside_ms'])} ms against "
                f"{_f(shadow['p99_outside_ms'])} ms for the rest; they are "
                f"{_f(shadow['tail_share_percent'])} % of the deliveries above the p99.")
    return lines


def storm_section(report: dict[str, Any]) -> list[str]:
    results = report["results"]
    storms = {n: r["storm"] for n, r in results.items() if r.get("storm")}
    if not storms:
        return []
    names = list(storms)
    spread = next(iter(storms.values()))["spread_seconds"]
    lines = ["", f"## The storm: every connection cut and back within {_f(spread, 1)} s", "",
             "Each connection is cut without a close frame (a load balancer restart) at its "
             "slot in the storm and reconnects at once, ordertrack with `?last_seq`; a failed "
             "reconnect retries from 0.1 s, doubling. Re-establishment runs from the cut to "
             "the new `connection_ack`, retries included.", "",
             "| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    rows = [
        ("connections open at the storm: cut / back / not back", lambda n, s: (
            f"{_f(s['cut'])} / {_f(s['back'])} / {_f(s['not_back'])}")),
        ("time until all are back (from the storm's start)", lambda n, s: (
            f"{_f(s['all_back_seconds'], 2)} s" if s["all_back_seconds"] is not None
            else f"not all (last at {_f(s['last_back_seconds'], 2)} s)")),
        ("re-establishment p50 / p99 / max", lambda n, s: (
            f"{_f(s['establish']['p50_ms'])} / {_f(s['establish']['p99_ms'])} / "
            f"{_f(s['establish']['max_ms'])} ms")),
        ("reconnect attempts that failed (retried)", lambda n, s: (
            f"{_f(s['retries'])} {s['failures'] or ''}")),
        ("updates lost / duplicated", lambda n, s: (
            f"{_f(results[n]['lost_updates'])} / {_f(results[n]['delivery']['duplicates'])}")),
        ("updates replayed on resume", lambda n, s: _f(results[n]["delivery"]["replayed_on_resume"])),
        ("generator lateness cutting (p99)", lambda n, s: f"{_f(s['generator_lateness']['p99_ms'])} ms"),
    ]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(get(n, storms[n]) for n in names) + " |")
    return lines


def artillery_section(artillery: dict[str, Any] | None, ours: dict[str, Any] | None) -> list[str]:
    """Artillery's own summary beside our generator's figures for the same pod."""
    lines = ["", "## Artillery (the outside tool) beside our generator", ""]
    if not artillery or "skipped" in artillery or "error" in artillery:
        why = (artillery or {}).get("skipped") or (artillery or {}).get("error") or "not run"
        return lines + [f"Not run: {why}."]

    def ms(summary: dict | None) -> str:
        if not summary:
            return "n/a"
        return f"{_f(summary.get('p50'))} / {_f(summary.get('p99'))} ms ({_f(summary.get('count'))})"

    def own(entry: dict) -> str:
        return f"{_f(entry['p50_ms'])} / {_f(entry['p99_ms'])} ms ({_f(entry['count'])})"

    fed = artillery.get("fed") or {}
    c = ours["connections"] if ours else {}
    lines += [
        f"Artillery 2.0.21's WebSocket engine ran {_f(artillery['connections'])} users of its own "
        f"(orders the main run did not use) at {_f(artillery['rate'], 0)}/s against the same "
        f"pod after the main run, each staying {_f(artillery['hold_seconds'], 0)} s and "
        f"heartbeating; once {_f(artillery['connected_when_fed'])} were in, the feeder published "
        f"one update to each order through the publish Lua. Its figures are its own "
        "summaries (sketches), p50 / p99 (count).", "",
        "| figure | our generator | Artillery |", "|---|---|---|",
        f"| connections established / failed | {_f(c.get('established'))} / {_f(c.get('failed'))} | "
        f"{_f(artillery['connections_acked'])} / {_f(artillery['vusers_failed'])} "
        f"(no ack {_f(artillery['no_ack'])}) |",
        f"| establishment (connect -> ack) | {own(ours['establish']) if ours else 'n/a'} | "
        f"{ms(artillery.get('establishment_ms'))} |",
        f"| delivery (publish -> receive) | {own(ours['delivery']) if ours else 'n/a'} | "
        f"{ms(artillery.get('delivery_ms'))} |",
        f"| heartbeat round trip | {own(ours['heartbeat']) if ours else 'n/a'} | "
        f"{ms(artillery.get('heartbeat_rtt_ms'))} |",
        f"| updates published / received | {_f(ours['delivery']['published']) if ours else 'n/a'} / "
        f"{_f(ours['delivery']['received_live']) if ours else 'n/a'} | "
        f"{_f(fed.get('sent'))} / {_f(artillery['updates_received'])} |",
        f"| heartbeats unanswered | {_f(ours['heartbeat']['unanswered']) if ours else 'n/a'} | "
        f"{_f(artillery['heartbeats_unanswered'])} |",
        f"| errors | {ours['errors'] or 'none' if ours else 'n/a'} | "
        f"{artillery['errors'] or 'none'} |",
    ]
    return lines


def markdown(report: dict[str, Any]) -> str:
    p = report["profile"]
    m, v = report["machine"], report["versions"]
    ok = {True: "ok", False: "**MISSED**"}
    lines = [
        f"# Load test `{p['name']}` ({report['started_at']})",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB, "
        f"{m['open_files_per_process']:,} open files per process; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_end'])}. Shared and noisy: the "
        "load generator, the feeder, Redis and the pods share these cores with other work."
        + (f" Pinned: the server under test (ours, each peer) on CPU "
           f"{', '.join(map(str, m['server_cpus']))}, everything else on the others."
           if m.get("server_cpus") else ""),
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        f"Scenario: {p['connections']:,} connections, open-loop ramp at "
        f"{p['ramp_per_second']:,.0f}/s ({p['ramp_seconds']:.0f} s), hold {p['hold_seconds']:.0f} s, "
        f"ramp down at the same rate; one update per connection every {p['update_interval']:g} s "
        f"({p['updates_per_second']:,.0f}/s) through the gateway's publish Lua; client heartbeat "
        f"every {p['heartbeat_interval']:g} s, pod pings every {p['ping_interval']:g} s; "
        f"{p['reconnects']:,} graceful disconnects + reconnects with `?last_seq` over the hold. "
        f"Pods: {report['balancing']}.",
    ]
    results = report["results"]
    ours = results.get("ordertrack")
    if ours:
        c, e, d, h, r = (ours[k] for k in ("connections", "establish", "delivery", "heartbeat",
                                           "reconnect"))
        t = report["verdict"]["targets"]
        per_conn = COMPARED["memory per connection (KB)"](ours)
        lines += [
            "", "## Results (the log's table)", "",
            "| figure | ordertrack | target here | staging log |", "|---|---|---|---|",
            f"| connections established | {_f(c['established'])} of {_f(c['target'])} | | {LOG['established']} of 50,000 |",
            f"| connections failed | {_f(c['failed'])} {c['failures'] or ''} | 0 ({ok[t['failed_connections']]}) | {LOG['failed']} |",
            f"| establishment p50 / p99 (TCP connect -> connection_ack) | {_f(e['p50_ms'])} / {_f(e['p99_ms'])} ms | p99 <= 20 ms ({ok[t['establish_p99_ms']]}) | {LOG['establish_p50_ms']} / {LOG['establish_p99_ms']} ms |",
            f"| delivery p50 / p99 (publish -> client receive) | {_f(d['p50_ms'])} / {_f(d['p99_ms'])} ms (max {_f(d['max_ms'])}) | p99 <= 2 ms ({ok[t['delivery_p99_ms']]}) | {LOG['delivery_p50_ms']} / {LOG['delivery_p99_ms']} ms |",
            f"| updates published / received live / replayed on resume | {_f(d['published'])} / {_f(d['received_live'])} / {_f(d['replayed_on_resume'])} (duplicates {d['duplicates']}, gaps {d['gaps']}) | every one | |",
            f"| heartbeat round trip p50 / p99 | {_f(h['p50_ms'])} / {_f(h['p99_ms'])} ms ({_f(h['count'])} heartbeats) | p99 <= 5 ms ({ok[t['heartbeat_p99_ms']]}) | {LOG['heartbeat_p50_ms']} / {LOG['heartbeat_p99_ms']} ms |",
            f"| heartbeat timeouts (close 4000) | {_f(h['timeouts_4000'])} (unanswered heartbeats {_f(h['unanswered'])}) | 0 | {LOG['heartbeat_timeouts']} |",
            f"| graceful disconnects | {_f(r['graceful_disconnects'])} | | {LOG['graceful_disconnects']} |",
            f"| reconnections (resumed with last_seq) | {_f(r['reconnected'])} ({_f(r['success_percent'], 1)} %), p99 {_f(r['establish_p99_ms'])} ms {r['failures'] or ''} | all | {LOG['reconnects']} |",
            f"| unexpected drops | {_f(c['dropped_unexpectedly'])} | 0 | |",
            f"| RSS per connection (worst pod) | {_f(per_conn)} KB | <= 10 KB ({ok[t['rss_per_connection_kb']]}) | {LOG['rss_per_connection_kb']} KB |",
            "",
            lateness_sentence(ours),
            "", "## Pods", "",
            "| pod | peak connections | idle RSS | RSS in the hold | RSS per connection | CPU ramp | CPU hold |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, pod in ours["pods"].items():
            lines.append(
                f"| {name} | {_f(pod['peak_connections'])} | {_f(pod['idle_rss_mb'], 1)} MB | "
                f"{_f(pod['hold_rss_mb'], 1)} MB | {_f(pod['rss_per_connection_kb'])} KB | "
                f"{_f(pod['ramp_cpu_percent'], 0)} % | {_f(pod['hold_cpu_percent'], 1)} % |")
        rd = ours["redis"]
        lines += [
            "", "## Redis (during the hold)", "",
            "| CPU | memory (growth) | messages/s | publish round trip p50 / p99 (one pipelined batch) | network in / out | commands/s |",
            "|---|---|---|---|---|---|",
            f"| {_f(rd['hold_cpu_percent'], 1)} % | {_f(rd['used_memory_mb'], 1)} MB "
            f"(+{_f(rd['memory_growth_mb'], 1)} MB) | {_f(rd['messages_per_second'], 0)} | "
            f"{_f(rd['publish_p50_ms'])} / {_f(rd['publish_p99_ms'])} ms (log, one call: 0.2 / 1.1) | "
            f"{_f((rd['net_in_bytes_per_second'] or 0) / 1e6)} / "
            f"{_f((rd['net_out_bytes_per_second'] or 0) / 1e6)} MB/s | "
            f"{_f(rd['commands_per_second'], 0)} |",
            "",
            feeder_sentence(ours["feed"]),
        ]
    lines += tail_section(report)
    lines += storm_section(report)
    lines += peers_section(report)
    lines += artillery_section(report["artillery"], ours)
    lines += ["", "## Plots", "",
              "connections.png (connections per pod over time), latency.png (p50/p99 of "
              "establishment, delivery and heartbeat, and how late the generator started "
              "connections and the feeder sent updates, per window of 1/60 of the run), "
              "resources.png (CPU and RSS per pod and Redis).", ""]
    if report["pod_log_errors"]:
        lines += ["## Pod log errors", ""] + [
            f"- {name}: `{line[:300]}`" for name, errs in report["pod_log_errors"].items()
            for line in errs]
    return "\n".join(lines) + "\n"


# --- plots --------------------------------------------------------------------------------------


def plot(runs: dict[str, dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = runs.get("ordertrack")
    if run is None:
        return []
    t0 = run["timeline"]["t0"]
    samples = run["samples"]
    written = []

    def marks(ax):
        for key in ("hold_start", "hold_end"):
            ax.axvline(run["timeline"][key] - t0, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("seconds from the start of the ramp")
        ax.grid(alpha=0.3)

    fig, ax = plt.subplots(figsize=(9, 4))
    for pod in run["pods"]:
        pts = [(s["t"] - t0, s["pods"][pod].get("active")) for s in samples if pod in s["pods"]]
        pts = [(t, a) for t, a in pts if a is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=pod)
    ax.set_ylabel("active connections")
    ax.set_title("connections per pod")
    ax.legend()
    marks(ax)
    fig.tight_layout()
    fig.savefig(out / "connections.png", dpi=90)
    plt.close(fig)
    written.append("connections.png")

    width = max(1.0, (run["timeline"]["end"] - t0) / 60)
    panels = [("establishment (connect -> ack)", merged(run["workers"], "establish")),
              ("delivery (publish -> receive)", merged(run["workers"], "delivery")),
              ("heartbeat round trip", merged(run["workers"], "heartbeat")),
              ("lateness: generator (connection starts) and feeder (updates)", None)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 10), sharex=True)
    for ax, (title, points) in zip(axes, panels, strict=True):
        lines = ([("", points)] if points is not None else
                 [("generator ", merged(run["workers"], "start_lag")),
                  ("feeder ", [tuple(x) for x in run["feed"].get("lag", [])])])
        for prefix, pairs in lines:
            series = windows(pairs, t0, width)
            if series:
                ts = [w["t"] for w in series]
                ax.plot(ts, [w["p50_ms"] for w in series], marker=".", label=f"{prefix}p50")
                ax.plot(ts, [w["p99_ms"] for w in series], marker=".", label=f"{prefix}p99")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.legend()
        marks(ax)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=90)
    plt.close(fig)
    written.append("latency.png")

    fig, (cpu_ax, mem_ax) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    series = {pod: (lambda s, pod=pod: s["pods"].get(pod)) for pod in run["pods"]}
    series["redis"] = lambda s: s.get("redis")
    for name, get in series.items():
        pts = [(s["t"], get(s)) for s in samples if get(s)]
        if len(pts) < 2:
            continue
        cpu = [((b[0] + a[0]) / 2 - t0, 100 * (b[1]["cpu_s"] - a[1]["cpu_s"]) / (b[0] - a[0]))
               for a, b in zip(pts, pts[1:], strict=False) if b[0] > a[0]]
        cpu_ax.plot(*zip(*cpu, strict=True), label=name)
        mem_ax.plot([t - t0 for t, _ in pts], [v["rss_kb"] / 1024 for _, v in pts], label=name)
    cpu_ax.set_ylabel("CPU % of one core")
    mem_ax.set_ylabel("RSS MB")
    for ax in (cpu_ax, mem_ax):
        ax.legend()
        marks(ax)
    fig.tight_layout()
    fig.savefig(out / "resources.png", dpi=90)
    plt.close(fig)
    written.append("resources.png")
    return written


def write(report: dict[str, Any], runs: dict[str, dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report["plots"] = plot(runs, out)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(markdown(report))
