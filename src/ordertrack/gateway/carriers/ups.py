"""UPS Tracking API: parser (pure) and client (OAuth with HTTP Basic, one number per call).

Quirks handled: statusCode overrides are checked before the type letter; activity `date`/`time`
are local with no zone, so UTC is built from `gmtDate`+`gmtTime` (else local - `gmtOffset`,
else the local time taken as UTC); times lose leading zeros (`"74700"` -> `07:47:00`);
estimated delivery is RDD, else SDD (DEL is the actual delivery, never an estimate);
not found is HTTP 200 with warning TW0001 and no package; every token-answer field is a string.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from ordertrack.gateway.carrier_client import OAuthClient
from ordertrack.gateway.carriers.common import (
    CarrierParseError,
    address_location,
    answer_for,
    decode_body,
    expand,
    get_path,
    normalise_estimate,
    oldest_first,
    only_number,
    opt_str,
    table_lookup,
)
from ordertrack.gateway.oauth import basic_auth, token_from_answer
from ordertrack.gateway.retry import classify_status, error_codes
from ordertrack.models import CarrierResult, TrackingEvent

CARRIER = "ups"
TOKEN_PATH = "/security/v1/oauth/token"
TRACK_PATH = "/api/track/v1/details/"
DEFAULT_TIMEOUT = 12.0
SUBSCRIBE_PATH = "/api/track/v1/subscription/standard/package"
#: Track Alert: numbers per subscription call, and how long a subscription lasts
SUBSCRIBE_BATCH = 100
SUBSCRIPTION_SECONDS = 14 * 86400.0
TRANSACTION_SRC = "ordertrack"
NOT_FOUND = "TW0001"

#: statusCode overrides, checked before the type letter
STATUS_CODE_TABLE = expand({
    # 003: "Shipper created a label, UPS has not received the package yet"
    "label_created": ("003",),
    "shipped": ("038", "157"),
    # 017, 040: at a UPS Access Point, ready for pickup: the customer's next step
    "out_for_delivery": ("006", "021", "037", "072", "078", "089", "091", "146", "162",
                         "017", "040"),
    "delivered": ("011", "026", "143"),
    "exception": ("022", "023", "024", "034", "035", "036", "060", "064"),
})
TYPE_TABLE = expand({
    "label_created": ("M",),
    "in_transit": ("I",),
    "delivered": ("D",),
    "exception": ("X", "MV"),
    "unknown": ("NA",),
})


def normalise_status(type_: str | None, status_code: str | None = None) -> str:
    """UPS status: the statusCode override table first, then the type letter."""
    code = opt_str(status_code)
    if code is not None and code.isdigit():
        code = code.zfill(3)
        if code in STATUS_CODE_TABLE:
            return STATUS_CODE_TABLE[code]
    letter = opt_str(type_)
    return table_lookup(CARRIER, TYPE_TABLE, letter.upper() if letter else None,
                        f"statusCode {code}" if code else "")


def status_of(node: Any) -> tuple[str, str | None]:
    """(normalised status, raw code) of a currentStatus / activity.status object.

    `code` may hold the type letter (the feature log's sample: `"code": "I"`) or a 3-digit
    status code; both are understood.
    """
    if not isinstance(node, dict):
        return normalise_status(None), None
    type_ = opt_str(node.get("type"))
    code = opt_str(node.get("code"))
    status_code = opt_str(node.get("statusCode"))
    if status_code is None and code and code.isdigit():
        status_code = code
    if type_ is None and code and not code.isdigit() and code.upper() in TYPE_TABLE:
        type_ = code
    raw = status_code or type_ or code
    return normalise_status(type_, status_code), raw


_DIGITS = re.compile(r"\D")


def _date(value: Any, what: str) -> tuple[int, int, int]:
    text = _DIGITS.sub("", opt_str(value) or "")
    if len(text) != 8:
        raise CarrierParseError(CARRIER, f"unreadable {what} {value!r}")
    return int(text[:4]), int(text[4:6]), int(text[6:8])


def _time(value: Any, what: str) -> tuple[int, int, int]:
    text = _DIGITS.sub("", opt_str(value) or "")
    if not text or len(text) > 6:
        raise CarrierParseError(CARRIER, f"unreadable {what} {value!r}")
    text = text.zfill(6)  # "74700" -> "074700"
    return int(text[:2]), int(text[2:4]), int(text[4:6])


def _offset(value: Any) -> timedelta | None:
    m = re.fullmatch(r"([+-])(\d{1,2}):?(\d{2})", opt_str(value) or "")
    if not m:
        return None
    delta = timedelta(hours=int(m[2]), minutes=int(m[3]))
    return -delta if m[1] == "-" else delta


def activity_timestamp(activity: dict) -> str:
    """UTC `YYYY-MM-DDTHH:MM:SSZ` of an activity (see the module docstring for the rule)."""
    try:
        if opt_str(activity.get("gmtDate")) and opt_str(activity.get("gmtTime")):
            dt = datetime(*_date(activity["gmtDate"], "gmtDate"),
                          *_time(activity["gmtTime"], "gmtTime"), tzinfo=UTC)
        else:
            dt = datetime(*_date(activity.get("date"), "date"),
                          *_time(activity.get("time") or "0", "time"), tzinfo=UTC)
            offset = _offset(activity.get("gmtOffset"))
            if offset is not None:
                dt -= offset
    except ValueError as exc:  # e.g. month 13
        raise CarrierParseError(CARRIER, f"impossible activity time: {exc}") from None
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def estimated_delivery(package: dict) -> str | None:
    """RDD (rescheduled) over SDD (scheduled); DEL is the actual delivery, not an estimate."""
    dates = {d.get("type"): d.get("date") for d in package.get("deliveryDate") or []
             if isinstance(d, dict)}
    for kind in ("RDD", "SDD"):
        value = opt_str(dates.get(kind))
        if value:
            digits = _DIGITS.sub("", value)
            if len(digits) == 8:
                value = f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"
            estimate = normalise_estimate(value, CARRIER)
            if estimate:
                return estimate
    return None


def activity_location(activity: dict) -> str | None:
    return address_location(activity, "city", "stateProvince", "countryCode")


def parse_package(package: dict, requested: str) -> CarrierResult:
    estimate = estimated_delivery(package)
    current = package.get("currentStatus")
    activities = get_path(CARRIER, package, "activity", kind=list, required=False) or []
    events: list[TrackingEvent] = []
    for i, activity in enumerate(activities):  # newest first on the wire
        if not isinstance(activity, dict):
            raise CarrierParseError(CARRIER, f"activity[{i}] is not an object")
        node = activity.get("status")
        if not isinstance(node, dict) and i == 0:
            node = current  # a status-less newest activity is the current status
        status, raw_code = status_of(node)
        events.append(TrackingEvent(status, activity_location(activity),
                                    activity_timestamp(activity), estimate, raw_code, package))
    return CarrierResult(requested, True, oldest_first(events), estimate)


def parse_response(body: dict | bytes | str, requested: list[str] | str,
                   status_code: int = 200) -> dict[str, CarrierResult]:
    """A UPS answer for ONE number -> {number asked for: CarrierResult}."""
    number = only_number(CARRIER, requested)
    if status_code in (400, 404):
        codes = error_codes(body)
        # TV1002 (invalid number) and not-found codes belong to this number, not the request
        per_number = [c for c in codes if c.startswith(("TV", "TW"))]
        if per_number:
            return {number: CarrierResult(number, False, error=per_number[0])}
    if status_code != 200:
        raise classify_status(CARRIER, status_code, body, {})
    data = decode_body(CARRIER, body, status_code)
    shipment = get_path(CARRIER, data, "trackResponse", "shipment", 0)
    packages = get_path(CARRIER, shipment, "package", kind=list, required=False) or []
    if not packages:
        warnings = shipment.get("warnings") or []
        found = [opt_str(w.get("code")) for w in warnings if isinstance(w, dict)]
        code = NOT_FOUND if NOT_FOUND in found else next(filter(None, found), "NO_PACKAGE")
        return {number: CarrierResult(number, False, error=code)}
    chosen = answer_for(CARRIER, packages, "trackingNumber", number,
                        "trackResponse.shipment[0].package")
    return {number: parse_package(chosen, number)}


def request_headers(token: str) -> dict[str, str]:
    """UPS's headers for one HTTP request: a fresh `transId` each time."""
    return {"Authorization": f"Bearer {token}", "transId": uuid.uuid4().hex,
            "transactionSrc": TRANSACTION_SRC}


class UpsClient(OAuthClient):
    """UPS Tracking API client: OAuth (Basic auth, string fields), one number per request,
    a fresh `transId` per HTTP request; on 401 one token refresh and one retry."""

    carrier = CARRIER
    default_timeout = DEFAULT_TIMEOUT
    batch_size = 1

    async def _fetch_token(self) -> tuple[str, float]:
        response = await self._http.request(
            "POST", TOKEN_PATH, what="token",
            headers={"Authorization": basic_auth(self._client_id, self._client_secret)},
            data={"grant_type": "client_credentials"},
        )
        return token_from_answer(CARRIER, response)

    async def track(self, numbers: list[str]) -> dict[str, CarrierResult]:
        path = TRACK_PATH + quote(only_number(CARRIER, numbers), safe="")
        response = await self.authorised(lambda token: self._http.request(
            "GET", path, what="track", headers=lambda: request_headers(token),
            params={"locale": "en_US"},
        ))
        return parse_response(response.content, numbers, response.status_code)

    async def subscribe(self, numbers: list[str], url: str,
                        credential: str) -> tuple[list[str], list[str]]:
        """Track Alert subscription of up to 100 numbers to our webhook, with the credential
        UPS sends back (`Authorization: Bearer`): (valid, invalid) numbers."""
        if not 0 < len(numbers) <= SUBSCRIBE_BATCH:
            raise ValueError(f"ups subscribes 1..{SUBSCRIBE_BATCH} numbers per call")
        token = await self.tokens.get()
        response = await self._http.request(
            "POST", SUBSCRIBE_PATH, what="subscribe",
            headers=request_headers(token),
            json={"locale": "en_US", "countryCode": "US", "trackingNumberList": numbers,
                  "destination": {"url": url, "credentialType": "Bearer",
                                  "credential": credential}},
        )
        if response.status_code != 200:
            raise classify_status(CARRIER, response.status_code, response.content, {})
        data = decode_body(CARRIER, response.content)
        return (list(data.get("validTrackingNumbers") or []),
                list(data.get("invalidTrackingNumbers") or []))
