"""Prometheus metrics of the API (served by its own `/metrics` route, see telemetry.py).

One `Metrics` per app: tests build several apps in one process.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from ordertrack.telemetry import metrics_registry

#: X-Fallback-Reason values counted by name; anything else is counted as "other"
FALLBACK_REASONS = frozenset(
    {"websocket_disconnected", "connection_limit", "feature_disabled", "heartbeat_timeout",
     "realtime_disabled", "websocket_unsupported", "resume_unavailable"}
)


class Metrics:
    def __init__(self) -> None:
        self.registry = metrics_registry()
        self.fallback = Counter(
            "ordertrack_api_fallback_requests", "REST polls by X-Fallback-Reason",
            ["reason"], registry=self.registry)
        self.requests = Counter(
            "ordertrack_api_tracking_requests", "tracking answers by result",
            ["result"], registry=self.registry)
        self.source = Counter(
            "ordertrack_api_tracking_source", "where tracking documents came from",
            ["source"], registry=self.registry)
        # bound children, looked up once: `labels()` on every request is measurable
        self._children: dict[tuple[str, str], Any] = {}

    def _child(self, counter: Counter, kind: str, value: str) -> Any:
        child = self._children.get((kind, value))
        if child is None:
            child = self._children[(kind, value)] = counter.labels(value)
        return child

    def count(self, result: str) -> None:
        self._child(self.requests, "result", result).inc()

    def count_source(self, source: str) -> None:
        self._child(self.source, "source", source).inc()

    def count_fallback(self, reason: str) -> None:
        reason = reason if reason in FALLBACK_REASONS else "other"
        self._child(self.fallback, "reason", reason).inc()
