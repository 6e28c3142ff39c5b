"""The push pod's metrics: Prometheus (one name per concept: reasons as in protocol.py) and
the Datadog gauge the feature log's dashboards read."""

import asyncio
import logging
import math
import weakref
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from ordertrack.models import CARRIERS
from ordertrack.push.delivery import LATENCY_BUCKETS
from ordertrack.telemetry import metrics_registry

log = logging.getLogger("ordertrack.push.metrics")

#: one pod per process: its metrics are module-level, on the pod's registry (telemetry.py)
REGISTRY = metrics_registry()

#: the same gauge under the log's Datadog name, sent over DogStatsD when DATADOG_AGENT_HOST is set
DATADOG_ACTIVE_CONNECTIONS = "vantage.ws.order_tracking.active_connections"
ACTIVE_CONNECTIONS = Gauge(
    "ordertrack_ws_active_connections",
    "WebSocket connections open on this pod (HPA target: 7,500 per pod)",
    ["pod", "region", "carrier"],
    registry=REGISTRY,
)
MAX_CONNECTIONS = Gauge(
    "ordertrack_ws_max_connections",
    "MAX_CONNECTIONS_PER_POD: upgrades past it get 503 POD_AT_CAPACITY (the capacity alert's base)",
    registry=REGISTRY,
)
CONNECTIONS_OPENED = Counter(
    "ordertrack_ws_connections_opened_total", "WebSocket upgrades accepted", registry=REGISTRY
)
DISCONNECTS = Counter(
    "ordertrack_ws_disconnects_total", "Connections ended, by reason", ["reason"], registry=REGISTRY
)
REFUSALS = Counter(
    "ordertrack_ws_upgrade_refusals_total", "Upgrades refused, by error code", ["code"],
    registry=REGISTRY,
)
#: by close reason, so "lasted over 5 minutes without an unexpected disconnect" (the rollout's
#: stability criterion) is a query: the 300 s bucket of the unexpected reasons
CONNECTION_DURATION = Histogram(
    "ordertrack_ws_connection_duration_seconds",
    "How long connections stay open, by the reason they ended",
    ["reason"],
    buckets=(60, 300, 900, 1800, 3600, 7200),
    registry=REGISTRY,
)
_DISCONNECTED: dict[str, tuple] = {}


def disconnected(reason: str) -> tuple:
    """(DISCONNECTS, CONNECTION_DURATION) for a close reason, labelled once per reason:
    prometheus_client's `labels()` validates and locks on every call."""
    children = _DISCONNECTED.get(reason)
    if children is None:
        children = _DISCONNECTED[reason] = (DISCONNECTS.labels(reason),
                                            CONNECTION_DURATION.labels(reason))
    return children


SUBSCRIBED = Gauge(
    "ordertrack_ws_redis_subscribed", "1 while the pod's PSUBSCRIBE is live", registry=REGISTRY
)
SUBSCRIPTION_LOST = Counter(
    "ordertrack_ws_redis_subscription_lost_total",
    "Times the live subscription was lost: by an error, or silent beyond "
    "REDIS_SUBSCRIPTION_DEADLINE_SECONDS (the watchdog)",
    ["reason"],
    registry=REGISTRY,
)
CATCHUP_EVENTS = Counter(
    "ordertrack_ws_catchup_events_total", "Events replayed from streams after a Redis outage",
    registry=REGISTRY,
)


class _ReadAtScrape:
    """A collector of figures a pod object counts itself (`watch` names it, held weakly: the
    pod may go), read at scrape time."""

    def __init__(self) -> None:
        self._source: weakref.ref[Any] | None = None

    def watch(self, source) -> None:
        self._source = weakref.ref(source)

    def source(self) -> Any:
        return self._source() if self._source is not None else None


class _RedisMessages(_ReadAtScrape):
    """`ordertrack_ws_redis_messages_total` (every message on `order:tracking:*`) and
    `..._discarded_total` (for orders nobody on this pod watches), read from the broker's
    counters at scrape time: nothing is counted twice on the hot path."""

    def collect(self):
        broker = self.source()
        received = CounterMetricFamily(
            "ordertrack_ws_redis_messages", "Tracking messages received from Redis")
        discarded = CounterMetricFamily(
            "ordertrack_ws_redis_messages_discarded",
            "Tracking messages for orders nobody on this pod watches (read, then dropped)")
        received.add_metric([], broker.received if broker else 0)
        discarded.add_metric([], broker.discarded if broker else 0)
        yield received
        yield discarded


REDIS_MESSAGES = _RedisMessages()
REGISTRY.register(REDIS_MESSAGES)
MALFORMED = Counter(
    "ordertrack_ws_redis_messages_malformed_total",
    "Tracking messages dropped as malformed, by reason (malformed.py)", ["reason"],
    registry=REGISTRY)


class _Delivery(_ReadAtScrape):
    """`ordertrack_ws_updates_delivered_total` and `ordertrack_ws_delivery_latency_seconds`
    (published_at -> frames written, once per message), both read at scrape time from the
    hub's fan-out (push/fanout.py), which counts them in plain counters on the hot path:
    prometheus_client's Counter.inc and Histogram.observe cost ~3 us per message together."""

    def collect(self):
        hub = self.source()
        out = hub.fanout if hub is not None else None
        frames = CounterMetricFamily("ordertrack_ws_updates_delivered",
                                     "tracking_update frames written to clients")
        frames.add_metric([], out.frames if out is not None else 0)
        yield frames
        latency = HistogramMetricFamily(
            "ordertrack_ws_delivery_latency_seconds",
            "From the gateway's PUBLISH (published_at) to the frames being written")
        counts = out.latency_counts() if out is not None else [0] * (len(LATENCY_BUCKETS) + 1)
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        latency.add_metric([], buckets, out.latency_sum if out is not None else 0.0)
        yield latency


DELIVERY = _Delivery()
REGISTRY.register(DELIVERY)


async def datadog_loop(cfg, counts: Callable[[], dict[str, int]]) -> None:
    """The log's `vantage.ws.order_tracking.active_connections` gauge over DogStatsD, every
    DATADOG_INTERVAL_SECONDS; `counts()` gives the pod's connections by carrier."""
    from datadog.dogstatsd import DogStatsd

    statsd = DogStatsd(host=cfg.datadog_agent_host, port=cfg.datadog_agent_port,
                       disable_telemetry=True, origin_detection_enabled=False)
    base_tags = [f"pod:{cfg.pod_name}", f"region:{cfg.region}"]
    while True:
        try:
            for carrier, count in counts().items():
                statsd.gauge(DATADOG_ACTIVE_CONNECTIONS, count, tags=[*base_tags, f"carrier:{carrier}"])
        except OSError as exc:  # the agent is best effort: never let it hurt the pod
            log.warning("datadog agent unreachable: %s", exc)
        await asyncio.sleep(cfg.datadog_interval_seconds)


def connections_by_carrier(by_carrier: dict) -> dict[str, int]:
    """Open connections per carrier label, from the hub's count per `conn.carrier`
    (`unknown` until the ack names it, or for a carrier we do not know)."""
    counts = dict.fromkeys((*CARRIERS, "unknown"), 0)
    for carrier, count in by_carrier.items():
        counts[carrier if carrier in counts else "unknown"] += count
    return counts


def set_active_connections(pod_name: str, region: str, by_carrier: dict) -> None:
    """The ACTIVE_CONNECTIONS gauge, per carrier (the pod's housekeeping sets it)."""
    for carrier, count in connections_by_carrier(by_carrier).items():
        ACTIVE_CONNECTIONS.labels(pod_name, region, carrier).set(count)
