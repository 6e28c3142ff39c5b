"""Carrier HTTP clients against the real carrier sandbox (`ordertrack sandbox`), over HTTP.

One sandbox process serves the module; every test resets it (faults, stats, shipments, quotas)
and restores the config it changes. Retry backoff is shrunk to ~10 ms by the policy.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from ordertrack.gateway.carriers import CarrierError, dhl, fedex, ups
from ordertrack.gateway.metrics import Metrics
from ordertrack.gateway.oauth import TokenCache
from ordertrack.gateway.retry import RetryPolicy
from tests.support import free_port

DEFAULT_CONFIG = {"fedex_token_ttl": 3599, "ups_token_ttl": 14399, "slow_seconds": 20}


@pytest.fixture
def sandbox(sandbox_url):
    """The sandbox URL, reset before the test; its config restored after."""
    httpx.post(f"{sandbox_url}/_admin/reset").raise_for_status()
    yield sandbox_url
    httpx.post(f"{sandbox_url}/_admin/config", json=DEFAULT_CONFIG).raise_for_status()


def admin(url: str, path: str, body: dict | None = None) -> dict:
    response = httpx.post(f"{url}/_admin/{path}", json=body or {})
    response.raise_for_status()
    return response.json()


def stats(url: str) -> dict:
    return httpx.get(f"{url}/_admin/stats").json()


def policy(**kw) -> RetryPolicy:
    """Fast backoff; retries counted by the gateway's own metric, as `ordertrack poll` does."""
    kw.setdefault("base_delay", 0.01)
    kw.setdefault("max_delay", 0.05)
    kw.setdefault("on_retry", Metrics().retry_hook)
    return RetryPolicy(**kw)


def retries(client, kind: str) -> float:
    """`ordertrack_gateway_carrier_retries_total{carrier, kind}` of the client's policy."""
    registry = client.policy.on_retry.__self__.registry
    value = registry.get_sample_value("ordertrack_gateway_carrier_retries_total",
                                      {"carrier": client.carrier, "kind": kind})
    return value or 0


def make_dhl(url: str, **kw) -> dhl.DhlClient:
    kw.setdefault("policy", policy())
    return dhl.DhlClient(url, api_key="sandbox-dhl-key", **kw)


def make_fedex(url: str, **kw) -> fedex.FedexClient:
    kw.setdefault("policy", policy())
    return fedex.FedexClient(url, client_id="sandbox-fedex-id",
                             client_secret="sandbox-fedex-secret", **kw)


def make_ups(url: str, **kw) -> ups.UpsClient:
    kw.setdefault("policy", policy())
    return ups.UpsClient(url, client_id="sandbox-ups-id", client_secret="sandbox-ups-secret",
                         **kw)


MAKERS = {"dhl": make_dhl, "fedex": make_fedex, "ups": make_ups}
#: a sandbox tracking number per carrier, by test: JD + 10 digits, 77 + 10, 1Z + 16
NUMBER_FORMATS = {"dhl": "JD{:010d}", "fedex": "77{:010d}", "ups": "1Z{:016d}"}


def number_for(carrier: str, n: int) -> str:
    return NUMBER_FORMATS[carrier].format(n)


async def track_error(client, number: str) -> CarrierError:
    """The CarrierError tracking `number` raises; the client is closed after."""
    try:
        with pytest.raises(CarrierError) as info:
            await client.track([number])
    finally:
        await client.aclose()
    return info.value


def assert_tracked(result, number: str) -> None:
    assert result.found and result.tracking_number == number
    assert result.events, "a sandbox shipment has at least one event"
    stamps = [e.timestamp for e in result.events]
    assert stamps == sorted(stamps)
    assert all(s.endswith("Z") and len(s) == 20 for s in stamps)


# --- plain tracking --------------------------------------------------------------------------

async def test_each_carrier_tracks_a_number_and_reports_not_found(sandbox):
    clients = [make_dhl(sandbox), make_fedex(sandbox), make_ups(sandbox)]
    numbers = ["JD014600006281230704", "794843185271", "1Z023E2X0214323462"]
    try:
        for client, number in zip(clients, numbers, strict=True):
            assert client.batch_size == (30 if client is clients[1] else 1)
            results = await client.track([number])
            assert list(results) == [number]
            assert_tracked(results[number], number)
            missing = f"{number[:4]}NOTFOUND1"
            lost = (await client.track([missing]))[missing]
            assert lost.found is False and lost.error
    finally:
        for client in clients:
            await client.aclose()


async def test_fedex_batch_of_30_in_one_request(sandbox):
    numbers = [f"7700000{i:05d}" for i in range(29)] + ["77NOTFOUND0000"]
    client = make_fedex(sandbox)
    try:
        results = await client.track(numbers)
    finally:
        await client.aclose()
    assert sorted(results) == sorted(numbers)
    for number in numbers[:-1]:
        assert_tracked(results[number], number)
    assert results["77NOTFOUND0000"].found is False
    assert results["77NOTFOUND0000"].error == "TRACKING.TRACKINGNUMBER.NOTFOUND"
    got = stats(sandbox)["fedex"]
    assert got["requests"] == 1 and got["token_requests"] == 1
    assert len(got["tracking_numbers"]) == 30
    with pytest.raises(ValueError):
        await make_fedex(sandbox).track(numbers + ["one too many"])


# --- OAuth tokens ----------------------------------------------------------------------------

async def test_fedex_token_reused_then_refreshed_before_expiry(sandbox):
    admin(sandbox, "config", {"fedex_token_ttl": 20})
    client = make_fedex(sandbox)
    now = [0.0]  # the client's clock, moved by the test: the sandbox's 20 s never run out
    client.tokens = TokenCache(client._fetch_token, clock=lambda: now[0])
    try:
        await client.track(["770000000001"])
        now[0] = 9.9
        await client.track(["770000000001"])
        assert stats(sandbox)["fedex"]["token_requests"] == 1  # cached
        now[0] = 10.1  # past the refresh point (half of a 20 s lifetime), before expiry
        await client.track(["770000000001"])
    finally:
        await client.aclose()
    got = stats(sandbox)["fedex"]
    assert got["token_requests"] == 2
    assert "401" not in got["responses"], "the token was refreshed before the carrier refused it"


async def test_fedex_and_ups_refresh_once_after_401(sandbox):
    clients = {"fedex": make_fedex(sandbox), "ups": make_ups(sandbox)}
    numbers = {"fedex": "770000000002", "ups": "1Z0000000000000002"}
    try:
        for carrier, client in clients.items():
            await client.track([numbers[carrier]])
            admin(sandbox, "tokens/expire", {"carrier": carrier})
            result = (await client.track([numbers[carrier]]))[numbers[carrier]]
            assert result.found
            got = stats(sandbox)[carrier]
            assert got["token_requests"] == 2
            assert got["responses"]["401"] == 1
    finally:
        for client in clients.values():
            await client.aclose()


async def test_concurrent_calls_share_one_token_request(sandbox):
    client = make_fedex(sandbox)
    try:
        await asyncio.gather(*(client.track([f"77000000010{i}"]) for i in range(5)))
    finally:
        await client.aclose()
    assert stats(sandbox)["fedex"]["token_requests"] == 1


async def test_refused_token_request_is_not_repeated_by_every_waiting_call(sandbox):
    """FedEx answers bursts at its token endpoint with 10 minutes of 403s: when the one
    refresh fails, the calls that waited for it share its error instead of each asking again."""
    client = fedex.FedexClient(sandbox, client_id="sandbox-fedex-id", client_secret="nope",
                               policy=policy())
    try:
        outcomes = await asyncio.gather(*(client.track([f"77000000010{i}"]) for i in range(5)),
                                        return_exceptions=True)
    finally:
        await client.aclose()
    assert all(isinstance(o, CarrierError) and o.kind == "auth" for o in outcomes), outcomes
    assert stats(sandbox)["fedex"]["token_requests"] == 1


async def test_persistent_401_is_an_auth_error_after_one_refresh(sandbox):
    admin(sandbox, "faults", {"carrier": "fedex", "kind": "401", "count": 5})
    error = await track_error(make_fedex(sandbox), "770000000003")
    assert error.kind == "auth" and error.status == 401
    got = stats(sandbox)["fedex"]
    assert got["requests"] == 2 and got["token_requests"] == 2


# --- retries ---------------------------------------------------------------------------------

async def test_429_without_retry_after_retried_then_succeeding(sandbox):
    seen: list[tuple[str, str]] = []
    admin(sandbox, "faults", {"carrier": "ups", "kind": "429", "count": 2})
    client = make_ups(sandbox, policy=policy(on_retry=lambda c, k: seen.append((c, k))))
    try:
        result = (await client.track(["1Z0000000000000004"]))["1Z0000000000000004"]
    finally:
        await client.aclose()
    assert result.found
    assert seen == [("ups", "rate_limited")] * 2
    assert stats(sandbox)["ups"]["requests"] == 3


async def test_429_with_retry_after_retried_then_succeeding(sandbox):
    admin(sandbox, "faults", {"carrier": "dhl", "kind": "429_retry_after", "count": 1})
    client = make_dhl(sandbox)
    try:
        result = (await client.track(["JD0000000005"]))["JD0000000005"]
    finally:
        await client.aclose()
    assert result.found
    assert retries(client, "rate_limited") == 1
    assert stats(sandbox)["dhl"]["responses"] == {"429": 1, "200": 1}


async def test_503_burst_retried_then_succeeding_and_exhausted(sandbox):
    admin(sandbox, "faults", {"carrier": "fedex", "kind": "503", "count": 3})
    client = make_fedex(sandbox)
    try:
        result = (await client.track(["770000000006"]))["770000000006"]
        assert result.found
        assert retries(client, "server_error") == 3
        admin(sandbox, "faults", {"carrier": "fedex", "kind": "503", "count": 4})
        with pytest.raises(CarrierError) as info:
            await client.track(["770000000006"])
    finally:
        await client.aclose()
    assert info.value.kind == "server_error" and info.value.status == 503
    assert "SERVICE.UNAVAILABLE.ERROR" in info.value.detail
    assert stats(sandbox)["fedex"]["requests"] == 4 + 4  # 1 try + 3 retries, twice


@pytest.mark.parametrize("carrier", ["dhl", "fedex", "ups"])
async def test_daily_quota_not_retried(sandbox, carrier):
    admin(sandbox, "faults", {"carrier": carrier, "kind": "daily_quota", "count": 1})
    client = MAKERS[carrier](sandbox)
    error = await track_error(client, number_for(carrier, 7))
    assert error.kind == "daily_quota" and error.status == 429
    assert 0 < error.retry_after <= 86400   # until 00:00 UTC
    assert stats(sandbox)[carrier]["requests"] == 1
    assert all(retries(client, kind) == 0 for kind in ("rate_limited", "server_error", "timeout"))


@pytest.mark.parametrize("carrier", ["dhl", "fedex", "ups"])
async def test_malformed_json_is_a_malformed_error(sandbox, carrier):
    admin(sandbox, "faults", {"carrier": carrier, "kind": "malformed", "count": 1})
    client = MAKERS[carrier](sandbox)
    error = await track_error(client, number_for(carrier, 8))
    assert error.kind == "malformed" and error.carrier == carrier
    assert "not JSON" in str(error)
    assert stats(sandbox)[carrier]["requests"] == 1


async def test_timeouts_retried_then_timeout_error(sandbox):
    admin(sandbox, "config", {"slow_seconds": 2})
    admin(sandbox, "faults", {"carrier": "dhl", "kind": "slow", "count": 1})
    client = make_dhl(sandbox, timeout=0.3)
    try:
        # one slow answer: retried, then the real answer
        assert (await client.track(["JD0000000009"]))["JD0000000009"].found
        assert retries(client, "timeout") == 1
        admin(sandbox, "faults", {"carrier": "dhl", "kind": "slow", "count": 4})
        with pytest.raises(CarrierError) as info:
            await client.track(["JD0000000009"])
    finally:
        await client.aclose()
    assert info.value.kind == "timeout" and info.value.status is None
    assert retries(client, "timeout") == 1 + 3
    assert stats(sandbox)["dhl"]["requests"] == 2 + 4


async def test_wrong_credentials_are_auth_errors_not_retried(sandbox):
    client = dhl.DhlClient(sandbox, api_key="wrong", policy=policy())
    bad_ups = ups.UpsClient(sandbox, client_id="sandbox-ups-id", client_secret="nope",
                            policy=policy())
    try:
        for c in (client, bad_ups):
            with pytest.raises(CarrierError) as info:
                await c.track(["JD0000000010" if c is client else "1Z0000000000000010"])
            assert info.value.kind == "auth" and info.value.status == 401
    finally:
        await client.aclose()
        await bad_ups.aclose()
    assert stats(sandbox)["dhl"]["requests"] == 1


# --- wire details ----------------------------------------------------------------------------

async def test_requests_carry_the_carrier_headers(sandbox):
    """Observed on the real traffic (httpx request hook), not on a stand-in."""
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    http = httpx.AsyncClient(event_hooks={"request": [record]})
    clients = [make_dhl(sandbox, http=http), make_fedex(sandbox, http=http),
               make_ups(sandbox, http=http)]
    admin(sandbox, "faults", {"carrier": "ups", "kind": "503", "count": 1})
    try:
        await clients[0].track(["JD0000000011"])
        await clients[1].track(["770000000011", "770000000012"])
        await clients[2].track(["1Z0000000000000011"])
        await clients[2].track(["1Z0000000000000011"])
    finally:
        for client in clients:
            await client.aclose()   # a passed-in httpx client stays open...
        assert not http.is_closed
        await http.aclose()
    paths = [(r.method, r.url.path) for r in sent]
    assert paths == [
        ("GET", "/track/shipments"),
        ("POST", "/oauth/token"), ("POST", "/track/v1/trackingnumbers"),
        ("POST", "/security/v1/oauth/token"),
        ("GET", "/api/track/v1/details/1Z0000000000000011"),   # 503, retried
        ("GET", "/api/track/v1/details/1Z0000000000000011"),
        ("GET", "/api/track/v1/details/1Z0000000000000011"),
    ]
    assert sent[0].url.params["trackingNumber"] == "JD0000000011"
    assert sent[0].headers["DHL-API-Key"] == "sandbox-dhl-key"
    assert b"grant_type=client_credentials" in sent[1].content
    assert b"client_id=sandbox-fedex-id" in sent[1].content
    fedex_track = sent[2]
    assert fedex_track.headers["X-locale"] == "en_US"
    assert fedex_track.headers["Authorization"].startswith("Bearer ")
    assert b'"trackingNumber":"770000000012"' in fedex_track.content
    assert sent[3].headers["Authorization"].startswith("Basic ")
    assert sent[3].content == b"grant_type=client_credentials"
    ups_calls = sent[4:]
    assert all(r.url.params["locale"] == "en_US" for r in ups_calls)
    assert all(r.headers["transactionSrc"] == "ordertrack" for r in ups_calls)
    trans_ids = [r.headers["transId"] for r in ups_calls]
    assert len(set(trans_ids)) == 3 and all(len(t) == 32 for t in trans_ids)


async def test_connection_refused_retried_then_server_error():
    port = free_port()   # nothing listens there
    client = make_ups(f"http://127.0.0.1:{port}")
    error = await track_error(client, "1Z0000000000000012")
    assert error.kind == "server_error" and error.status is None
    assert "connection error" in error.detail
    assert retries(client, "server_error") == 3


def test_default_timeouts_and_batch_sizes():
    from ordertrack.gateway.main import CarrierConfig, make_client

    creds = {"dhl": ("k",), "fedex": ("i", "s"), "ups": ("i", "s")}
    expected = {"dhl": (10.0, 1), "fedex": (15.0, 30), "ups": (12.0, 1)}
    for carrier, (timeout, batch) in expected.items():
        config = CarrierConfig(carrier, "http://127.0.0.1:1", creds[carrier], 60.0)
        client = make_client(config, http=None, policy=None)
        assert (client.carrier, client.timeout, client.batch_size) == (carrier, timeout, batch)
        asyncio.run(client.aclose())
