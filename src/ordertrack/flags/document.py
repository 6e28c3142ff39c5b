"""The Redis flag document: what `ordertrack flag` writes, read by the Redis provider.

The flag document lives in Redis at `ws:flag:realtime_order_tracking` (`redis_layout.FLAG_KEY`) as JSON
`{"enabled": bool, "percentage": 0-100, "regions": [...], "carriers": [...]}`; a missing key
means enabled for everyone. Pods and the API cache it and refresh it in the background (and at
once when `ordertrack flag` publishes on `ws:control:all`), so no request waits on Redis.
Evaluation is a pure function; a user's percentage bucket is a stable hash of the user id.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import orjson

FLAG_NAME = "realtime_order_tracking"


@dataclass(frozen=True)
class Flag:
    enabled: bool = True
    percentage: float = 100.0
    regions: frozenset[str] = field(default_factory=frozenset)
    carriers: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> bytes:
        return orjson.dumps({
            "enabled": self.enabled,
            "percentage": self.percentage,
            "regions": sorted(self.regions),
            "carriers": sorted(self.carriers),
        })


def parse_flag(raw: bytes | str | None) -> Flag:
    """A missing or unreadable document leaves the feature on (the kill switch is explicit)."""
    try:
        return read_flag(raw)
    except ValueError:
        return Flag()


def read_flag(raw: bytes | str | None) -> Flag:
    """The document's flag; a missing one is `Flag()`. Raises ValueError when unreadable, so
    a provider can keep its last good decision instead of switching everything on."""
    if not raw:
        return Flag()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"flag document is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("flag document is not a JSON object")
    percentage = doc.get("percentage", 100)
    if not isinstance(percentage, int | float):
        percentage = 100
    return Flag(
        enabled=bool(doc.get("enabled", True)),
        percentage=max(0.0, min(100.0, float(percentage))),
        regions=frozenset(str(r) for r in doc.get("regions") or ()),
        carriers=frozenset(str(c) for c in doc.get("carriers") or ()),
    )


def user_bucket(user_id: str) -> float:
    """Stable 0 <= bucket < 100 for percentage rollouts."""
    digest = hashlib.sha1(f"{FLAG_NAME}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 10000 / 100.0


def is_enabled(flag: Flag, user_id: str, region: str | None = None,
               carrier: str | None = None) -> bool:
    if not flag.enabled:
        return False
    if flag.regions and region not in flag.regions:
        return False
    if carrier is not None and flag.carriers and carrier not in flag.carriers:
        return False
    return flag.percentage >= 100.0 or user_bucket(user_id) < flag.percentage
