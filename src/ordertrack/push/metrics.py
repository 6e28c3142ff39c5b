"""The push pod's Prometheus metrics (one name per concept: reasons as in protocol.py)."""

from prometheus_client import Counter, Gauge, Histogram

from ordertrack.telemetry import metrics_registry

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
MESSAGES_IN = Counter(
    "ordertrack_ws_redis_messages_total", "Tracking messages received from Redis",
    registry=REGISTRY,
)
FRAMES_OUT = Counter(
    "ordertrack_ws_updates_delivered_total", "tracking_update frames written to clients",
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "ordertrack_ws_delivery_latency_seconds",
    "From the gateway's PUBLISH (published_at) to the frames being written",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
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
