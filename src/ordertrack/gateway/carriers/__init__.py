"""Carrier parsers (pure) and HTTP clients: one module per carrier.

Every client: `client.batch_size`, `await client.track(numbers) -> {number: CarrierResult}`,
`await client.aclose()`; failures raise `CarrierError` (kind tells the poller what to do).
"""

from __future__ import annotations

from ordertrack.gateway.carriers.common import CarrierError, CarrierParseError

__all__ = ["CarrierError", "CarrierParseError", "make_client", "parse_response"]


def _modules():
    from ordertrack.gateway.carriers import dhl, fedex, ups

    return {"dhl": dhl, "fedex": fedex, "ups": ups}


def parse_response(carrier: str, body, requested, status_code: int = 200):
    """Dispatch to `<carrier>.parse_response`."""
    return _modules()[carrier].parse_response(body, requested, status_code)


def make_client(carrier: str, base_url: str, *, credentials: dict[str, str], **kwargs):
    """DhlClient(api_key=...), FedexClient/UpsClient(client_id=..., client_secret=...).

    `credentials` holds those keyword arguments; `kwargs` go to the constructor
    (timeout, http, policy).
    """
    mods = _modules()
    cls = {"dhl": mods["dhl"].DhlClient, "fedex": mods["fedex"].FedexClient,
           "ups": mods["ups"].UpsClient}[carrier]
    return cls(base_url, **credentials, **kwargs)

