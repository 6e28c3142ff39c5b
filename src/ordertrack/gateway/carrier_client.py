"""The carrier clients' shared bases: `CarrierHttp` (httpx client, base URL, timeout, retries
by `retry.send_with_retry`), `CarrierClient` (what every carrier client offers the poller) and
`OAuthClient` (a client whose requests carry a cached OAuth token, `oauth.TokenCache`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import httpx

from ordertrack.gateway.carriers.common import CarrierError
from ordertrack.gateway.oauth import TokenCache
from ordertrack.gateway.retry import RetryPolicy, send_with_retry

log = logging.getLogger("ordertrack.gateway.http")

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
