"""PagerDuty Events API v2: trigger/resolve an alert per order (dedup key per order)."""

from __future__ import annotations

import logging
from typing import Any

import httpx

log = logging.getLogger("ordertrack.gateway.pagerduty")

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"


def dedup_key(order_id: str) -> str:
    return f"ordertrack-order-{order_id}"


def event_body(routing_key: str, action: str, order_id: str, summary: str, source: str,
               details: dict[str, Any]) -> dict[str, Any]:
    """An Events API v2 body; `resolve` needs only the routing and dedup keys."""
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key(order_id),
    }
    if action == "trigger":
        body["payload"] = {
            "summary": summary,
            "source": source,
            "severity": "error",
            "custom_details": details,
        }
    return body


class PagerDuty:
    """Sends alerts; without a routing key, logs them at WARNING instead."""

    def __init__(self, routing_key: str | None, events_url: str = DEFAULT_EVENTS_URL,
                 source: str = "ordertrack-gateway", metrics: Any = None,
                 http: httpx.AsyncClient | None = None):
        self.routing_key = routing_key
        self.events_url = events_url
        self.source = source
        self.metrics = metrics
        self._http = http or httpx.AsyncClient(timeout=10.0)

    async def trigger(self, order_id: str, summary: str, details: dict[str, Any]) -> bool:
        """True when the alert was delivered (or, without a routing key, logged)."""
        return await self._send("trigger", order_id, summary, details)

    async def resolve(self, order_id: str, summary: str, details: dict[str, Any]) -> bool:
        return await self._send("resolve", order_id, summary, details)

    async def _send(self, action: str, order_id: str, summary: str,
                    details: dict[str, Any]) -> bool:
        if not self.routing_key:
            log.warning("alert %s (PAGERDUTY_ROUTING_KEY unset, not sent): %s; dedup_key=%s %s",
                        action, summary, dedup_key(order_id), details)
            self._count(action, "logged")
            return True
        body = event_body(self.routing_key, action, order_id, summary, self.source, details)
        try:
            response = await self._http.post(self.events_url, json=body)
        except httpx.HTTPError as exc:
            log.error("PagerDuty %s for order %s failed: %s: %s", action, order_id,
                      type(exc).__name__, exc)
            self._count(action, "error")
            return False
        if response.status_code != 202 and not response.is_success:
            log.error("PagerDuty %s for order %s refused: HTTP %d %s", action, order_id,
                      response.status_code, response.text[:200])
            self._count(action, "error")
            return False
        log.info("PagerDuty %s sent for order %s (dedup_key %s)", action, order_id,
                 dedup_key(order_id))
        self._count(action, "sent")
        return True

    def _count(self, action: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.pagerduty.labels(action, result).inc()

    async def aclose(self) -> None:
        await self._http.aclose()
