"""Carrier HTTP retries: which answers are retried and when (pure decisions) and the one loop
that retries a request by them (`send_with_retry`).

Retry rules (carriers.md "Retry etiquette"): 429 (rate_limited), 5xx (server_error),
timeouts and connection errors are retried at most `max_retries` (3) times, with exponential
backoff and full jitter, or after `Retry-After` (seconds or an HTTP date, plus a little jitter); a Retry-After longer than
`max_retry_after` is not cut short: the request is not retried in this cycle and the
poller holds the carrier for every replica until then. Nothing else is retried: 400/401/403/404, not-found answers, malformed
bodies, and daily-quota 429s.

Daily-quota rule: a 429 whose body mentions a day ("daily", "day", "per day", "24 hours") or
carries a code containing DAILY or QUOTA (e.g. FedEx `DAILY.QUOTA.EXCEEDED`; DHL says
"daily quota" in its problem detail; UPS reuses 10429 and says "daily quota" in the message)
is `daily_quota`: not retried, and its `retry_after` is the
`Retry-After` header if any, else the seconds until 00:00 UTC (DHL's quota reset).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from ordertrack.gateway.carriers.common import CarrierError
from ordertrack.gateway.quota import next_utc_midnight

log = logging.getLogger("ordertrack.gateway.http")

RETRYABLE_KINDS = frozenset({"rate_limited", "server_error", "timeout"})

_DAILY_TEXT = re.compile(r"\bdaily\b|\bper[ -]day\b|\bday\b|\b24 ?hours?\b", re.IGNORECASE)
_DAILY_CODE = re.compile(r"DAILY|QUOTA", re.IGNORECASE)


# --- pure decisions -----------------------------------------------------------------------------

def body_text(body: Any) -> str:
    if body is None:
        return ""
    if isinstance(body, bytes | bytearray):
        return bytes(body).decode("utf-8", "replace")
    if isinstance(body, str):
        return body
    try:
        return orjson.dumps(body).decode()
    except TypeError:
        return str(body)


def _fields(node: Any, keys: tuple[str, ...]) -> list[str]:
    """Every string/int value under one of `keys`, anywhere in a decoded JSON body."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in keys and isinstance(value, str | int):
                    found.append(str(value))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(node)
    return found


def error_codes(body: Any) -> list[str]:
    """Every `code`/`title` in a carrier error body (DHL problem+json, FedEx errors[], UPS)."""
    if isinstance(body, bytes | bytearray | str):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError:
            return []
    return _fields(body, ("code", "title"))


def error_detail(body: Any, limit: int = 200) -> str:
    """A short human line from an error body: its messages/details, else its raw start."""
    parsed = body
    if isinstance(body, bytes | bytearray | str):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body_text(body)[:limit]
    parts = _fields(parsed, ("code", "title", "detail", "message"))
    return ("; ".join(parts) or body_text(body))[:limit]


def is_daily_quota(body: Any) -> bool:
    """The daily-quota rule in this module's docstring."""
    return bool(_DAILY_TEXT.search(body_text(body))) or any(
        _DAILY_CODE.search(code) for code in error_codes(body))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (>= 0): delta-seconds or an HTTP date; None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def classify_status(carrier: str, status: int, body: Any,
                    headers: Mapping[str, str] | None = None) -> CarrierError:
    """The CarrierError for a non-success HTTP answer (the caller decides whether to retry)."""
    headers = headers or {}
    retry_after = parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"))
    detail = error_detail(body)
    if status == 429:
        if is_daily_quota(body):
            if retry_after is None:
                now = time.time()
                retry_after = next_utc_midnight(now) - now
            return CarrierError(carrier, "daily_quota", status, detail, retry_after)
        return CarrierError(carrier, "rate_limited", status, detail, retry_after)
    if status >= 500:
        return CarrierError(carrier, "server_error", status, detail, retry_after)
    if status in (401, 403):
        return CarrierError(carrier, "auth", status, detail)
    return CarrierError(carrier, "bad_request", status, detail)


def backoff_delay(retry: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full jitter: uniform(0, min(cap, base * 2**retry)), retry counting from 0."""
    return (rng or random).uniform(0.0, min(cap, base * (2 ** retry)))


@dataclass
class RetryPolicy:
    """How one carrier client retries. Tests shrink `base_delay`; `on_retry` counts retries."""

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0
    #: a Retry-After up to this many seconds is waited for; a longer one ends the attempt
    max_retry_after: float = 30.0
    #: called as on_retry(carrier, kind) before every retry (the poller's Prometheus counter)
    on_retry: Callable[[str, str], None] | None = None
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, error: CarrierError, retry: int) -> float | None:
        """Seconds to wait before retry number `retry` (0-based), or None: do not retry."""
        if error.kind not in RETRYABLE_KINDS or retry >= self.max_retries:
            return None
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                # retrying sooner than asked only earns another 429: the poller holds the
                # carrier for the whole Retry-After instead
                return None
            # Retry-After is a floor; a little jitter keeps replicas from retrying in step
            return error.retry_after + self.rng.uniform(0.0, min(self.base_delay, 1.0))
        return backoff_delay(retry, self.base_delay, self.max_delay, self.rng)

    def record(self, carrier: str, kind: str) -> None:
        if self.on_retry is not None:
            try:
                self.on_retry(carrier, kind)
            except Exception:  # noqa: BLE001 - a metrics hook must not break polling
                log.exception("on_retry hook failed")


# --- the async loop -----------------------------------------------------------------------------

def transport_error(carrier: str, exc: httpx.TransportError) -> CarrierError:
    """Timeouts are `timeout`; refused/reset connections are `server_error` with no status."""
    if isinstance(exc, httpx.TimeoutException):
        return CarrierError(carrier, "timeout", None, f"{type(exc).__name__}: {exc}".rstrip(": "))
    return CarrierError(carrier, "server_error", None,
                        f"connection error {type(exc).__name__}: {exc}".rstrip(": "))


async def send_with_retry(carrier: str, send: Callable[[], Awaitable[httpx.Response]],
                          policy: RetryPolicy, what: str = "request") -> httpx.Response:
    """Call `send` until an answer that is not 429/5xx/timeout, retrying per `policy`.

    Returns any answer that is not retryable (2xx, 400, 401, 404, ...) for the caller to read;
    raises CarrierError for a daily quota, or when the retries are used up.
    """
    retry = 0
    while True:
        try:
            response = await send()
        except httpx.TransportError as exc:
            error = transport_error(carrier, exc)
        else:
            if response.status_code != 429 and response.status_code < 500:
                return response
            error = classify_status(carrier, response.status_code, response.content,
                                    response.headers)
        wait = policy.delay(error, retry)
        if wait is None:
            if error.kind in RETRYABLE_KINDS:
                log.warning("%s %s failed after %d retries: %s", carrier, what, retry, error)
            raise error
        policy.record(carrier, error.kind)
        log.info("%s %s: %s, retry %d/%d in %.3fs", carrier, what, error.kind, retry + 1,
                 policy.max_retries, wait)
        retry += 1
        await asyncio.sleep(wait)
