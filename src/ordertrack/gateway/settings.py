"""`ordertrack poll` settings: each an environment variable and a CLI flag (config.py)."""

from __future__ import annotations

from ordertrack.config import (
    DHL_WEBHOOK,
    LOGGING,
    REDIS,
    STORE,
    UPS_WEBHOOK,
    Setting,
    default_pod_name,
    duration,
    http_url,
    optional_text,
    port,
    positive_int,
    text,
)


def polled_carrier(name: str, label: str, poll_every: str, per_hour: str,
                   credentials: tuple[Setting, ...]) -> tuple[Setting, ...]:
    """A carrier's settings, named `{name}_...`: where its API is, who we are to it, how often
    an order is polled and how many requests an hour the replicas may make together."""
    return (
        Setting(f"{name}_API_URL", http_url, None, f"{label} base URL; unset: {label} is not polled"),
        *credentials,
        Setting(f"{name}_POLL_INTERVAL_SECONDS", duration, poll_every,
                f"shortest re-poll period of a {label} order"),
        Setting(f"{name}_QUOTA_PER_HOUR", positive_int, per_hour,
                f"{label} requests per hour, all replicas"),
    )


def oauth(name: str, label: str) -> tuple[Setting, ...]:
    return (Setting(f"{name}_CLIENT_ID", optional_text, None, f"{label} OAuth client id"),
            Setting(f"{name}_CLIENT_SECRET", optional_text, None, f"{label} OAuth client secret"))


DHL = polled_carrier("DHL", "DHL", "60", "2000", (
    Setting("DHL_API_KEY", optional_text, None, "DHL-API-Key header value"),
)) + (Setting("DHL_BURST_PER_MINUTE", positive_int, "100", "DHL requests per minute, all replicas"),)
FEDEX = polled_carrier("FEDEX", "FedEx", "90", "1000", oauth("FEDEX", "FedEx"))
UPS = polled_carrier("UPS", "UPS", "120", "500", oauth("UPS", "UPS"))

#: carrier push subscriptions (UPS Track Alert, DHL push) and how polling backs off for them
PUSH_SUBSCRIPTIONS = (
    Setting("UPS_WEBHOOK_URL", http_url, None,
            "our UPS webhook (ordertrack ingest); set: active UPS orders get Track Alert "
            "subscriptions, renewed before their 14 days end"),
    Setting("DHL_WEBHOOK_URL", http_url, None,
            "our DHL webhook (ordertrack ingest); set: active DHL orders get push subscriptions"),
    Setting("SUBSCRIPTION_RENEW_BEFORE_SECONDS", duration, "172800",
            "renew a UPS Track Alert subscription this long before it ends"),
    Setting("PUSH_SAFETY_NET_SECONDS", duration, "1800",
            "an order its carrier pushed within this long is polled only this often"),
)
#: an order whose carrier keeps failing: when to alert, and where
FAILURE_ALERTS = (
    Setting("FAILURE_ALERT_THRESHOLD", positive_int, "10",
            "alert and flag an order after MORE than this many consecutive failures"),
    Setting("PAGERDUTY_ROUTING_KEY", optional_text, None,
            "PagerDuty Events API v2 routing key; unset: alerts are logged"),
    Setting("PAGERDUTY_EVENTS_URL", http_url, "https://events.pagerduty.com/v2/enqueue",
            "PagerDuty Events API v2 endpoint"),
)
#: the replica itself: its name, how often it re-reads its work, its metrics endpoint
REPLICA = (
    Setting("REPLICA_NAME", text, default_pod_name(), "this replica's name in claims and alerts"),
    Setting("ORDERS_REFRESH_SECONDS", duration, "15", "how often the active orders are re-read from the store"),
    Setting("CARRIER_RETRY_BASE_SECONDS", duration, "0.5", "first retry backoff of a carrier request"),
    Setting("GATEWAY_METRICS_HOST", text, "0.0.0.0", "address the /metrics server listens on"),
    Setting("GATEWAY_METRICS_PORT", port, "9091", "Prometheus /metrics port (0: not served)"),
)

SETTINGS: tuple[Setting, ...] = (STORE + REDIS + DHL + FEDEX + UPS + PUSH_SUBSCRIPTIONS
                                 + FAILURE_ALERTS + REPLICA + UPS_WEBHOOK + DHL_WEBHOOK + LOGGING)
