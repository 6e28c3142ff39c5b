"""DHL Shipment Tracking (Unified): parser (pure) and client.

Quirks handled: one number per call; the answer may be a linked shipment whose `id` differs
from the number asked for (results are keyed by the number asked for); `statusCode` has no
out-for-delivery value, so it is read from the `status`/`description` text; timestamps come
with `Z`, with no zone (taken as UTC) or with fractional seconds; 404 problem+json = not found
(a 404 without one is an error: a wrong base URL must not look like "not found" forever).
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from ordertrack.gateway.carrier_client import CarrierClient, CarrierHttp
from ordertrack.gateway.carriers.common import (
    CarrierError,
    CarrierParseError,
    answer_for,
    decode_body,
    expand,
    get_path,
    join_location,
    normalise_estimate,
    normalise_timestamp,
    oldest_first,
    only_number,
    opt_str,
    table_lookup,
)
from ordertrack.gateway.retry import RetryPolicy, classify_status
from ordertrack.models import CarrierResult, TrackingEvent

CARRIER = "dhl"
PATH = "/track/shipments"
SUBSCRIBE_PATH = "/track/push/v1/subscriptions"
DEFAULT_TIMEOUT = 10.0

STATUS_TABLE = expand({
    "label_created": ("pre-transit",),
    "in_transit": ("transit",),
    "delivered": ("delivered",),
    "exception": ("failure",),
    "unknown": ("unknown",),
})

#: DHL's wordings for a parcel on the delivery vehicle (statusCode stays `transit`)
OUT_FOR_DELIVERY_TEXT = re.compile(
    r"out for delivery|with (?:the )?(?:delivery )?courier for delivery|"
    r"with (?:the )?delivery courier|"
    r"on (?:the )?(?:delivery )?vehicle for delivery|loaded onto (?:the )?delivery vehicle|"
    r"in delivery|being delivered today|will be delivered today",
    re.IGNORECASE,
)


def normalise_status(status_code: str | None, text: str = "") -> str:
    """DHL `statusCode` (+ the event's status/description text) -> normalised status."""
    code = opt_str(status_code)
    code = code.lower() if code else None
    status = table_lookup(CARRIER, STATUS_TABLE, code)
    if status == "in_transit" and OUT_FOR_DELIVERY_TEXT.search(text or ""):
        return "out_for_delivery"
    return status


#: "Chicago IL": DHL writes a US or Canadian locality's state or province after a space
_LOCALITY_REGION = re.compile(r"^(?P<place>[^,]*[^,\s])\s+(?P<region>[A-Z]{2})$")
REGION_COUNTRIES = frozenset({"US", "CA"})


def locality(text: str | None, country: str | None) -> str | None:
    """DHL's `addressLocality` written as the other carriers write a place: "Chicago IL" ->
    "Chicago, IL" (US and Canada, whose state or province DHL appends after a space; also
    with no country given)."""
    if not text or (country is not None and country.upper() not in REGION_COUNTRIES):
        return text
    match = _LOCALITY_REGION.match(text)
    return f"{match['place']}, {match['region']}" if match else text


def location(node: dict) -> str | None:
    """A DHL event's place, "Chicago, IL, US" as FedEx and UPS write it."""
    where = node.get("location")
    address = where.get("address") if isinstance(where, dict) else None
    if not isinstance(address, dict):
        return None
    country = opt_str(address.get("countryCode"))
    return join_location(locality(opt_str(address.get("addressLocality")), country), country)


def _event(node: Any, estimate: str | None, raw: dict) -> TrackingEvent:
    if not isinstance(node, dict):
        raise CarrierParseError(CARRIER, f"event is a {type(node).__name__}, expected object")
    text = " ".join(filter(None, (opt_str(node.get("status")), opt_str(node.get("description")))))
    code = opt_str(node.get("statusCode"))
    return TrackingEvent(
        status=normalise_status(code, text),
        location=location(node),
        timestamp=normalise_timestamp(node.get("timestamp"), CARRIER),
        estimated_delivery=estimate,
        raw_code=code,
        raw=raw,
    )


def shipment_estimate(shipment: dict) -> str | None:
    """estimatedTimeOfDelivery, else the time frame's end, else details.estimatedDeliveryDate."""
    frame = shipment.get("estimatedDeliveryTimeFrame")
    details = shipment.get("details")
    for value in (
        shipment.get("estimatedTimeOfDelivery"),
        frame.get("estimatedThrough") if isinstance(frame, dict) else None,
        details.get("estimatedDeliveryDate") if isinstance(details, dict) else None,
    ):
        estimate = normalise_estimate(value, CARRIER)
        if estimate:
            return estimate
    return None


def parse_shipment(shipment: dict, requested: str) -> CarrierResult:
    estimate = shipment_estimate(shipment)
    events_raw = get_path(CARRIER, shipment, "events", kind=list, required=False) or []
    events = [_event(node, estimate, shipment) for node in events_raw]
    status = shipment.get("status")
    if isinstance(status, dict) and opt_str(status.get("timestamp")):
        # the shipment's status repeats its newest event, often with more address detail
        events.insert(0, _event(status, estimate, shipment))
    return CarrierResult(requested, True, oldest_first(events), estimate)


def parse_response(body: dict | bytes | str, requested: list[str] | str,
                   status_code: int = 200) -> dict[str, CarrierResult]:
    """A DHL answer for ONE number -> {number asked for: CarrierResult}."""
    number = only_number(CARRIER, requested)
    if status_code == 404:
        if not is_problem_body(body):
            raise CarrierError(CARRIER, "bad_request", 404,
                               "404 without DHL's problem+json body: is DHL_API_URL the base "
                               "URL (without /track/shipments)?")
        return {number: CarrierResult(number, False, error="NOT_FOUND")}
    if status_code != 200:
        raise error_for_status(status_code, body)
    data = decode_body(CARRIER, body, status_code)
    shipments = get_path(CARRIER, data, "shipments", kind=list)
    if not shipments:
        return {number: CarrierResult(number, False, error="NOT_FOUND")}
    chosen = answer_for(CARRIER, shipments, "id", number, "shipments")
    return {number: parse_shipment(chosen, number)}


def is_problem_body(body: Any) -> bool:
    """DHL's errors are problem+json objects (`title`/`status`/`detail`); a web server's 404
    page is not one."""
    try:
        data = decode_body(CARRIER, body, 404)
    except CarrierParseError:
        return False
    return any(key in data for key in ("title", "detail", "status"))


def error_for_status(status_code: int, body: Any) -> CarrierError:
    return classify_status(CARRIER, status_code, body, {})


class DhlClient(CarrierClient):
    """DHL client: API key header, one number per request."""

    carrier = CARRIER
    default_timeout = DEFAULT_TIMEOUT
    batch_size = 1

    def __init__(self, base_url: str, *, api_key: str, timeout: float = DEFAULT_TIMEOUT,
                 http: httpx.AsyncClient | None = None, policy: RetryPolicy | None = None):
        self._http = CarrierHttp(CARRIER, base_url, timeout, http, policy)
        self._api_key = api_key

    async def track(self, numbers: list[str]) -> dict[str, CarrierResult]:
        response = await self._http.request(
            "GET", PATH, what="track",
            headers={"DHL-API-Key": self._api_key, "Accept": "application/json"},
            params={"trackingNumber": only_number(CARRIER, numbers)},
        )
        return parse_response(response.content, numbers, response.status_code)

    async def subscribe(self, number: str, url: str, header: str, value: str) -> None:
        """DHL push subscription of one number to our webhook, with our static header."""
        response = await self._http.request(
            "POST", SUBSCRIBE_PATH, what="subscribe",
            headers={"DHL-API-Key": self._api_key, "Accept": "application/json"},
            json={"trackingNumber": number, "callbackUrl": url, "headers": {header: value}},
        )
        if response.status_code not in (200, 201):
            raise error_for_status(response.status_code, response.content)
