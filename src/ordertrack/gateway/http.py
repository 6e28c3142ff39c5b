"""Carrier HTTP: the retry policy (pure decisions + one async loop) and the OAuth token cache.

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
import base64
import email.utils
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
import orjson

from ordertrack.gateway.carriers.common import CarrierError, CarrierParseError
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


def json_body(carrier: str, response: httpx.Response) -> dict:
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise CarrierParseError(carrier, f"{response.request.url.path} answered non-JSON: "
                                f"{response.content[:60]!r}", response.status_code) from None
    if not isinstance(data, dict):
        raise CarrierParseError(carrier, f"{response.request.url.path} answered a JSON "
                                f"{type(data).__name__}", response.status_code)
    return data


# --- OAuth --------------------------------------------------------------------------------------

class TokenCache:
    """An OAuth client-credentials token: cached, refreshed early, one refresh at a time.

    `fetch()` returns (access_token, expires_in seconds). The token is refreshed
    `refresh_before` seconds before expiry (at most half its lifetime, so short-lived sandbox
    tokens still get reused). Concurrent callers share one refresh (FedEx answers bursts at its
    token endpoint with 10 minutes of 403s); a refresh that fails is not repeated for
    `failure_cooldown` seconds: the callers in between get its error.
    """

    def __init__(self, fetch: Callable[[], Awaitable[tuple[str, float]]],
                 refresh_before: float = 300.0, clock: Callable[[], float] = time.monotonic,
                 failure_cooldown: float = 30.0):
        self._fetch = fetch
        self._refresh_before = refresh_before
        self._clock = clock
        self._failure_cooldown = failure_cooldown
        self._failure: Exception | None = None
        self._failure_until = 0.0
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    def _fresh(self) -> bool:
        return self._token is not None and self._clock() < self._refresh_at

    async def get(self, stale: str | None = None) -> str:
        """A valid token; `stale` = a token the carrier just refused (forces a new one)."""
        if self._fresh() and self._token != stale:
            return self._token  # type: ignore[return-value]
        async with self._lock:
            if self._fresh() and self._token != stale:
                return self._token  # type: ignore[return-value]
            if self._failure is not None and self._clock() < self._failure_until:
                raise self._failure.with_traceback(None)
            try:
                token, expires_in = await self._fetch()
            except Exception as exc:
                self._failure = exc
                self._failure_until = self._clock() + self._failure_cooldown
                raise
            self._failure = None
            margin = min(self._refresh_before, max(0.0, expires_in) / 2)
            self._token = token
            self._refresh_at = self._clock() + max(0.0, expires_in) - margin
            return token


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def token_from_answer(carrier: str, response: httpx.Response) -> tuple[str, float]:
    """(access_token, expires_in) from a token endpoint answer; every field may be a string."""
    if response.status_code != 200:
        raise classify_status(carrier, response.status_code, response.content, response.headers)
    data = json_body(carrier, response)
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise CarrierParseError(carrier, "token answer has no access_token", 200)
    try:
        expires_in = float(data.get("expires_in", 3600))
    except (TypeError, ValueError):
        raise CarrierParseError(carrier, f"token expires_in {data.get('expires_in')!r} "
                                "is not a number", 200) from None
    return token, expires_in


# --- the shared client shell -----------------------------------------------------------------

class CarrierHttp:
    """httpx.AsyncClient + base URL + timeout + retry policy, shared by the carrier clients."""

    def __init__(self, carrier: str, base_url: str, timeout: float,
                 http: httpx.AsyncClient | None, policy: RetryPolicy | None):
        self.carrier = carrier
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.policy = policy or RetryPolicy()
        self._own = http is None
        self.http = http or httpx.AsyncClient(timeout=timeout)

    def url(self, path: str) -> str:
        return self.base_url + path

    async def request(self, method: str, path: str, what: str = "request",
                      headers: Callable[[], dict[str, str]] | dict[str, str] | None = None,
                      **kwargs: Any) -> httpx.Response:
        """One logical request with retries; `headers` may be a callable run per attempt."""
        kwargs.setdefault("timeout", self.timeout)
        url = self.url(path)

        async def send() -> httpx.Response:
            sent = headers() if callable(headers) else headers
            return await self.http.request(method, url, headers=sent, **kwargs)

        return await send_with_retry(self.carrier, send, self.policy, what)

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()


class CarrierClient:
    """What every carrier client shares: `carrier`, `batch_size`, `timeout`, `policy`,
    `aclose()`."""

    carrier: ClassVar[str]
    #: the request timeout when the constructor is given none
    default_timeout: ClassVar[float]
    batch_size = 1
    _http: CarrierHttp

    @property
    def timeout(self) -> float:
        return self._http.timeout

    @property
    def policy(self) -> RetryPolicy:
        """The retry policy (its `on_retry` hook counts retries for the metrics)."""
        return self._http.policy

    async def aclose(self) -> None:
        """Close the httpx client if this client created it (a passed-in one stays open)."""
        await self._http.aclose()


class OAuthClient(CarrierClient):
    """A carrier client with an OAuth client-credentials token (FedEx, UPS): the token cached
    in `tokens`; `authorised` sends with it, and on 401 refreshes once and retries once."""

    def __init__(self, base_url: str, *, client_id: str, client_secret: str,
                 timeout: float | None = None, http: httpx.AsyncClient | None = None,
                 policy: RetryPolicy | None = None, refresh_before: float = 300.0):
        self._http = CarrierHttp(self.carrier, base_url, timeout or self.default_timeout, http,
                                 policy)
        self._client_id = client_id
        self._client_secret = client_secret
        self.tokens = TokenCache(self._fetch_token, refresh_before)

    async def _fetch_token(self) -> tuple[str, float]:
        """(access_token, expires_in) from the carrier's token endpoint."""
        raise NotImplementedError

    async def authorised(self, send: Callable[[str], Awaitable[httpx.Response]]) -> httpx.Response:
        """`send(token)`'s answer; a token refused twice (401) is an `auth` CarrierError."""
        token = await self.tokens.get()
        response = await send(token)
        if response.status_code == 401:
            log.info("%s: token refused (401), refreshing once", self.carrier)
            token = await self.tokens.get(stale=token)
            response = await send(token)
            if response.status_code == 401:
                raise CarrierError(self.carrier, "auth", 401, "token refused twice")
        return response
