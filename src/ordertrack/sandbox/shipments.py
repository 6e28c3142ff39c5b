"""Scripted shipment timelines: which scans a shipment has reached at a given moment.

Pure: nothing here reads a clock or does I/O; callers pass `now` (epoch seconds).

A timeline is a list of `Step`s, each `after` shipment-seconds after the previous one. A
shipment's clock starts at its creation and runs `scale` times faster than real time, so a
step is reached at real time `created_at + offset / scale`. Reached steps are frozen with
the real instant they were reached (their event timestamp), so every later answer shows the
same event with the same timestamp. `advance` forces whole steps to happen now and shifts
the clock so the rest of the timeline follows on from there. `shipment_record` and
`shipment_from_record` let a sandbox keep its timelines across restarts (SANDBOX_STATE_FILE),
so a store that kept the scans it saw and the sandbox never disagree about them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("label_created", "picked_up", "in_transit", "out_for_delivery", "delivered", "exception")
#: the normalised status names accepted as aliases in explicit timelines
KIND_ALIASES = {"shipped": "label_created", "pre_transit": "label_created", "transit": "in_transit"}
TERMINAL = frozenset({"delivered", "exception"})

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Place:
    city: str
    region: str
    country: str
    postal: str
    #: minutes east of UTC, used for the carriers' local times
    utc_offset: int


US_PLACES = (
    Place("NEWARK", "NJ", "US", "07114", -300),
    Place("MEMPHIS", "TN", "US", "38118", -360),
    Place("LOUISVILLE", "KY", "US", "40209", -300),
    Place("CHICAGO", "IL", "US", "60666", -360),
    Place("INDIANAPOLIS", "IN", "US", "46241", -300),
    Place("DALLAS", "TX", "US", "75261", -360),
    Place("ATLANTA", "GA", "US", "30320", -300),
    Place("PHOENIX", "AZ", "US", "85034", -420),
    Place("OAKLAND", "CA", "US", "94621", -480),
    Place("BROOKLYN", "NY", "US", "11201", -300),
    Place("SEATTLE", "WA", "US", "98108", -480),
    Place("DENVER", "CO", "US", "80249", -420),
)
EU_PLACES = (
    Place("Leipzig", "SN", "DE", "04435", 60),
    Place("Bonn", "NW", "DE", "53113", 60),
    Place("Brussels", "BRU", "BE", "1930", 60),
    Place("Amsterdam", "NH", "NL", "1118", 60),
    Place("Paris", "IDF", "FR", "95700", 60),
    Place("London", "ENG", "GB", "TW6 2", 0),
)


@dataclass(frozen=True, slots=True)
class Step:
    kind: str
    place: Place
    #: shipment-seconds after the previous step (the first step's `after` is usually 0)
    after: float
    #: deterministic flavour: which description text a carrier uses for this scan
    variant: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """A reached step with the real instant it happened."""

    index: int
    step: Step
    timestamp: float


@dataclass
class Shipment:
    carrier: str
    tracking_number: str
    steps: tuple[Step, ...]
    created_at: float
    scale: float = 1.0
    #: shipment-seconds added by `advance`
    shift: float = 0.0
    #: real timestamps of the reached steps, in timeline order
    reached: list[float] = field(default_factory=list)

    @property
    def offsets(self) -> list[float]:
        total, out = 0.0, []
        for step in self.steps:
            total += step.after
            out.append(total)
        return out

    def elapsed(self, now: float) -> float:
        """Shipment-seconds since creation, at real time `now`."""
        return max(0.0, now - self.created_at) * self.scale + self.shift

    def observe(self, now: float) -> list[Event]:
        """Freeze every step reached by `now`; return the reached events, oldest first."""
        offsets = self.offsets
        elapsed = self.elapsed(now)
        for i in range(len(self.reached), len(self.steps)):
            if offsets[i] > elapsed + 1e-6:  # float slack: due at exactly `now` counts
                break
            at = self.created_at + (offsets[i] - self.shift) / self.scale
            if self.reached:
                at = max(at, self.reached[-1])
            self.reached.append(at)
        return self.events()

    def events(self) -> list[Event]:
        return [Event(i, self.steps[i], ts) for i, ts in enumerate(self.reached)]

    def advance(self, steps: int, now: float) -> int:
        """Make the next `steps` steps happen now; return how many did."""
        self.observe(now)
        target = min(len(self.reached) + max(0, steps), len(self.steps))
        forced = target - len(self.reached)
        while len(self.reached) < target:
            at = now if not self.reached else max(now, self.reached[-1] + 1.0)
            self.reached.append(at)
        if forced:
            self.shift = self.offsets[target - 1] - max(0.0, now - self.created_at) * self.scale
        return forced

    @property
    def finished(self) -> bool:
        return bool(self.reached) and self.steps[len(self.reached) - 1].kind in TERMINAL

    def estimated_delivery(self) -> float | None:
        """Real time the last step is due, while the shipment is not finished."""
        if self.finished or not self.steps:
            return None
        due = self.created_at + (self.offsets[-1] - self.shift) / self.scale
        if self.reached:
            due = max(due, self.reached[-1])
        return due


def seed(carrier: str, tracking_number: str) -> int:
    digest = hashlib.sha256(f"{carrier}:{tracking_number}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def places_for(carrier: str) -> tuple[Place, ...]:
    return US_PLACES + EU_PLACES if carrier == "dhl" else US_PLACES


def is_never_found(tracking_number: str) -> bool:
    return "NOTFOUND" in tracking_number.upper()


def scripted_steps(carrier: str, tracking_number: str) -> tuple[Step, ...]:
    """The deterministic timeline for a number nobody scripted explicitly.

    label created -> picked up -> in transit at 2-4 places -> out for delivery -> delivered,
    or, for numbers containing EXCEPTION, an exception instead of the delivery.
    """
    rng = random.Random(seed(carrier, tracking_number))
    pool = list(places_for(carrier))
    rng.shuffle(pool)
    hubs = pool[2 : 2 + rng.randint(2, 4)]
    origin, destination = pool[0], pool[1]
    variant = rng.randint(0, 1)
    steps = [
        Step("label_created", origin, 0.0, rng.randint(0, 1)),
        Step("picked_up", origin, rng.uniform(0.3, 1.5) * HOUR, rng.randint(0, 1)),
    ]
    for hub in hubs:
        steps.append(Step("in_transit", hub, rng.uniform(1.0, 6.0) * HOUR, rng.randint(0, 2)))
    steps.append(
        Step("out_for_delivery", destination, rng.uniform(2.0, 5.0) * HOUR, variant)
    )
    if "EXCEPTION" in tracking_number.upper():
        steps.append(Step("exception", destination, rng.uniform(1.0, 4.0) * HOUR, variant))
    else:
        steps.append(Step("delivered", destination, rng.uniform(1.0, 4.0) * HOUR, variant))
    return tuple(steps)


def parse_kind(value: Any) -> str:
    kind = str(value or "").strip().lower()
    kind = KIND_ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise ValueError(f"unknown event kind {value!r}; expected one of {', '.join(KINDS)}")
    return kind


def place_named(city: str | None, carrier: str, fallback: Place) -> Place:
    if not city:
        return fallback
    for place in US_PLACES + EU_PLACES:
        if place.city.lower() == city.lower():
            return place
    return Place(city, "", fallback.country, "", fallback.utc_offset)


def explicit_steps(
    carrier: str, tracking_number: str, events: Iterable[Mapping[str, Any]]
) -> tuple[Step, ...]:
    """A timeline from `POST /_admin/shipments` events.

    Each event: `{"kind" (or "status"): one of KINDS, "city"?: str, "after_seconds"?: float}`;
    `after_seconds` (shipment seconds after the previous event) defaults to 0 for the first
    event and one hour for the others. Raises ValueError on a bad event.
    """
    default_place = places_for(carrier)[seed(carrier, tracking_number) % len(places_for(carrier))]
    steps: list[Step] = []
    for i, event in enumerate(events):
        if not isinstance(event, Mapping):
            raise ValueError(f"event {i} must be an object")
        kind = parse_kind(event.get("kind", event.get("status")))
        after = float(event.get("after_seconds", 0.0 if i == 0 else HOUR))
        if after < 0:
            raise ValueError(f"event {i}: after_seconds must not be negative")
        place = place_named(event.get("city"), carrier, default_place)
        steps.append(Step(kind, place, after, int(event.get("variant", 0))))
    if not steps:
        raise ValueError("events must not be empty")
    return tuple(steps)


def new_shipment(
    carrier: str,
    tracking_number: str,
    now: float,
    scale: float = 1.0,
    events: Iterable[Mapping[str, Any]] | None = None,
) -> Shipment:
    steps = (
        explicit_steps(carrier, tracking_number, events)
        if events is not None
        else scripted_steps(carrier, tracking_number)
    )
    return Shipment(carrier, tracking_number, steps, created_at=now, scale=scale)


def previous_shipment(shipment: Shipment, now: float, days: float = 60.0) -> Shipment:
    """An older, long-delivered shipment that reused the same number (FedEx `MULTI` numbers)."""
    old = Shipment(
        shipment.carrier,
        shipment.tracking_number,
        scripted_steps(shipment.carrier + ":previous", shipment.tracking_number.replace("EXCEPTION", "")),
        created_at=shipment.created_at - days * 86400.0,
        scale=1.0,
    )
    old.observe(now)
    return old


def shipment_record(shipment: Shipment) -> dict[str, Any]:
    """A JSON-ready record of everything that decides a shipment's answers."""
    return asdict(shipment)


def shipment_from_record(record: Mapping[str, Any]) -> Shipment:
    """The inverse of `shipment_record`; raises ValueError on a malformed record."""
    try:
        steps = tuple(
            Step(str(s["kind"]), Place(**s["place"]), float(s["after"]), int(s["variant"]))
            for s in record["steps"]
        )
        return Shipment(
            str(record["carrier"]), str(record["tracking_number"]), steps,
            created_at=float(record["created_at"]), scale=float(record["scale"]),
            shift=float(record["shift"]), reached=[float(t) for t in record["reached"]],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed shipment record: {exc!r}") from None
