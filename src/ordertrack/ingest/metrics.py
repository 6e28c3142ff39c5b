"""Prometheus metrics of `ordertrack ingest` (served on INGEST_PORT at /metrics, see
telemetry.py)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from ordertrack.telemetry import metrics_registry


class Metrics:
    def __init__(self) -> None:
        self.registry = metrics_registry()
        r = self.registry
        self.received = Counter("ordertrack_ingest_deliveries_received_total",
                                "Webhook deliveries received", ["carrier"], registry=r)
        self.verified = Counter("ordertrack_ingest_deliveries_verified_total",
                                "Deliveries whose signature or credential verified",
                                ["carrier"], registry=r)
        self.refused = Counter("ordertrack_ingest_deliveries_refused_total",
                               "Deliveries refused, by reason (unauthorized, malformed)",
                               ["carrier", "reason"], registry=r)
        self.stored = Counter("ordertrack_ingest_events_stored_total",
                              "Pushed scans stored and published as new events", ["carrier"],
                              registry=r)
        self.duplicates = Counter("ordertrack_ingest_events_duplicate_total",
                                  "Pushed scans the order's history already had (repeated "
                                  "delivery, or polled first)", ["carrier"], registry=r)
        self.unknown = Counter("ordertrack_ingest_events_unknown_order_total",
                               "Pushed scans for a tracking number no order has", ["carrier"],
                               registry=r)
        self.lag = Histogram(
            "ordertrack_ingest_lag_seconds", "Carrier scan time -> event published",
            ["carrier"], registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600))
