"""FedEx Track API: parser (pure) and client (OAuth client credentials, 30 numbers per call).

Quirks handled: several trackResults for one number (the one with the latest scan wins);
per-number errors inside HTTP 200 (`TRACKING.TRACKINGNUMBER.NOTFOUND` -> found=False);
estimated delivery from ESTIMATED_DELIVERY, else the estimated window, else the standard
transit window's end; times with offsets, windows without (taken as UTC); scans newest first.
An answer with no scanEvents has no events (FedEx gives the latest status no time of its own).
"""

from __future__ import annotations

from typing import Any

from ordertrack.gateway.carrier_client import OAuthClient
from ordertrack.gateway.carriers.common import (
    CarrierParseError,
    decode_body,
    expand,
    get_path,
    join_location,
    log,
    normalise_estimate,
    normalise_timestamp,
    oldest_first,
    opt_str,
    table_lookup,
)
from ordertrack.gateway.oauth import token_from_answer
from ordertrack.gateway.retry import classify_status, error_codes
from ordertrack.models import CarrierResult, TrackingEvent

CARRIER = "fedex"
TOKEN_PATH = "/oauth/token"
TRACK_PATH = "/track/v1/trackingnumbers"
DEFAULT_TIMEOUT = 15.0
BATCH_SIZE = 30
NOT_FOUND = "TRACKING.TRACKINGNUMBER.NOTFOUND"

STATUS_TABLE = expand({
    # OC: the label is created, FedEx has not got the parcel yet (pre-transit)
    "label_created": ("OC",),
    "shipped": ("OX", "EP", "PU", "PX", "AP"),
    "in_transit": ("IT", "IX", "AR", "AF", "AA", "AC", "AX", "DP", "LO", "OF", "SF", "FD", "EA",
                   "EO", "PF", "PL", "PM", "TR", "AO", "CC", "CP"),
    # HL/HP: at a FedEx location, ready for pickup: the customer's next step, like OD
    "out_for_delivery": ("OD", "ED", "AD", "HL", "HP"),
    "delivered": ("DL",),
    "exception": ("DE", "SE", "CD", "DY", "DD", "PD", "CA", "RS", "RD"),
})


def normalise_status(code: str | None) -> str:
    """A FedEx status/event code (`DL`, `OD`, ...) -> normalised status."""
    text = opt_str(code)
    return table_lookup(CARRIER, STATUS_TABLE, text.upper() if text else None)


def _location(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    return join_location(node.get("city"), node.get("stateOrProvinceCode"), node.get("countryCode"))


def estimated_delivery(result: dict) -> str | None:
    """ESTIMATED_DELIVERY, then estimatedDeliveryTimeWindow, then standardTransitTimeWindow.ends."""
    for item in result.get("dateAndTimes") or []:
        if isinstance(item, dict) and item.get("type") == "ESTIMATED_DELIVERY":
            estimate = normalise_estimate(item.get("dateTime"), CARRIER)
            if estimate:
                return estimate
    for key, ends in (("estimatedDeliveryTimeWindow", ("ends", "begins")),
                      ("standardTransitTimeWindow", ("ends",))):
        window = result.get(key)
        window = window.get("window") if isinstance(window, dict) else None
        if isinstance(window, dict):
            for end in ends:
                estimate = normalise_estimate(window.get(end), CARRIER)
                if estimate:
                    return estimate
    return None


def _scans(result: dict) -> list:
    return get_path(CARRIER, result, "scanEvents", kind=list, required=False) or []


def _latest_scan(result: dict) -> str:
    times = []
    for scan in _scans(result):
        if isinstance(scan, dict) and opt_str(scan.get("date")):
            times.append(normalise_timestamp(scan.get("date"), CARRIER))
    return max(times, default="")


def choose_result(results: list) -> dict:
    """Of several trackResults for one number, the one with the latest scan (errors last)."""
    candidates = [r for r in results if isinstance(r, dict)]
    if not candidates:
        raise CarrierParseError(CARRIER, "trackResults holds no object")
    return max(candidates, key=lambda r: (not r.get("error"), _latest_scan(r)))


def parse_track_result(result: dict, requested: str) -> CarrierResult:
    error = result.get("error")
    if error:
        code = opt_str(error.get("code")) if isinstance(error, dict) else opt_str(error)
        return CarrierResult(requested, False, error=code or "ERROR")
    estimate = estimated_delivery(result)
    events = oldest_first(_event(scan, estimate, result) for scan in _scans(result))
    return CarrierResult(requested, True, events, estimate)


def _event(scan: Any, estimate: str | None, result: dict) -> TrackingEvent:
    if not isinstance(scan, dict):
        raise CarrierParseError(CARRIER, "a scanEvent is not an object")
    code = opt_str(scan.get("eventType")) or opt_str(scan.get("derivedStatusCode"))
    return TrackingEvent(
        status=normalise_status(code),
        location=_location(scan.get("scanLocation")),
        timestamp=normalise_timestamp(scan.get("date"), CARRIER),
        estimated_delivery=estimate,
        raw_code=code,
        raw=result,
    )


def parse_response(body: dict | bytes | str, requested: list[str] | str,
                   status_code: int = 200) -> dict[str, CarrierResult]:
    """A FedEx answer for up to 30 numbers -> {number asked for: CarrierResult}."""
    numbers = [requested] if isinstance(requested, str) else list(requested)
    if status_code == 404 and any("NOTFOUND" in c.upper() for c in error_codes(body)):
        code = next(c for c in error_codes(body) if "NOTFOUND" in c.upper())
        return {n: CarrierResult(n, False, error=code) for n in numbers}
    if status_code != 200:
        raise classify_status(CARRIER, status_code, body, {})
    data = decode_body(CARRIER, body, status_code)
    complete = get_path(CARRIER, data, "output", "completeTrackResults", kind=list)
    out: dict[str, CarrierResult] = {}
    for i, entry in enumerate(complete):
        if not isinstance(entry, dict):
            raise CarrierParseError(CARRIER, f"completeTrackResults[{i}] is not an object")
        results = get_path(CARRIER, entry, "trackResults", kind=list)
        number = opt_str(entry.get("trackingNumber"))
        if number is None and results and isinstance(results[0], dict):
            info = results[0].get("trackingNumberInfo")
            number = opt_str(info.get("trackingNumber")) if isinstance(info, dict) else None
        if number is None and len(numbers) == 1:
            number = numbers[0]
        if number not in numbers:
            log.warning("fedex: answer for %r that was not asked for, ignored", number)
            continue
        out[number] = parse_track_result(choose_result(results), number)
    for number in numbers:
        if number not in out:
            log.warning("fedex: no result for %s in the answer", number)
            out[number] = CarrierResult(number, False, error="MISSING_FROM_ANSWER")
    return out


def request_body(numbers: list[str]) -> dict:
    return {
        "includeDetailedScans": True,
        "trackingInfo": [{"trackingNumberInfo": {"trackingNumber": n}} for n in numbers],
    }


class FedexClient(OAuthClient):
    """FedEx Track API client: OAuth token cached (refreshed 5 min early, one refresh at a time),
    on 401 one refresh and one retry; up to 30 numbers per request."""

    carrier = CARRIER
    default_timeout = DEFAULT_TIMEOUT
    batch_size = BATCH_SIZE

    async def _fetch_token(self) -> tuple[str, float]:
        response = await self._http.request(
            "POST", TOKEN_PATH, what="token",
            data={"grant_type": "client_credentials", "client_id": self._client_id,
                  "client_secret": self._client_secret},
        )
        return token_from_answer(CARRIER, response)

    async def track(self, numbers: list[str]) -> dict[str, CarrierResult]:
        if not 0 < len(numbers) <= BATCH_SIZE:
            raise ValueError(f"fedex tracks 1..{BATCH_SIZE} numbers per call, got {len(numbers)}")
        response = await self.authorised(lambda token: self._http.request(
            "POST", TRACK_PATH, what="track",
            headers={"Authorization": f"Bearer {token}", "X-locale": "en_US",
                     "Content-Type": "application/json"},
            json=request_body(numbers),
        ))
        return parse_response(response.content, numbers, response.status_code)
