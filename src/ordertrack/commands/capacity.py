"""`ordertrack capacity`: measured figures -> how many pods, how much memory, what Redis carries.

The figures come from the `report.json` a load test wrote (`make bench-load`), so a planner
reruns the load test on their hardware and then this. The arithmetic is pure (`plan`) and
checked against the feature log's own numbers (tests/test_capacity.py).

With `--pubsub-mode pattern|sharded` (PUBSUB_MODE) it also plans the fan-out through Redis:
Redis masters, sends/s in all and per master, network per master, each pod's messages read
and their CPU, and which mode to run (`pubsub_plan`, `recommend_mode`).

Example:

    ordertrack capacity --report bench/reports/pod/report.json \\
        --connections 100000 --updates-per-second 3334 --orders-per-carrier dhl=20000,fedex=50000,ups=5000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ordertrack.config import ConfigError

#: the log's HPA target: scale at 75 % of MAX_CONNECTIONS_PER_POD (7,500 of 10,000)
TARGET_UTILIZATION = 0.75
#: the log's update cadence per watched order (one update per connection every 30 s)
UPDATE_INTERVAL_SECONDS = 30.0
#: memory limit over the memory needed at the pod's connection limit: the log's staging pod
#: used 1.8 GB at 25,000 connections and the log recommends a 4 GB limit (x2.2); we keep x2
LIMIT_HEADROOM = 2.0
#: tracking-client.js reconnects 1 s after a drop plus up to 30 % jitter: the clients of a lost
#: pod all come back inside that 0.3 s window
RECONNECT_WINDOW_SECONDS = 0.3
MIB = 1024 * 1024
#: messages/s one Redis master delivers to subscribers (Centrifugo's 2026 measurement, quoted
#: by issue 22; `--redis-master-sends-per-second` for your own); planned at REDIS_HEADROOM of it
REDIS_MASTER_SENDS_PER_SECOND = 650_000.0
REDIS_HEADROOM = 0.5
#: the pod's cost to read one message off its subscription (Cython reader, ~0.83-1.08 us per
#: unwatched message measured in BENCHMARKS.md, "Pub/sub reader and fan-out")
POD_READ_US_PER_MESSAGE = 1.0
#: pattern mode while every pod reads every message for at most this much of its core, and its
#: sends need no more masters than sharded mode would
PATTERN_READ_CPU_LIMIT_PERCENT = 10.0
PATTERN = "pattern"
SHARDED = "sharded"


@dataclass(frozen=True)
class Measured:
    """What a load test measured (report.json's `capacity_inputs`)."""

    pod_idle_rss_kb: float
    rss_per_connection_kb: float
    #: one pod's CPU (% of one core) per 1,000 updates/s it writes to its clients
    pod_cpu_percent_per_1000_deliveries: float
    #: bytes Redis reads per published update (the gateway's EVALSHA), and writes per update
    #: per subscribed pod
    redis_in_bytes_per_update: float
    redis_out_bytes_per_update_per_pod: float
    #: Redis memory per order with an update stream (state hash + bounded stream)
    redis_memory_bytes_per_order: float
    redis_cpu_percent_per_1000_updates: float
    #: bytes of one tracking_update frame on the client's socket
    client_frame_bytes: float
    #: new connections/s one pod took with 0 failures and establishment p99 within target
    pod_connections_per_second: float
    max_connections_per_pod: int = 10_000
    source: str = ""
    #: see the constants above (a report may carry its own)
    pod_read_us_per_message: float = POD_READ_US_PER_MESSAGE
    redis_master_sends_per_second: float = REDIS_MASTER_SENDS_PER_SECOND

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> Measured:
        try:
            inputs = report["capacity_inputs"]
            fields = {name: inputs[name] for name in cls.__dataclass_fields__ if name in inputs}
            return cls(**fields)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"the report has no usable capacity_inputs ({exc})") from None


@dataclass(frozen=True)
class Plan:
    connections: int
    updates_per_second: float
    max_connections_per_pod: int
    target_utilization: float
    connections_per_pod_at_target: int
    pods: int
    connections_per_pod: float
    memory_request_mib: int
    memory_limit_mib: int
    pod_cpu_percent: float
    redis_updates_per_second: float
    redis_ingress_bytes_per_second: float
    redis_egress_bytes_per_second: float
    redis_memory_mib: float
    redis_cpu_percent: float
    client_egress_bytes_per_second: float
    storm_connections: float
    #: None with one pod: nobody is left to absorb them
    storm_connections_per_second_per_pod: float | None
    storm_fits_measured_rate: bool
    survivors_connections_per_pod: float | None
    survivors_within_limit: bool
    poll_period_seconds: dict[str, float]


def updates_per_second(connections: int, interval: float = UPDATE_INTERVAL_SECONDS) -> float:
    """One update per watcher every `interval` (the log: 49,847 / 30 s = 1,661 messages/s)."""
    return connections / interval


def pods_needed(connections: int, max_per_pod: int, utilization: float = TARGET_UTILIZATION) -> int:
    """Pods so that each holds at most `utilization` of its limit (at least one)."""
    per_pod = math.floor(max_per_pod * utilization)
    if per_pod <= 0:
        raise ValueError("max connections per pod x utilization must be at least 1")
    return max(1, math.ceil(connections / per_pod))


def pod_memory_mib(measured: Measured, connections: float) -> float:
    return (measured.pod_idle_rss_kb + measured.rss_per_connection_kb * connections) / 1024


def poll_periods(orders_per_carrier: dict[str, int]) -> dict[str, float]:
    """Seconds between two polls of one order under the quotas and intervals the gateway
    defaults to (its settings), per carrier: the scheduler's own arithmetic."""
    from ordertrack.gateway import settings as gateway_settings
    from ordertrack.gateway.carriers.dhl import DhlClient
    from ordertrack.gateway.carriers.fedex import FedexClient
    from ordertrack.gateway.carriers.ups import UpsClient
    from ordertrack.gateway.quota import carrier_limits, hourly_rate
    from ordertrack.gateway.scheduler import effective_period

    defaults = {s.env: s.default for s in gateway_settings.SETTINGS}
    limits = carrier_limits(int(defaults["DHL_QUOTA_PER_HOUR"]),
                            int(defaults["DHL_BURST_PER_MINUTE"]),
                            int(defaults["FEDEX_QUOTA_PER_HOUR"]),
                            int(defaults["UPS_QUOTA_PER_HOUR"]))
    batch = {"dhl": DhlClient.batch_size, "fedex": FedexClient.batch_size,
             "ups": UpsClient.batch_size}
    out = {}
    for carrier, orders in orders_per_carrier.items():
        if carrier not in limits:
            raise ValueError(f"unknown carrier {carrier!r} (dhl, fedex, ups)")
        interval = float(defaults[f"{carrier.upper()}_POLL_INTERVAL_SECONDS"])
        out[carrier] = effective_period(orders, interval, hourly_rate(limits[carrier]),
                                        batch[carrier])
    return out


def plan(measured: Measured, connections: int, updates: float | None = None, *,
         max_per_pod: int | None = None, utilization: float = TARGET_UTILIZATION,
         watchers_per_order: float = 1.0, orders_per_carrier: dict[str, int] | None = None,
         reconnect_window: float = RECONNECT_WINDOW_SECONDS) -> Plan:
    """The whole plan for `connections` watchers and `updates` published updates/s."""
    if connections <= 0:
        raise ValueError("connections must be positive")
    limit = max_per_pod or measured.max_connections_per_pod
    rate = updates_per_second(connections) if updates is None else updates
    pods = pods_needed(connections, limit, utilization)
    per_pod = connections / pods
    at_target = math.floor(limit * utilization)
    deliveries_per_pod = rate * watchers_per_order / pods
    # losing one pod: its clients come back within the reconnect window, spread on the others
    lost = per_pod
    survivors = pods - 1
    storm_per_pod = lost / reconnect_window / survivors if survivors else None
    survivors_per_pod = connections / survivors if survivors else None
    orders = connections / watchers_per_order
    return Plan(
        connections=connections,
        updates_per_second=rate,
        max_connections_per_pod=limit,
        target_utilization=utilization,
        connections_per_pod_at_target=at_target,
        pods=pods,
        connections_per_pod=per_pod,
        memory_request_mib=math.ceil(pod_memory_mib(measured, at_target)),
        memory_limit_mib=math.ceil(pod_memory_mib(measured, limit) * LIMIT_HEADROOM),
        pod_cpu_percent=measured.pod_cpu_percent_per_1000_deliveries * deliveries_per_pod / 1000,
        redis_updates_per_second=rate,
        redis_ingress_bytes_per_second=rate * measured.redis_in_bytes_per_update,
        # every pod PSUBSCRIBEs order:tracking:*, so every update goes to every pod
        redis_egress_bytes_per_second=rate * measured.redis_out_bytes_per_update_per_pod * pods,
        redis_memory_mib=orders * measured.redis_memory_bytes_per_order / MIB,
        redis_cpu_percent=measured.redis_cpu_percent_per_1000_updates * rate / 1000,
        client_egress_bytes_per_second=rate * watchers_per_order * measured.client_frame_bytes,
        storm_connections=lost,
        storm_connections_per_second_per_pod=storm_per_pod,
        storm_fits_measured_rate=(storm_per_pod is not None
                                  and storm_per_pod <= measured.pod_connections_per_second),
        survivors_connections_per_pod=survivors_per_pod,
        survivors_within_limit=survivors_per_pod is not None and survivors_per_pod <= limit,
        poll_period_seconds=poll_periods(orders_per_carrier or {}),
    )


# --- the fan-out through Redis, per PUBSUB_MODE -------------------------------------------------


@dataclass(frozen=True)
class PubSubPlan:
    mode: str
    #: masters for the sends (and, on a cluster, every master handles every classic PUBLISH
    #: over the bus in pattern mode) and for the publish scripts' writes; None: none suffices
    redis_masters: int | None
    redis_sends_per_second: float
    redis_sends_per_second_per_master: float | None
    redis_network_out_bytes_per_second_per_master: float | None
    #: pattern mode on a cluster: every PUBLISH crosses the bus to every node
    cluster_bus_messages_per_second_per_master: float
    pod_messages_read_per_second: float
    pod_read_cpu_percent: float
    pods_per_order: float


def pods_per_order(pods: int, watchers_per_order: float) -> float:
    """Expected pods holding a watcher of an order, watchers spread at random over the pods."""
    if pods <= 1:
        return 1.0
    return pods * (1 - (1 - 1 / pods) ** watchers_per_order)


def pubsub_plan(measured: Measured, mode: str, rate: float, pods: int,
                watchers_per_order: float = 1.0) -> PubSubPlan:
    """Redis's and the pods' share of fanning `rate` updates/s out to `pods` pods.

    pattern: each pod PSUBSCRIBEs everything: Redis sends every update once per pod and every
    pod reads every update; on a cluster each PUBLISH also reaches every node over the bus, so
    every master handles every update whatever their number. sharded: an update goes only to
    the pods watching its order, from the one master that owns its slot."""
    budget = measured.redis_master_sends_per_second * REDIS_HEADROOM
    # the publish scripts' writes (XADD + HSET), from the measured Redis CPU per update
    writes_masters = math.ceil(measured.redis_cpu_percent_per_1000_updates * rate / 1000
                               / (100 * REDIS_HEADROOM)) or 1
    if mode == PATTERN:
        sends = rate * pods
        read = rate
        spread = 1.0
        bus = rate
        # each master: the bus's copy of every update plus its subscribers' share of the sends
        feasible = bus < budget
        masters = max(writes_masters, math.ceil(sends / (budget - bus))) if feasible else None
    elif mode == SHARDED:
        spread = pods_per_order(pods, watchers_per_order)
        sends = rate * spread
        read = sends / pods
        bus = 0.0
        masters = max(writes_masters, math.ceil(sends / budget) or 1)
    else:
        raise ValueError(f"unknown PUBSUB_MODE {mode!r} (pattern, sharded)")
    per_master = sends / masters if masters else None
    return PubSubPlan(
        mode=mode, redis_masters=masters, redis_sends_per_second=sends,
        redis_sends_per_second_per_master=per_master,
        redis_network_out_bytes_per_second_per_master=(
            per_master * measured.redis_out_bytes_per_update_per_pod if per_master else None),
        cluster_bus_messages_per_second_per_master=bus,
        pod_messages_read_per_second=read,
        pod_read_cpu_percent=read * measured.pod_read_us_per_message / 1e6 * 100,
        pods_per_order=spread,
    )


def recommend_mode(pattern: PubSubPlan, sharded: PubSubPlan) -> tuple[str, str]:
    """pattern (no subscribe round trip, nothing to track) while it costs no more masters than
    sharded and each pod reads everything cheaply; sharded beyond."""
    if pattern.redis_masters is None:
        return SHARDED, ("pattern cannot: every master would handle every update over the "
                         "cluster bus, beyond one master's budget")
    if pattern.redis_masters > sharded.redis_masters:
        return SHARDED, (f"pattern needs {pattern.redis_masters:,} Redis masters for its sends, "
                         f"sharded {sharded.redis_masters:,}")
    if pattern.pod_read_cpu_percent > PATTERN_READ_CPU_LIMIT_PERCENT:
        return SHARDED, (f"every pod would spend {pattern.pod_read_cpu_percent:.0f} % of its core "
                         f"reading every update")
    return PATTERN, "the same Redis masters, and every pod reads every update cheaply"


# --- output -------------------------------------------------------------------------------------


def _bytes_rate(value: float) -> str:
    return f"{value / MIB:,.2f} MiB/s"


def format_period(seconds: float) -> str:
    """A poll period as a person reads it: `90 s`, `3.5 min`, `2.1 h`."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def markdown(p: Plan, measured: Measured) -> str:
    yes = {True: "yes", False: "NO"}
    rows = [
        ("concurrent watchers", f"{p.connections:,}"),
        ("updates/s published", f"{p.updates_per_second:,.0f}"),
        ("pods", f"{p.pods:,} ({p.connections_per_pod:,.0f} connections each; target "
                 f"{p.connections_per_pod_at_target:,} = {p.target_utilization:.0%} of "
                 f"{p.max_connections_per_pod:,})"),
        ("pod memory request / limit", f"{p.memory_request_mib:,} MiB / {p.memory_limit_mib:,} MiB"),
        ("pod CPU (fan-out)", f"{p.pod_cpu_percent:.1f} % of one core"),
        ("Redis messages/s", f"{p.redis_updates_per_second:,.0f}"),
        ("Redis network in / out", f"{_bytes_rate(p.redis_ingress_bytes_per_second)} / "
                                   f"{_bytes_rate(p.redis_egress_bytes_per_second)}"),
        ("Redis memory (state + streams)", f"{p.redis_memory_mib:,.1f} MiB"),
        ("Redis CPU", f"{p.redis_cpu_percent:.1f} % of one core"),
        ("pods -> clients", _bytes_rate(p.client_egress_bytes_per_second)),
    ]
    if p.storm_connections_per_second_per_pod is None:
        rows.append(("losing one pod", "NO survivor: one pod is a single point of failure"))
    else:
        rows += [
            ("losing one pod", f"{p.storm_connections:,.0f} clients reconnect within "
                               f"{RECONNECT_WINDOW_SECONDS:g} s: "
                               f"{p.storm_connections_per_second_per_pod:,.0f} connections/s per "
                               f"surviving pod (measured: {measured.pod_connections_per_second:,.0f}"
                               f"/s without failures: {yes[p.storm_fits_measured_rate]})"),
            ("after losing one pod", f"{p.survivors_connections_per_pod:,.0f} connections per pod "
                                     f"(within the limit: {yes[p.survivors_within_limit]})"),
        ]
    rows += [(f"{carrier} poll period", format_period(seconds))
             for carrier, seconds in p.poll_period_seconds.items()]
    lines = ["| figure | plan |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    if measured.source:
        lines.append(f"\nMeasured figures from: {measured.source}")
    return "\n".join(lines)


def pubsub_markdown(p: PubSubPlan, recommended: tuple[str, str]) -> str:
    def masters(value) -> str:
        return f"{value:,}" if value is not None else "none suffices"

    rows = [
        ("PUBSUB_MODE", p.mode),
        ("Redis masters", masters(p.redis_masters)),
        ("Redis sends/s (all masters)", f"{p.redis_sends_per_second:,.0f}"),
        ("Redis sends/s per master", f"{p.redis_sends_per_second_per_master:,.0f}"
         if p.redis_sends_per_second_per_master is not None else "-"),
        ("Redis network out per master", _bytes_rate(p.redis_network_out_bytes_per_second_per_master)
         if p.redis_network_out_bytes_per_second_per_master is not None else "-"),
        ("cluster bus: updates each master handles/s", f"{p.cluster_bus_messages_per_second_per_master:,.0f}"),
        ("messages each pod reads/s", f"{p.pod_messages_read_per_second:,.0f}"),
        ("each pod's CPU for reading them", f"{p.pod_read_cpu_percent:.1f} % of one core"),
        ("mode to run", f"{recommended[0]} ({recommended[1]})"),
    ]
    return "\n".join(["| fan-out | plan |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def parse_orders_per_carrier(text: str | None) -> dict[str, int]:
    """`dhl=2000,fedex=500` -> {"dhl": 2000, "fedex": 500}."""
    out: dict[str, int] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        carrier, sep, count = part.partition("=")
        if not sep or not count.strip().isdigit():
            raise ValueError(f"expected carrier=N, got {part.strip()!r}")
        out[carrier.strip().lower()] = int(count)
    return out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.epilog = "example:\n  " + __doc__.split("Example:\n\n")[1].strip()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--report", type=Path, required=True,
                        help="report.json written by `make bench-load`")
    parser.add_argument("--connections", type=int, required=True, help="concurrent watchers")
    parser.add_argument("--updates-per-second", type=float, default=None,
                        help=f"published updates/s (default: connections / {UPDATE_INTERVAL_SECONDS:g} s)")
    parser.add_argument("--orders-per-carrier", default=None, metavar="dhl=N,fedex=N,ups=N",
                        help="active orders per carrier, for the poller's effective poll period")
    parser.add_argument("--max-connections-per-pod", type=int, default=None,
                        help="MAX_CONNECTIONS_PER_POD (default: the report's, else 10000)")
    parser.add_argument("--target-utilization", type=float, default=TARGET_UTILIZATION,
                        help="fraction of the limit the HPA scales at (default 0.75)")
    parser.add_argument("--watchers-per-order", type=float, default=1.0)
    parser.add_argument("--pubsub-mode", choices=(PATTERN, SHARDED), default=PATTERN,
                        help="PUBSUB_MODE to plan the Redis fan-out for (default pattern)")
    parser.add_argument("--redis-master-sends-per-second", type=float, default=None,
                        help=f"messages/s one Redis master delivers (default "
                             f"{REDIS_MASTER_SENDS_PER_SECOND:,.0f}; planned at half of it)")
    parser.add_argument("--json", action="store_true", help="print only the JSON")


def run(args: argparse.Namespace) -> int:
    try:
        report = json.loads(args.report.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read --report {args.report}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"--report {args.report} is not JSON: {exc}") from None
    measured = Measured.from_report(report)
    if args.redis_master_sends_per_second:
        from dataclasses import replace

        measured = replace(measured, redis_master_sends_per_second=args.redis_master_sends_per_second)
    if not 0 < args.target_utilization <= 1:
        raise ConfigError("--target-utilization must be in (0, 1]")
    try:
        result = plan(measured, args.connections, args.updates_per_second,
                      max_per_pod=args.max_connections_per_pod,
                      utilization=args.target_utilization,
                      watchers_per_order=args.watchers_per_order,
                      orders_per_carrier=parse_orders_per_carrier(args.orders_per_carrier))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    fanout = {mode: pubsub_plan(measured, mode, result.updates_per_second, result.pods,
                                args.watchers_per_order) for mode in (PATTERN, SHARDED)}
    recommended = recommend_mode(fanout[PATTERN], fanout[SHARDED])
    chosen = fanout[args.pubsub_mode]
    document = {"plan": asdict(result), "pubsub": asdict(chosen),
                "recommended_mode": {"mode": recommended[0], "why": recommended[1]},
                "measured": asdict(measured)}
    encoded = json.dumps(document, indent=2)
    text = encoded if args.json else (f"{markdown(result, measured)}\n\n"
                                      f"{pubsub_markdown(chosen, recommended)}\n\n"
                                      f"```json\n{encoded}\n```")

    sys.stdout.write(text + "\n")
    return 0
