"""Carrier parsers (pure) and HTTP clients: one module per carrier.

Every client: `client.batch_size`, `await client.track(numbers) -> {number: CarrierResult}`,
`await client.aclose()`; failures raise `CarrierError` (kind tells the poller what to do).
`gateway.main.make_client` builds the client for a carrier's settings.
"""

from __future__ import annotations

from ordertrack.gateway.carriers.common import CarrierError, CarrierParseError

__all__ = ["CarrierError", "CarrierParseError"]
