"""The nouns every process shares: carriers, normalised statuses, tracking events, orders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CARRIERS = ("dhl", "fedex", "ups")
STATUSES = ("shipped", "in_transit", "out_for_delivery", "delivered", "exception", "unknown")
#: orders in these statuses are polled; `delivered` (and anything else) leaves the active set
ACTIVE_STATUSES = frozenset({"shipped", "in_transit", "out_for_delivery"})


@dataclass(frozen=True, slots=True)
class TrackingEvent:
    """One normalised carrier scan. Timestamps are ISO 8601 UTC strings ending in `Z`."""

    status: str
    location: str | None
    timestamp: str
    estimated_delivery: str | None = None
    #: the carrier's own code, kept for logs and for `unknown` statuses
    raw_code: str | None = None
    #: the carrier's answer for this shipment (`raw_carrier_response`; never sent to customers)
    raw: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def identity(self) -> tuple[str, str | None, str]:
        """What makes an event new: the (status, location, timestamp) an order's history lacks."""
        return (self.status, self.location, self.timestamp)


@dataclass(frozen=True, slots=True)
class CarrierResult:
    """A carrier's answer for one tracking number, parsed. Events are oldest first."""

    tracking_number: str
    found: bool
    events: tuple[TrackingEvent, ...] = ()
    estimated_delivery: str | None = None
    #: carrier error code for a per-number error (e.g. TRACKING.TRACKINGNUMBER.NOTFOUND, TW0001)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A tracking event as stored in an order's history, with its `seq`."""

    order_id: str
    seq: int
    status: str
    location: str | None
    timestamp: str
    estimated_delivery: str | None = None
    raw: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(slots=True)
class Order:
    order_id: str
    user_id: str
    carrier: str
    tracking_number: str
    status: str = "shipped"
    last_update: str | None = None
    estimated_delivery: str | None = None
    region: str | None = None
    seq: int = 0
    consecutive_failures: int = 0
    needs_investigation: bool = False
    created_at: str | None = None
