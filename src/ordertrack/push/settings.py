"""The push pod's settings: the log's deploy manifest names, each also a CLI flag."""

from ordertrack.config import (
    JWT,
    LOGGING,
    REDIS,
    REGION,
    Setting,
    boolean,
    csv_list,
    default_pod_name,
    duration,
    non_negative_duration,
    non_negative_int,
    optional_text,
    port,
    positive_int,
    text,
)
from ordertrack.flags.providers import SETTINGS as FLAG_SETTINGS

SETTINGS = REDIS + (
    Setting("HOST", text, "0.0.0.0", "address to listen on"),
    Setting("PORT", port, "8080", "WebSocket port (also /healthz and /readyz)"),
    Setting("REUSE_PORT", boolean, "false", "SO_REUSEPORT: several pods on one host share PORT, the kernel spreads connections"),
    Setting("LISTEN_BACKLOG", positive_int, "16384",
            "the listening socket's accept queue: handshakes the kernel holds while the pod is "
            "busy (a reconnect storm); capped by the host's net.core.somaxconn"),
    Setting("METRICS_PORT", port, "9090", "Prometheus /metrics port (0 disables)"),
    Setting("MAX_CONNECTIONS_PER_POD", positive_int, "10000", "connections this pod accepts before 503 POD_AT_CAPACITY"),
    Setting("MAX_CONNECTIONS_PER_USER", positive_int, "5", "connections one user may hold across the cluster"),
    Setting("HEARTBEAT_INTERVAL_SECONDS", duration, "30", "seconds between pings to each connection"),
    Setting("HEARTBEAT_TIMEOUT_SECONDS", duration, "10", "seconds to wait for a pong before closing 4000"),
    Setting("REDIS_SUBSCRIBE_TIMEOUT_SECONDS", duration, "5", "seconds a new connection waits for a live subscription before 4002"),
    Setting("REDIS_SUBSCRIPTION_DEADLINE_SECONDS", duration, "15",
            "silence on the Redis subscription (no update, control message or the pod's own "
            "probe, published every third of it) after which it counts as lost: /readyz 503, "
            "resubscribe, catch up"),
    Setting("DRAIN_SECONDS", non_negative_duration, "10", "seconds over which SIGTERM closes connections with 1001"),
    Setting("WS_MAX_PENDING_BYTES", positive_int, "262144", "unsent bytes after which a slow client is closed with 1013"),
    Setting("ALLOWED_ORIGINS", csv_list, "", "comma-separated Origins allowed to upgrade (empty: any)"),
    Setting("DATADOG_AGENT_HOST", optional_text, None,
            "DogStatsD agent host; when set, the active-connections gauge is sent there too"),
    Setting("DATADOG_AGENT_PORT", port, "8125", "DogStatsD agent UDP port"),
    Setting("DATADOG_INTERVAL_SECONDS", duration, "10", "seconds between DogStatsD gauge updates"),
    Setting("POD_LEASE_SECONDS", duration, "15",
            "this pod's liveness lease in ws:pods, renewed every third of it; a crashed pod's "
            "registry slots stop counting once it runs out"),
    Setting("POD_NAME", text, default_pod_name(), "this pod's name in logs, metrics and the user registry"),
    Setting("LATENCY_SAMPLE_EVERY", non_negative_int, "0",
            "time every Nth update through the pod and probe the loop's lag "
            "(ordertrack_ws_latency_probe_seconds{stage}; 0: off)"),
) + REGION + JWT + LOGGING + FLAG_SETTINGS
