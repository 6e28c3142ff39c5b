"""Capacity report for one push pod: CPU per message, admissions, memory, delivery latency.

`python -m bench.capacity` (what `make bench` runs after the micro-benchmarks):

1. starts a private redis-server and one `ordertrack serve` pod on free 127.0.0.1 ports, with
   a freshly generated RS256 key pair (the pod gets the public half as JWT_PUBLIC_KEY);
2. with no connection yet, PUBLISHes steadily (pipelined every 10 ms) to orders nobody
   watches at 5,000 / 20,000 / 40,000 msg/s and reports the pod's CPU at each rate;
3. ramps idle authenticated connections (bench/loadgen.py) to each level (10,000 then 19,500),
   reporting the pod's RSS per connection, (VmRSS now - VmRSS idle) / connections, and
   authenticated connections per second per pod core (connections / pod CPU seconds of the ramp);
4. publishes on `order:tracking:{order_id}` at 2,000 messages/s for 10 s to orders the
   connections watch and reports delivery latency p50/p99/max from PUBLISH to client receive,
   and the pod's CPU while idle and while publishing;
5. floods the watched orders (bench/flood.py: prebuilt PUBLISHes on a raw socket, paced by
   Redis's output buffer for the pod, so the pod always has a backlog to read) with
   `--flood-rounds` messages each and reports watched delivery throughput: messages and frames
   per pod CPU second (= per second at 100 % of one core) over the window from the first
   PUBLISH to the pod's last frame written, the pod's system-time share, and what Redis, the
   load generator and the publisher used of the same cores (`--perf FILE` samples the pod
   with `perf record -g` in that window; `--flood-only` skips steps 2 and 4);
6. stops everything it started, prints a table and writes JSON under artifacts/.

`--quick` (500 connections, 2 s of publishing, 1 s of unwatched traffic at 5,000 msg/s, a
flood of 4 messages per order) is the CI smoke run. Targets reported against (issue 9): <= 6 KB RSS per
connection, p99 <= 1 ms at 2,000 messages/s, < 10 % of a core at 40,000 unwatched msg/s,
>= 5,000 authenticated connections/s and >= 150,000 watched msg/s per pod core. Everything listens on 127.0.0.1
only; the run is bounded by --timeout and cleans up on any exit (children also get SIGTERM
if this process dies).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.lib import (
    REPO,
    bench_message,
    cpu_seconds,
    cpu_times,
    generate_key_pair,
    latency_summary,
    metric_sum,
    order_id,
    percentile,
    pod_command,
    publish_steady,
    rss_kb,
    scrape,
    start_pod,
    start_redis,
    stop_process,
    unwatched_message,
    wait_until,
)
from bench.loadgen import LoadGenerator

log = logging.getLogger("ordertrack.bench.capacity")

TARGET_RSS_PER_CONNECTION_KB = 6.0
TARGET_P99_MS = 1.0
UNWATCHED_RATES = (5_000, 20_000, 40_000)
TARGET_UNWATCHED_CPU_PERCENT_AT_40K = 10.0
TARGET_WATCHED_PER_CORE = 150_000
TARGET_CONNECTIONS_PER_CORE = 5_000
# The pod's own histogram: published_at -> frames written (no client, no loopback hop).
POD_LATENCY = "ordertrack_ws_delivery_latency_seconds"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


class CpuMeter:
    """Percent of one core a process used between start() and stop()."""

    def __init__(self, pid: int):
        self.pid = pid
        self._cpu = 0.0
        self._wall = 0.0

    def start(self) -> None:
        self._cpu = cpu_seconds(self.pid)
        self._wall = time.monotonic()

    def stop(self) -> float:
        wall = time.monotonic() - self._wall
        #: CPU seconds used between start() and stop()
        self.used = cpu_seconds(self.pid) - self._cpu
        return 100.0 * self.used / wall if wall > 0 else math.nan


def rss_per_connection_kb(rss_now_kb: int, rss_idle_kb: int, connections: int) -> float:
    if connections <= 0:
        return math.nan
    return (rss_now_kb - rss_idle_kb) / connections


def histogram_buckets(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of histogram `name` (unlabelled)."""
    buckets: dict[float, float] = {}
    prefix = f'{name}_bucket{{le="'
    for line in text.splitlines():
        if line.startswith(prefix):
            le, _, value = line[len(prefix):].partition('"} ')
            with contextlib.suppress(ValueError):
                buckets[float(le)] = float(value)
    return buckets


GC_PAUSE = "ordertrack_gc_pause_seconds"


def gc_pauses(text: str, generation: int = 2) -> tuple[float, float, dict[float, float]]:
    """(collections, seconds paused, cumulative buckets) of one generation in the pod's
    `ordertrack_gc_pause_seconds`."""
    label = f'generation="{generation}"'
    count = total = 0.0
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if not line.startswith(GC_PAUSE) or label not in line:
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith(GC_PAUSE + "_count"):
            count = float(value)
        elif name.startswith(GC_PAUSE + "_sum"):
            total = float(value)
        elif 'le="' in name:
            le = name.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] = float(value)
    return count, total, buckets


def gc_summary(before: str, after: str) -> dict[str, Any]:
    """Collections of each generation between two scrapes: how many, the pause they added up
    to, and the bucket of the longest (generation 2 is the full collection)."""
    out: dict[str, Any] = {}
    for generation in range(3):
        n0, s0, b0 = gc_pauses(before, generation)
        n1, s1, b1 = gc_pauses(after, generation)
        out[f"gc{generation}"] = {"collections": n1 - n0, "pause_ms": (s1 - s0) * 1e3,
                                  "longest_le_ms": _ms(bucket_quantile(b0, b1, 1.0))}
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float],
                    q: float) -> float | None:
    """Upper bound (the bucket's `le`) of quantile q of the observations between two scrapes."""
    deltas = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not deltas or deltas[-1][1] <= 0:
        return None
    total = deltas[-1][1]
    for le, count in deltas:
        if count >= q * total:
            return le
    return math.inf


def publish(redis_url: str, orders: list[str], rate: float, seconds: float) -> dict[str, Any]:
    """PUBLISH `rate` messages/s for `seconds`, round-robin over `orders`, each stamped with
    the wall-clock time right before its PUBLISH. Per-order seq starts above any earlier run."""
    import redis

    from ordertrack import redis_layout

    client = redis.Redis.from_url(redis_url)
    total = int(rate * seconds)
    seqs: dict[str, int] = {}
    base_seq = int(time.time() * 1000)
    unheard = 0
    started = time.perf_counter()
    started_at = time.time()
    try:
        for n in range(total):
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            order = orders[n % len(orders)]
            seq = seqs[order] = seqs.get(order, base_seq) + 1
            if client.publish(redis_layout.channel(order), bench_message(seq, time.time())) == 0:
                unheard += 1
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    return {"sent": total, "started_at": started_at, "seconds": elapsed, "rate": total / elapsed if elapsed else math.nan,
            "no_subscriber": unheard}


DELIVERED = "ordertrack_ws_updates_delivered_total"


def pod_frames_settle(metrics_port: int, before: float, expected: int,
                      quiet_seconds: float = 2.0, timeout: float = 60.0) -> float:
    """The pod's frames written since `before`, once they reach `expected` or stop growing
    for `quiet_seconds` (a connection closed as a slow consumer gets no more). Polled every
    0.1 s: each /metrics scrape lists the pod's 19,500 fds (prometheus_client's process
    collector), a cost the pod's CPU figure would otherwise carry."""
    written, moved = 0.0, time.monotonic()
    deadline = moved + timeout
    while time.monotonic() < deadline:
        now_written = (metric_sum(scrape(metrics_port), DELIVERED) or 0.0) - before
        if now_written >= expected:
            return now_written
        if now_written > written:
            written, moved = now_written, time.monotonic()
        elif time.monotonic() - moved > quiet_seconds:
            break
        time.sleep(0.1)
    return written


def watched_flood(redis_url: str, orders: list[str], rounds: int, pod_pid: int,
                  metrics_port: int, gen: LoadGenerator, watchers_per_order: int, redis_pid: int,
                  perf_out: Path | None = None) -> dict[str, Any]:
    """Flood the watched orders (bench/flood.py: `rounds` messages per order, as fast as the
    pod reads) and measure the pod over the flood's window, from its first PUBLISH to the
    pod's last frame written (its own frame counter): CPU seconds split into user and system
    time, and what redis-server, the load generator and this publisher used of the same 2
    cores meanwhile. With `perf_out`, `perf record -g` samples the pod in that window."""
    from bench import flood as flooding

    expected = rounds * len(orders) * watchers_per_order
    slices = flooding.commands(orders, rounds, int(time.time() * 1000) + 10**9, time.time())
    others = {"redis_server": [redis_pid], "loadgen": [p.pid for p in gen.processes],
              "publisher": [os.getpid()]}
    frames_before = metric_sum(scrape(metrics_port), DELIVERED) or 0.0
    perf = None
    if perf_out is not None:
        perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-p", str(pod_pid),
                                 "-o", str(perf_out)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # perf attaches
    user0, system0 = cpu_times(pod_pid)
    others0 = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in others.items()}
    wall0 = time.monotonic()
    result = flooding.flood(redis_url, slices, rounds * len(orders))
    written = pod_frames_settle(metrics_port, frames_before, expected)
    wall = time.monotonic() - wall0
    user1, system1 = cpu_times(pod_pid)
    used = {name: sum(cpu_seconds(pid) for pid in pids) - others0[name]
            for name, pids in others.items()}
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        perf.wait(30)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: gen.stats()["updates"] >= expected, 60, "flood deliveries",
                   interval=0.5)
    received = gen.stats(reset=True)["updates"]
    user, system = user1 - user0, system1 - system0
    pod_cpu = user + system
    return {
        "sent": result.sent, "frames_written": written, "received": received,
        "window_seconds": wall, "publish_seconds": result.seconds,
        "publisher_held_back_seconds": result.held_back_seconds,
        "redis_max_omem_bytes": result.max_omem_bytes,
        "pod_cpu_seconds": pod_cpu, "pod_user_seconds": user, "pod_system_seconds": system,
        "pod_cpu_percent": 100.0 * pod_cpu / wall if wall else math.nan,
        "other_cpu_seconds": used,
        "messages_per_core_second": result.sent / pod_cpu if pod_cpu else math.nan,
        "frames_per_core_second": written / pod_cpu if pod_cpu else math.nan,
        "us_per_message": pod_cpu / result.sent * 1e6 if result.sent else math.nan,
        "still_open": gen.stats()["open"],
        "perf_data": str(perf_out) if perf_out else None,
    }


# --- the run -----------------------------------------------------------------------------------


def run(levels: list[int], rate: float, publish_seconds: float, heartbeat_interval: float,
        watchers_per_order: int, settle_seconds: float, concurrency: int = 128,
        unwatched_rates: tuple[int, ...] = UNWATCHED_RATES, unwatched_seconds: float = 3.0,
        flood_rounds: int = 20, perf_out: Path | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "pod": {"command": " ".join(pod_command()), "heartbeat_interval_s": heartbeat_interval},
        "targets": {"rss_per_connection_kb": TARGET_RSS_PER_CONNECTION_KB,
                    "delivery_p99_ms": TARGET_P99_MS},
        "levels": [],
    }
    workdir = Path(tempfile.mkdtemp(prefix="ordertrack-bench-"))
    redis_proc = pod = gen = None
    try:
        private_pem, public_path = generate_key_pair(workdir)
        redis_proc, redis_url = start_redis(workdir)
        top = max(levels)
        pod, port, metrics_port = start_pod(redis_url, public_path, top + 500,
                                            heartbeat_interval, workdir / "pod.log")
        cpu = CpuMeter(pod.pid)
        time.sleep(settle_seconds)
        rss_idle = rss_kb(pod.pid)
        report["pod"]["rss_idle_kb"] = rss_idle
        log.info("pod %d ready on 127.0.0.1:%d, idle RSS %d kB", pod.pid, port, rss_idle)

        report["unwatched"] = []
        for unwatched_rate in unwatched_rates:
            log.info("unwatched traffic at %d msg/s for %.0f s", unwatched_rate, unwatched_seconds)
            cpu.start()
            count = publish_steady(redis_url, unwatched_rate, unwatched_seconds, unwatched_message)
            time.sleep(0.2)  # what is queued is read
            percent = cpu.stop()
            report["unwatched"].append({
                "rate": unwatched_rate, "sent": count, "pod_cpu_percent": percent,
                "us_per_message": cpu.used / count * 1e6})

        gen = LoadGenerator("127.0.0.1", port, private_pem, top,
                            watchers_per_order=watchers_per_order, concurrency=concurrency)
        report["loadgen"] = {"workers": gen.workers, "source_addresses": gen.sources,
                             "concurrency": concurrency}
        for level in levels:
            log.info("ramping to %d connections", level)
            gc_before = scrape(metrics_port)
            cpu.start()
            opened = gen.open(level)
            wait_until(lambda held=opened["open"]: gen.stats()["acks"] >= held, 30,
                       f"connection_ack on {level} connections", interval=0.5)
            ramp_cpu = cpu.stop()
            ramp_cpu_seconds = cpu.used
            ramp_gc = gc_summary(gc_before, scrape(metrics_port))
            newly_open = opened["open"] - (report["levels"][-1]["open"] if report["levels"] else 0)
            time.sleep(settle_seconds)
            cpu.start()
            time.sleep(settle_seconds)
            idle_cpu = cpu.stop()
            held = gen.stats()
            rss_now = rss_kb(pod.pid)
            connect = sorted(opened["connect_times"])
            report["levels"].append({
                "target": level,
                "open": held["open"],
                "acks": held["acks"],
                "failures": opened["failures"],
                "closes": held["closes"],
                "ramp_seconds": opened["elapsed_s"],
                "connect_p50_ms": percentile(connect, 50) * 1e3,
                "connect_p99_ms": percentile(connect, 99) * 1e3,
                "rss_kb": rss_now,
                "rss_per_connection_kb": rss_per_connection_kb(rss_now, rss_idle, held["open"]),
                "ramp_cpu_percent": ramp_cpu,
                "connections_per_core_second": newly_open / ramp_cpu_seconds if ramp_cpu_seconds else math.nan,
                "idle_cpu_percent": idle_cpu,
                "gc": ramp_gc,
                "pod_metric_active_connections": metric_sum(
                    scrape(metrics_port), "ordertrack_ws_active_connections"),
            })

        watched = sorted({order_id(i, watchers_per_order) for i in range(top)})
        if publish_seconds > 0:
            gen.stats(reset=True)
            log.info("publishing %.0f msg/s for %.0f s to %d orders", rate, publish_seconds,
                     len(watched))
            hist_before = histogram_buckets(scrape(metrics_port), POD_LATENCY)
            cpu.start()
            sent = publish(redis_url, watched, rate, publish_seconds)
            expected = sent["sent"] * watchers_per_order
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: gen.stats()["updates"] >= expected, 5, "deliveries", interval=0.2)
            publish_cpu = cpu.stop()
            received = gen.stats(reset=True)
            hist_after = histogram_buckets(scrape(metrics_port), POD_LATENCY)
            pod_side = {f"pod_side_{name}_le_ms": _ms(bucket_quantile(hist_before, hist_after, q))
                        for name, q in (("p50", 0.5), ("p99", 0.99))}
            report["delivery"] = {
                **sent,
                "watchers_per_order": watchers_per_order,
                "expected_deliveries": expected,
                "received": received["updates"],
                **latency_summary(received["latencies"]),
                "slowest": slowest(received["latencies"], sent["started_at"]),
                "pod_cpu_percent": publish_cpu,
                **pod_side,
                "rss_kb_after": rss_kb(pod.pid),
            }
            report["final"] = {"open": received["open"], "closes": received["closes"]}

        log.info("flooding %d watched orders, %d messages each", len(watched), flood_rounds)
        report["watched_throughput"] = watched_flood(
            redis_url, watched, flood_rounds, pod.pid, metrics_port, gen,
            watchers_per_order, redis_proc.pid, perf_out)
    finally:
        if gen is not None:
            gen.close()
        stop_process(pod)
        stop_process(redis_proc)
        shutil.rmtree(workdir, ignore_errors=True)
    report["verdict"] = verdict(report)
    return report


def slowest(samples: list[tuple[float, float]], started_at: float,
            count: int = 20) -> list[dict[str, float]]:
    """The slowest deliveries and when they were sent (ms into the publishing window): stalls
    that recur at a fixed period point at a timer in the pod rather than at the machine."""
    worst = sorted(samples, key=lambda sample: sample[1], reverse=True)[:count]
    return [{"sent_ms": round((sent - started_at) * 1e3, 1), "latency_ms": round(lat * 1e3, 2)}
            for sent, lat in sorted(worst)]


def verdict(report: dict[str, Any]) -> dict[str, bool]:
    per_conn = [lvl["rss_per_connection_kb"] for lvl in report["levels"]]
    delivery = report.get("delivery", {})
    at_40k = [u["pod_cpu_percent"] for u in report.get("unwatched", []) if u["rate"] == 40_000]
    per_core = [lvl["connections_per_core_second"] for lvl in report["levels"]]
    watched = report.get("watched_throughput", {})
    return {
        "rss_per_connection_ok": bool(per_conn) and max(per_conn) <= TARGET_RSS_PER_CONNECTION_KB,
        "delivery_p99_ok": delivery.get("p99_ms", math.inf) <= TARGET_P99_MS,
        "all_delivered": delivery.get("received") == delivery.get("expected_deliveries"),
        "unwatched_cpu_ok": bool(at_40k) and at_40k[0] < TARGET_UNWATCHED_CPU_PERCENT_AT_40K,
        "connections_per_core_ok": bool(per_core) and min(per_core) >= TARGET_CONNECTIONS_PER_CORE,
        "watched_per_core_ok": watched.get("messages_per_core_second", 0) >= TARGET_WATCHED_PER_CORE,
    }


def render(report: dict[str, Any]) -> str:
    """The human-readable table."""
    ok = {True: "ok", False: "MISSED"}
    lines = [
        f"ordertrack push pod capacity ({report['started_at']}, {report['machine']['cpus']} CPUs "
        f"shared, loadgen {report['loadgen']['workers']} processes over "
        f"{len(report['loadgen']['source_addresses'])} source addresses)",
        f"pod idle RSS: {report['pod']['rss_idle_kb'] / 1024:.1f} MB",
        "",
        "unwatched traffic, no connections: "
        + "; ".join(f"{u['rate']:,}/s -> pod CPU {u['pod_cpu_percent']:.1f}% ({u['us_per_message']:.2f} us/msg)"
                    for u in report.get("unwatched", [])),
        "",
        f"{'connections':>11} {'open':>7} {'failed':>6} {'ramp s':>7} {'connect p50/p99 ms':>19} "
        f"{'pod RSS MB':>10} {'RSS/conn KB':>11} {'ramp CPU %':>10} {'conn/s/core':>11} {'idle CPU %':>10}",
    ]
    for lvl in report["levels"]:
        failed = sum(lvl["failures"].values())
        lines.append(
            f"{lvl['target']:>11,} {lvl['open']:>7,} {failed:>6,} {lvl['ramp_seconds']:>7.1f} "
            f"{lvl['connect_p50_ms']:>9.1f}/{lvl['connect_p99_ms']:<9.1f} "
            f"{lvl['rss_kb'] / 1024:>10.1f} {lvl['rss_per_connection_kb']:>11.2f} "
            f"{lvl['ramp_cpu_percent']:>10.0f} {lvl['connections_per_core_second']:>11,.0f} "
            f"{lvl['idle_cpu_percent']:>10.1f}"
        )
        if "gc" in lvl:
            lines.append(f"{'':>11} garbage collections in the ramp (pod): " + "; ".join(
                f"generation {g[2:]}: {c['collections']:.0f}, {c['pause_ms']:.0f} ms in all, "
                f"longest <= {_fmt_ms(c['longest_le_ms'])}" for g, c in lvl["gc"].items()))
    d = report.get("delivery")
    v = report["verdict"]
    lines += [] if d is None else [
        "",
        f"delivery: {d['sent']:,} PUBLISH in {d['seconds']:.1f} s ({d['rate']:,.0f} msg/s) to "
        f"{report['levels'][-1]['open']:,} connections; received {d['received']:,} of "
        f"{d['expected_deliveries']:,}",
        f"  latency PUBLISH -> client receive: p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms, "
        f"max {d['max_ms']:.2f} ms; pod CPU {d['pod_cpu_percent']:.0f}% of one core",
        f"  pod side (its histogram, PUBLISH -> frames written): p50 <= "
        f"{_fmt_ms(d.get('pod_side_p50_le_ms'))}, p99 <= {_fmt_ms(d.get('pod_side_p99_le_ms'))}",
    ]
    w = report.get("watched_throughput")
    if w:
        other = ", ".join(f"{name} {sec:.2f}" for name, sec in w["other_cpu_seconds"].items())
        lines += [
            "",
            f"watched flood: {w['sent']:,} PUBLISH, {w['frames_written']:,.0f} frames written "
            f"(pod counter), {w['received']:,} received; pod {w['pod_cpu_seconds']:.2f} CPU s "
            f"({w['pod_system_seconds'] / w['pod_cpu_seconds']:.0%} system) in "
            f"{w['window_seconds']:.2f} s ({w['pod_cpu_percent']:.0f}% of a core): "
            f"{w['messages_per_core_second']:,.0f} msg/s and {w['frames_per_core_second']:,.0f} "
            f"frames/s per pod core ({w['us_per_message']:.2f} us/msg)",
            f"  same window, CPU s of the others on the 2 cores: {other}; publisher held back "
            f"{w['publisher_held_back_seconds']:.2f} s (Redis's buffer for the pod peaked at "
            f"{w['redis_max_omem_bytes'] / 1e6:.1f} MB)",
        ]
    lines += [
        "",
        f"target RSS/conn <= {TARGET_RSS_PER_CONNECTION_KB:.0f} KB: "
        f"{ok[v['rss_per_connection_ok']]}; target p99 <= {TARGET_P99_MS:.0f} ms: "
        f"{ok[v['delivery_p99_ok']]}; every update delivered: {ok[v['all_delivered']]}",
        f"target < {TARGET_UNWATCHED_CPU_PERCENT_AT_40K:.0f}% CPU at 40K unwatched msg/s: "
        f"{ok[v['unwatched_cpu_ok']]}; >= {TARGET_CONNECTIONS_PER_CORE:,} conn/s/core: "
        f"{ok[v['connections_per_core_ok']]}; >= {TARGET_WATCHED_PER_CORE:,} watched msg/s/core: "
        f"{ok[v['watched_per_core_ok']]}",
    ]
    return "\n".join(lines)


def _fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 500 connections, 2 s of publishing")
    parser.add_argument("--levels", default=None,
                        help="comma-separated connection levels (default 10000,19500)")
    parser.add_argument("--rate", type=float, default=2000.0, help="messages per second")
    parser.add_argument("--publish-seconds", type=float, default=None, help="default 10 (quick: 2)")
    parser.add_argument("--watchers-per-order", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=128,
                        help="handshakes in flight at once, over all loadgen processes")
    parser.add_argument("--heartbeat-interval", type=float, default=30.0,
                        help="the pod's HEARTBEAT_INTERVAL_SECONDS")
    parser.add_argument("--timeout", type=float, default=None,
                        help="abort after this many seconds (default 600, quick: 60)")
    parser.add_argument("--flood-rounds", type=int, default=None,
                        help="messages per watched order in the flood (default 20, quick: 4)")
    parser.add_argument("--flood-only", action="store_true",
                        help="skip the unwatched traffic and the 2,000 msg/s delivery phase")
    parser.add_argument("--perf", type=Path, default=None,
                        help="perf record -g the pod during the flood into this file")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report path (default artifacts/capacity-<time>.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    levels = [int(x) for x in args.levels.split(",")] if args.levels else (
        [500] if args.quick else [10_000, 19_500])
    publish_seconds = 0.0 if args.flood_only else (
        args.publish_seconds or (2.0 if args.quick else 10.0))
    unwatched_rates = () if args.flood_only else (5_000,) if args.quick else UNWATCHED_RATES
    timeout = args.timeout or (60.0 if args.quick else 600.0)
    settle = 0.5 if args.quick else 2.0
    if shutil.which("redis-server") is None:
        print("bench: redis-server not found (make system-deps installs it)", file=sys.stderr)
        return 2

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"bench exceeded --timeout {timeout:.0f}s")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.alarm(int(math.ceil(timeout)))
    try:
        report = run(levels, args.rate, publish_seconds, args.heartbeat_interval,
                     args.watchers_per_order, settle, args.concurrency,
                     unwatched_rates=unwatched_rates,
                     unwatched_seconds=1.0 if args.quick else 3.0,
                     flood_rounds=args.flood_rounds or (4 if args.quick else 20),
                     perf_out=args.perf)
    except (TimeoutError, RuntimeError, OSError) as exc:
        print(f"bench: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
    out = args.out or REPO / "artifacts" / f"capacity-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(render(report))
    print(f"\nJSON report: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
