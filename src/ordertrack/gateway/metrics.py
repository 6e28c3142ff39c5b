"""Prometheus metrics of the gateway (served on GATEWAY_METRICS_PORT, see telemetry.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from ordertrack.telemetry import metrics_registry


class Metrics:
    def __init__(self) -> None:
        self.registry = metrics_registry()
        r = self.registry
        # outcome: updated, unchanged, not_found, failed, daily_quota, rate_limited, quota_wait
        self.polls = Counter("ordertrack_gateway_polls_total",
                             "Orders polled, by carrier and outcome", ["carrier", "outcome"],
                             registry=r)
        self.requests = Counter("ordertrack_gateway_carrier_requests_total",
                                "Tracking requests sent (a FedEx batch is one)", ["carrier"],
                                registry=r)
        self.errors = Counter("ordertrack_gateway_carrier_errors_total",
                              "Carrier calls that failed after retries, by kind",
                              ["carrier", "kind"], registry=r)
        self.retries = Counter("ordertrack_gateway_carrier_retries_total",
                               "Carrier request retries (429/5xx/timeouts), by kind",
                               ["carrier", "kind"], registry=r)
        self.quota_remaining = Gauge("ordertrack_gateway_quota_remaining",
                                     "Requests the shared quota still grants now",
                                     ["carrier"], registry=r)
        self.active_orders = Gauge("ordertrack_gateway_active_orders",
                                   "Orders being polled", ["carrier"], registry=r)
        self.pushed_orders = Gauge("ordertrack_gateway_pushed_orders",
                                   "Active orders the carrier pushed within the safety net, "
                                   "polled only every PUSH_SAFETY_NET_SECONDS", ["carrier"],
                                   registry=r)
        self.effective_period = Gauge("ordertrack_gateway_effective_poll_period_seconds",
                                      "Seconds between two polls of an order without push, under the quota",
                                      ["carrier"], registry=r)
        self.published = Counter("ordertrack_gateway_events_published_total",
                                 "Tracking events published to Redis", ["carrier"], registry=r)
        self.publish_latency = Histogram(
            "ordertrack_gateway_publish_latency_seconds",
            "Carrier answer received -> event stored and published",
            ["carrier"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.flagged = Counter("ordertrack_gateway_orders_flagged_total",
                               "Orders flagged for investigation (PagerDuty trigger)",
                               ["carrier"], registry=r)
        self.pagerduty = Counter("ordertrack_gateway_pagerduty_events_total",
                                 "PagerDuty events, by action and result", ["action", "result"],
                                 registry=r)

    def retry_hook(self, carrier: str, kind: str) -> None:
        self.retries.labels(carrier, kind).inc()
