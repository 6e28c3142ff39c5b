"""Shared carrier helpers: errors, timestamp normalisation, body decoding, status tables.

Timestamp rules (one for the whole gateway):
- event timestamps are ISO 8601 UTC `YYYY-MM-DDTHH:MM:SSZ` (fractional seconds dropped, a zone
  offset converted to UTC, a zone-less time taken as UTC, a bare date taken as midnight UTC);
- estimated deliveries keep the carrier's precision: a full time becomes `YYYY-MM-DDTHH:MM:SSZ`,
  a bare date (DHL `estimatedDeliveryDate`, UPS `deliveryDate`) stays a bare ISO date
  `YYYY-MM-DD`, because inventing midnight UTC would tell a customer in New York the parcel
  was due the evening before.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

import orjson

from ordertrack.models import TrackingEvent, one_per_scan

log = logging.getLogger("ordertrack.gateway.carriers")

#: the kinds of `CarrierError` the poller acts on
ERROR_KINDS = frozenset(
    {"rate_limited", "daily_quota", "server_error", "timeout", "auth", "bad_request", "malformed"}
)


class CarrierError(Exception):
    """A carrier call that produced no usable answer.

    kind: rate_limited | daily_quota | server_error | timeout | auth | bad_request | malformed.
    status: the HTTP status (None for timeouts and connection errors).
    retry_after: seconds the carrier asked us to wait (or, for daily_quota without a header,
    the seconds until the quota resets at 00:00 UTC).
    """

    def __init__(self, carrier: str, kind: str, status: int | None = None, detail: str = "",
                 retry_after: float | None = None):
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown CarrierError kind {kind!r}")
        self.carrier = carrier
        self.kind = kind
        self.status = status
        self.detail = detail
        self.retry_after = retry_after
        parts = [f"{carrier}: {kind}"]
        if status is not None:
            parts.append(f"HTTP {status}")
        if detail:
            parts.append(detail)
        if retry_after is not None:
            parts.append(f"retry after {retry_after:g}s")
        super().__init__(" - ".join(parts))

    def __reduce__(self):
        return (type(self), (self.carrier, self.kind, self.status, self.detail, self.retry_after))


class CarrierParseError(CarrierError):
    """A carrier answer we cannot read (not JSON, or not the documented shape)."""

    def __init__(self, carrier: str, detail: str, status: int | None = None):
        super().__init__(carrier, "malformed", status, detail)

    def __reduce__(self):
        return (type(self), (self.carrier, self.detail, self.status))


# --- bodies -----------------------------------------------------------------------------------

def decode_body(carrier: str, body: dict | bytes | str, status: int | None = None) -> dict:
    """The JSON object of an answer, or CarrierParseError naming what was wrong."""
    if isinstance(body, dict):
        return body
    if isinstance(body, str):
        body = body.encode()
    if not isinstance(body, bytes | bytearray):
        raise CarrierParseError(carrier, f"body is a {type(body).__name__}, not JSON", status)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        snippet = bytes(body[:60]).decode("utf-8", "replace")
        raise CarrierParseError(carrier, f"body is not JSON ({exc}): {snippet!r}", status) from None
    if not isinstance(data, dict):
        raise CarrierParseError(carrier, f"body is a JSON {type(data).__name__}, not an object",
                                status)
    return data


def get_path(carrier: str, data: Any, *path: str | int, kind: type | tuple = dict,
             required: bool = True) -> Any:
    """`data[p0][p1]...` checked at every step; None when optional and absent.

    Raises CarrierParseError naming the path when a required part is missing or of the wrong type.
    """
    where = ""
    cur = data
    for key in path:
        where += f"[{key}]" if isinstance(key, int) else f".{key}"
        if isinstance(key, int):
            if not isinstance(cur, list) or len(cur) <= key:
                cur = None
            else:
                cur = cur[key]
        else:
            cur = cur.get(key) if isinstance(cur, dict) else None
        if cur is None:
            if required:
                raise CarrierParseError(carrier, f"missing {where.lstrip('.')}")
            return None
    if not isinstance(cur, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise CarrierParseError(
            carrier, f"{where.lstrip('.')} is a {type(cur).__name__}, expected {names}")
    return cur


def opt_str(value: Any) -> str | None:
    """A non-empty string, or None (numbers are accepted and turned into strings)."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def join_location(*parts: Any) -> str | None:
    """`"Newark NJ, US"`: the non-empty parts, comma-separated; None when there are none."""
    seen: list[str] = []
    for part in parts:
        text = opt_str(part)
        if text and text not in seen:
            seen.append(text)
    return ", ".join(seen) or None


def address_location(node: dict, *fields: str) -> str | None:
    """A scan's `location.address` as a location line, from the named address fields."""
    location = node.get("location")
    address = location.get("address") if isinstance(location, dict) else None
    if not isinstance(address, dict):
        return None
    return join_location(*(address.get(name) for name in fields))


# --- answers for one number ------------------------------------------------------------------

def only_number(carrier: str, requested: list[str] | str) -> str:
    """The tracking number of a call to a carrier that takes one number per call."""
    numbers = [requested] if isinstance(requested, str) else list(requested)
    if len(numbers) != 1:
        raise ValueError(f"{carrier} tracks one number per call, got {len(numbers)}")
    return numbers[0]


def answer_for(carrier: str, items: list, key: str, number: str, where: str) -> dict:
    """Of the shipments/packages in an answer for one number, the one whose `key` is that
    number, else the first (a linked shipment); logs when it names another number."""
    chosen = next((item for item in items if isinstance(item, dict) and item.get(key) == number),
                  items[0])
    if not isinstance(chosen, dict):
        raise CarrierParseError(carrier, f"{where}[0] is not an object")
    if chosen.get(key) not in (None, number):
        log.info("%s: asked for %s, answered with %s %s", carrier, number, where, chosen.get(key))
    return chosen


# --- events ---------------------------------------------------------------------------------

def oldest_first(newest_first: Iterable[TrackingEvent]) -> tuple[TrackingEvent, ...]:
    """A carrier's events (listed newest first) as one event per scan, oldest first.

    Copies of one scan (DHL's shipment `status` and its newest event, a FedEx or UPS scan
    listed twice) become the copy with the most detail (`models.one_per_scan`); events at the
    same time keep the carrier's relative order, reversed.
    """
    return tuple(sorted(one_per_scan(reversed(list(newest_first))), key=lambda e: e.timestamp))


# --- timestamps -------------------------------------------------------------------------------

_DATE_ONLY = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
_FRACTION = re.compile(r"(\.\d+)")


def _format(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_datetime(value: str) -> datetime:
    """An aware UTC datetime from ISO 8601 text: `Z`, an offset, no zone (= UTC), fractions.

    Raises ValueError for text that is not a date-time.
    """
    text = value.strip()
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    # fromisoformat wants 3 or 6 fraction digits: carriers send 1 to 9
    m = _FRACTION.search(text)
    if m:
        digits = m.group(1)[1:7].ljust(6, "0")
        text = text[: m.start()] + "." + digits + text[m.end():]
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def normalise_timestamp(value: Any, carrier: str = "carrier") -> str:
    """An event time as `YYYY-MM-DDTHH:MM:SSZ` (a bare date becomes midnight UTC)."""
    text = opt_str(value)
    if text is None:
        raise CarrierParseError(carrier, f"missing or empty timestamp {value!r}")
    m = _DATE_ONLY.match(text)
    try:
        if m:
            return _format(datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=UTC))
        return _format(parse_datetime(text))
    except ValueError:
        raise CarrierParseError(carrier, f"unreadable timestamp {text!r}") from None


def normalise_estimate(value: Any, carrier: str = "carrier") -> str | None:
    """An estimated delivery: `YYYY-MM-DDTHH:MM:SSZ`, or `YYYY-MM-DD` for a bare date.

    None for absent/empty values; an unreadable value is logged and dropped (an estimate is
    advisory: it must not make a whole answer unusable).
    """
    text = opt_str(value)
    if text is None:
        return None
    m = _DATE_ONLY.match(text)
    try:
        if m:
            return date(int(m[1]), int(m[2]), int(m[3])).isoformat()
        return _format(parse_datetime(text))
    except ValueError:
        log.warning("%s: unreadable estimated delivery %r, ignored", carrier, text)
        return None


# --- statuses ---------------------------------------------------------------------------------

def table_lookup(carrier: str, table: dict[str, str], code: str | None,
                 context: str = "") -> str:
    """The normalised status for `code`, or `unknown` with a WARNING naming the raw code."""
    if code is not None and code in table:
        return table[code]
    log.warning("%s: unrecognised status code %r%s -> unknown", carrier, code,
                f" ({context})" if context else "")
    return "unknown"


def expand(table: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """{"shipped": ("OC", "PU")} -> {"OC": "shipped", "PU": "shipped"}; codes must be unique."""
    out: dict[str, str] = {}
    for status, codes in table.items():
        for code in codes:
            if code in out:
                raise ValueError(f"status code {code!r} listed twice")
            out[code] = status
    return out
