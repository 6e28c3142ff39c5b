"""Injectable faults: the next N matching tracking requests of a carrier misbehave.

Pure bookkeeping. Kinds:
- `503`: 503 with the carrier's error body;
- `429`: 429 without Retry-After; `429_retry_after`: 429 with `Retry-After: 1`;
- `daily_quota`: 429 whose body says the daily quota is exhausted, on every matching request
  until `POST /_admin/reset` (its count is ignored, like a real daily quota);
- `slow`: the answer comes after `slow_seconds` (longer than any client timeout);
- `malformed`: 200 with truncated JSON;
- `401`: the bearer token / API key is rejected.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ordertrack.models import CARRIERS

KINDS = ("503", "429", "429_retry_after", "daily_quota", "slow", "malformed", "401")
STICKY = frozenset({"daily_quota"})


@dataclass
class Fault:
    carrier: str
    kind: str
    remaining: int
    tracking_number: str | None = None

    def matches(self, carrier: str, numbers: Iterable[str]) -> bool:
        if carrier != self.carrier:
            return False
        return self.tracking_number is None or self.tracking_number in numbers

    def as_dict(self) -> dict[str, object]:
        return {
            "carrier": self.carrier,
            "kind": self.kind,
            "remaining": self.remaining,
            "tracking_number": self.tracking_number,
        }


def parse_fault(body: object) -> Fault:
    """A fault from `POST /_admin/faults`' JSON body. Raises ValueError with the reason."""
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    carrier = str(body.get("carrier", "")).lower()
    if carrier not in CARRIERS:
        raise ValueError(f"carrier must be one of {', '.join(CARRIERS)}")
    kind = str(body.get("kind", ""))
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    try:
        count = int(body.get("count", 1))
    except (TypeError, ValueError):
        raise ValueError("count must be a whole number") from None
    if count < 1:
        raise ValueError("count must be at least 1")
    number = body.get("tracking_number")
    if number is not None and not isinstance(number, str):
        raise ValueError("tracking_number must be a string")
    return Fault(carrier, kind, count, number or None)


class FaultBook:
    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear(self) -> None:
        self.faults.clear()

    def take(self, carrier: str, numbers: Iterable[str]) -> str | None:
        """The kind of the first fault matching this request, consuming one of its count."""
        numbers = list(numbers)
        for fault in self.faults:
            if fault.matches(carrier, numbers):
                if fault.kind not in STICKY:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                return fault.kind
        return None
