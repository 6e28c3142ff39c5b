"""OAuth client credentials for the carriers that need them (FedEx, UPS): the token cache (one
refresh at a time, refreshed early, a failed refresh not repeated at once) and the token
endpoint's answer."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable

import httpx
import orjson

from ordertrack.gateway.carriers.common import CarrierParseError
from ordertrack.gateway.retry import classify_status


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
