"""The nouns every process shares: carriers, normalised statuses, tracking events, orders, and
the rules that say which copies are one scan (`scan_identity`) and what an order is after its
events (`next_order_state`): the store, the gateway and the API all follow these two."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

CARRIERS = ("dhl", "fedex", "ups")
#: `label_created`: the shipper made the label, the carrier has not picked the parcel up yet
#: (pre-transit: FedEx OC, DHL pre-transit, UPS type M / 003)
STATUSES = ("label_created", "shipped", "in_transit", "out_for_delivery", "delivered", "exception",
            "unknown")
#: orders in these statuses are polled; `delivered` (and anything else) leaves the active set
ACTIVE_STATUSES = frozenset({"label_created", "shipped", "in_transit", "out_for_delivery"})


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
    def identity(self) -> tuple[str, str]:
        """The scan this event is a copy of (see `scan_identity`)."""
        return scan_identity(self.status, self.timestamp)

    @property
    def detail(self) -> tuple[int, bool, bool]:
        """How much this copy of its scan says: the longer location ("Brooklyn NY, US" over
        "Brooklyn NY" over none), then an estimate, then the carrier's code."""
        return (len(self.location or ""), self.estimated_delivery is not None,
                self.raw_code is not None)


def scan_identity(status: str, timestamp: str) -> tuple[str, str]:
    """One scan, whatever detail each copy of it carries: its normalised status at its time.

    The location is left out on purpose: carriers repeat a scan with more or less address
    detail (DHL's shipment `status` says "Brooklyn NY, US" where its event says "Brooklyn NY";
    a repeated FedEx or UPS scan may lack its state or country), and a shipment is not scanned
    with one status in two places in the same second. So a missing, an empty and a fuller
    location are all the same scan. The store's unique index `events_scan` says the same.
    """
    return (status, timestamp)


def one_per_scan(events: Iterable[TrackingEvent]) -> list[TrackingEvent]:
    """One copy of each scan, in the order the scans first appear: the copy with most detail
    (the first of equally detailed ones)."""
    copies: dict[tuple[str, str], TrackingEvent] = {}
    for event in events:
        kept = copies.get(event.identity)
        if kept is None or event.detail > kept.detail:
            copies[event.identity] = event
    return list(copies.values())


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


def parse_timestamp(value: str) -> datetime:
    """An ISO 8601 timestamp (`Z` or offset; naive means UTC) as an aware datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class OrderState:
    """What an order is now: the fields its events move (the order-state rule's input and output)."""

    status: str
    last_update: str | None
    estimated_delivery: str | None
    seq: int

    @classmethod
    def of(cls, order: Order) -> OrderState:
        return cls(order.status, order.last_update, order.estimated_delivery, order.seq)


def next_order_state(current: OrderState, stored: Sequence[StoredEvent]) -> OrderState:
    """The order after `stored` (non-empty, numbered) is appended.

    seq becomes the last one assigned. Status, last_update and estimated_delivery follow the
    newest new event by timestamp, unless the order already has a later update (a late,
    out-of-order scan must not move a delivered order back to in_transit). An event without
    an estimated delivery keeps the one the order had. An `unknown` event (a carrier code
    nobody recognises) never replaces a known status: it says nothing about where the
    shipment is, and an order turned `unknown` would leave the active set and never be
    polled again.
    """
    def order(event: StoredEvent):
        return (parse_timestamp(event.timestamp), event.seq)

    newest = max(stored, key=order)
    # the newest estimate the batch carries, when its newest event carries none
    estimates = [event for event in stored if event.estimated_delivery]
    estimate = max(estimates, key=order).estimated_delivery if estimates else None
    seq = stored[-1].seq
    if current.last_update is not None and parse_timestamp(newest.timestamp) < parse_timestamp(
        current.last_update
    ):
        return OrderState(current.status, current.last_update, current.estimated_delivery, seq)
    status = newest.status
    if status == "unknown":
        known = [event for event in stored if event.status != "unknown"]
        newest_known = max(known, key=order) if known else None
        if newest_known is not None and (
            current.last_update is None
            or parse_timestamp(newest_known.timestamp) >= parse_timestamp(current.last_update)
        ):
            status = newest_known.status
        elif current.status != "unknown":
            status = current.status
    return OrderState(
        status,
        newest.timestamp,
        estimate or current.estimated_delivery,
        seq,
    )
