"""`ordertrack poll` settings: each an environment variable and a CLI flag (config.py)."""

from __future__ import annotations

from ordertrack.config import (
    LOGGING,
    REDIS,
    STORE,
    Setting,
    default_pod_name,
    duration,
    http_url,
    optional_text,
    port,
    positive_int,
    text,
)

SETTINGS: tuple[Setting, ...] = STORE + REDIS + (
    Setting("DHL_API_URL", http_url, None, "DHL base URL; unset: DHL is not polled"),
    Setting("DHL_API_KEY", optional_text, None, "DHL-API-Key header value"),
    Setting("FEDEX_API_URL", http_url, None, "FedEx base URL; unset: FedEx is not polled"),
    Setting("FEDEX_CLIENT_ID", optional_text, None, "FedEx OAuth client id"),
    Setting("FEDEX_CLIENT_SECRET", optional_text, None, "FedEx OAuth client secret"),
    Setting("UPS_API_URL", http_url, None, "UPS base URL; unset: UPS is not polled"),
    Setting("UPS_CLIENT_ID", optional_text, None, "UPS OAuth client id"),
    Setting("UPS_CLIENT_SECRET", optional_text, None, "UPS OAuth client secret"),
    Setting("DHL_POLL_INTERVAL_SECONDS", duration, "60", "shortest re-poll period of a DHL order"),
    Setting("FEDEX_POLL_INTERVAL_SECONDS", duration, "90", "shortest re-poll period of a FedEx order"),
    Setting("UPS_POLL_INTERVAL_SECONDS", duration, "120", "shortest re-poll period of a UPS order"),
    Setting("DHL_QUOTA_PER_HOUR", positive_int, "2000", "DHL requests per hour, all replicas"),
    Setting("DHL_BURST_PER_MINUTE", positive_int, "100", "DHL requests per minute, all replicas"),
    Setting("FEDEX_QUOTA_PER_HOUR", positive_int, "1000", "FedEx requests per hour, all replicas"),
    Setting("UPS_QUOTA_PER_HOUR", positive_int, "500", "UPS requests per hour, all replicas"),
    Setting("ORDERS_REFRESH_SECONDS", duration, "15", "how often the active orders are re-read from the store"),
    Setting("CARRIER_RETRY_BASE_SECONDS", duration, "0.5", "first retry backoff of a carrier request"),
    Setting("FAILURE_ALERT_THRESHOLD", positive_int, "10",
            "alert and flag an order after MORE than this many consecutive failures"),
    Setting("PAGERDUTY_ROUTING_KEY", optional_text, None,
            "PagerDuty Events API v2 routing key; unset: alerts are logged"),
    Setting("PAGERDUTY_EVENTS_URL", http_url, "https://events.pagerduty.com/v2/enqueue",
            "PagerDuty Events API v2 endpoint"),
    Setting("GATEWAY_METRICS_HOST", text, "0.0.0.0", "address the /metrics server listens on"),
    Setting("GATEWAY_METRICS_PORT", port, "9091", "Prometheus /metrics port (0: not served)"),
    Setting("REPLICA_NAME", text, default_pod_name(), "this replica's name in claims and alerts"),
) + LOGGING
