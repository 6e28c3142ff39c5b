"""Each carrier's JSON, rendered from a shipment's reached events. Pure functions.

The shapes follow spec/carriers.md, quirks included: DHL varies its timestamp formats and has
no out-for-delivery code, FedEx times carry offsets (its estimated window does not), UPS gives
local dates and times (some hours without their leading zero) next to GMT ones and answers
every OAuth field as a string.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from ordertrack.sandbox import UPS_CLIENT_ID
from ordertrack.sandbox.shipments import Event, Place, Shipment, seed

# --- time formatting --------------------------------------------------------------------------


def utc_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def local_datetime(ts: float, place: Place) -> datetime:
    return datetime.fromtimestamp(ts, timezone(timedelta(minutes=place.utc_offset)))


def iso_z(ts: float) -> str:
    return utc_datetime(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_offset(ts: float, place: Place) -> str:
    """Local time with its offset, e.g. 2024-08-20T12:41:57-04:00."""
    return local_datetime(ts, place).isoformat(timespec="seconds")


def offset_text(place: Place) -> str:
    sign = "-" if place.utc_offset < 0 else "+"
    hours, minutes = divmod(abs(place.utc_offset), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def dhl_timestamp(ts: float, style: int) -> str:
    """DHL's formats vary: 0 = `...Z`, 1 = no zone (UTC wall time), 2 = fractional `...123Z`."""
    moment = utc_datetime(ts)
    if style == 1:
        return moment.strftime("%Y-%m-%dT%H:%M:%S")
    if style == 2:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ups_time(moment: datetime, strip_zero: bool) -> str:
    """HHMMSS; UPS drops the leading zero of early hours on some scans ("74700")."""
    text = moment.strftime("%H%M%S")
    return text[1:] if strip_zero and text.startswith("0") else text


# --- DHL --------------------------------------------------------------------------------------

DHL_TEXTS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "label_created": ("pre-transit", (
        ("Shipment information received", "The shipment data has been received electronically"),
        ("Pre-transit", "The instruction data for this shipment have been provided by the sender"),
    )),
    "picked_up": ("transit", (
        ("Picked up", "The shipment has been picked up"),
        ("Shipment picked up", "Shipment picked up by DHL courier"),
    )),
    "in_transit": ("transit", (
        ("Processed", "Processed at {city}"),
        ("Arrived at sort facility", "Arrived at DHL Sort Facility {city}"),
        ("Departed facility", "Departed Facility in {city}"),
    )),
    "out_for_delivery": ("transit", (
        ("out for delivery", "The shipment is out for delivery"),
        ("with courier for delivery", "Shipment is with courier for delivery"),
    )),
    "delivered": ("delivered", (
        ("Delivered", "The shipment has been successfully delivered"),
        ("Delivered", "Delivered - Signed for by receiver"),
    )),
    "exception": ("failure", (
        ("Delivery attempt failed", "The recipient was not present; the shipment is held"),
        ("Shipment on hold", "Shipment on hold - clearance event at {city}"),
    )),
}


def dhl_address(place: Place) -> dict[str, str]:
    locality = f"{place.city.title()} {place.region}" if place.country == "US" else place.city
    return {"addressLocality": locality, "countryCode": place.country, "postalCode": place.postal}


def dhl_event(shipment: Shipment, event: Event) -> dict[str, Any]:
    code, texts = DHL_TEXTS[event.step.kind]
    status, description = texts[event.step.variant % len(texts)]
    style = (seed("dhl", shipment.tracking_number) + event.index) % 3
    return {
        "timestamp": dhl_timestamp(event.timestamp, style),
        "location": {"address": dhl_address(event.step.place)},
        "statusCode": code,
        "status": status,
        "description": description.format(city=event.step.place.city.title()),
    }


def dhl_linked_id(tracking_number: str) -> str:
    return f"JJD{seed('dhl-linked', tracking_number) % 10**18:018d}"


def dhl_shipment(shipment: Shipment, service: str | None = None) -> dict[str, Any]:
    """One element of DHL's `shipments` list (the caller has already called `observe`)."""
    events = shipment.events()
    number = shipment.tracking_number
    body: dict[str, Any] = {
        "id": dhl_linked_id(number) if "LINKED" in number.upper() else number,
        "service": service or "express",
        "origin": {"address": dhl_address(shipment.steps[0].place)},
        "destination": {"address": dhl_address(shipment.steps[-1].place)},
        "status": dhl_event(shipment, events[-1]),
    }
    eta = shipment.estimated_delivery()
    details: dict[str, Any] = {"product": {"productName": "DHL Express"}, "proofOfDeliveryAvailable": False}
    if eta is not None:
        body["estimatedTimeOfDelivery"] = iso_z(eta)
        spread = 2 * 3600 / shipment.scale
        body["estimatedDeliveryTimeFrame"] = {
            "estimatedFrom": iso_z(max(eta - spread, events[-1].timestamp)),
            "estimatedThrough": iso_z(eta + spread),
        }
        body["estimatedTimeOfDeliveryRemark"] = "By End of Day"
        details["estimatedDeliveryDate"] = utc_datetime(eta).strftime("%Y-%m-%d")
    body["details"] = details
    body["events"] = [dhl_event(shipment, e) for e in reversed(events)]
    return body


def dhl_body(shipment: Shipment, service: str | None = None) -> dict[str, Any]:
    return {"shipments": [dhl_shipment(shipment, service)]}


def dhl_problem(status: int, title: str, detail: str, instance: str = "") -> dict[str, Any]:
    """A problem+json body, as DHL sends for every error."""
    body: dict[str, Any] = {"title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    return body


# --- FedEx ------------------------------------------------------------------------------------

#: kind -> variants of (code, derivedCode, statusByLocale, description)
FEDEX_CODES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "label_created": (("OC", "IN", "Label created", "Shipment information sent to FedEx"),),
    "picked_up": (("PU", "PU", "Picked up", "Picked up"),),
    "in_transit": (
        ("AR", "IT", "In transit", "Arrived at FedEx location"),
        ("DP", "IT", "In transit", "Departed FedEx location"),
        ("IT", "IT", "In transit", "In transit"),
    ),
    "out_for_delivery": (("OD", "OD", "On the way", "On FedEx vehicle for delivery"),),
    "delivered": (("DL", "DL", "Delivered", "Delivered"),),
    "exception": (
        ("DE", "DE", "Delivery exception", "Customer not available or business closed"),
        ("DY", "DY", "Delay", "Delay beyond our control"),
    ),
}


def fedex_code(event: Event) -> tuple[str, str, str, str]:
    variants = FEDEX_CODES[event.step.kind]
    return variants[event.step.variant % len(variants)]


def fedex_location(place: Place) -> dict[str, Any]:
    return {
        "streetLines": [""],
        "city": place.city.upper(),
        "stateOrProvinceCode": place.region,
        "postalCode": place.postal,
        "countryCode": place.country,
        "residential": False,
    }


def fedex_scan(event: Event) -> dict[str, Any]:
    code, derived, by_locale, description = fedex_code(event)
    return {
        "date": iso_offset(event.timestamp, event.step.place),
        "eventType": code,
        "eventDescription": description,
        "exceptionCode": "",
        "exceptionDescription": "",
        "scanLocation": fedex_location(event.step.place),
        "locationType": "FEDEX_FACILITY",
        "derivedStatusCode": derived,
        "derivedStatus": by_locale,
    }


def fedex_track_result(shipment: Shipment) -> dict[str, Any]:
    events = shipment.events()
    latest = events[-1]
    code, derived, by_locale, description = fedex_code(latest)
    destination = shipment.steps[-1].place
    dates: list[dict[str, str]] = []
    for event in reversed(events):
        if event.step.kind == "delivered":
            dates.append({"type": "ACTUAL_DELIVERY", "dateTime": iso_offset(event.timestamp, event.step.place)})
    eta = shipment.estimated_delivery()
    if eta is not None:
        dates.append({"type": "ESTIMATED_DELIVERY", "dateTime": iso_offset(eta, destination)})
    for event in events:
        if event.step.kind == "picked_up":
            dates.append({"type": "ACTUAL_PICKUP", "dateTime": iso_offset(event.timestamp, event.step.place)})
    ship_day = local_datetime(events[0].timestamp, events[0].step.place).strftime("%Y-%m-%dT00:00:00")
    dates.append({"type": "SHIP", "dateTime": ship_day + offset_text(events[0].step.place)})
    window: dict[str, Any] = {}
    if eta is not None:
        spread = 2 * 3600 / shipment.scale
        begins = local_datetime(max(eta - spread, latest.timestamp), destination)
        ends = local_datetime(eta + spread, destination)
        window = {  # FedEx sends this window without an offset
            "begins": begins.strftime("%Y-%m-%dT%H:%M:%S"),
            "ends": ends.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    scheduled = shipment.created_at + shipment.offsets[-1] / shipment.scale
    return {
        "trackingNumberInfo": {
            "trackingNumber": shipment.tracking_number,
            "trackingNumberUniqueId": f"2460~{shipment.tracking_number}~FX",
            "carrierCode": "FDXE",
        },
        "latestStatusDetail": {
            "code": code,
            "derivedCode": derived,
            "statusByLocale": by_locale,
            "description": description,
            "scanLocation": {
                "city": latest.step.place.city.upper(),
                "stateOrProvinceCode": latest.step.place.region,
                "countryCode": latest.step.place.country,
                "residential": False,
            },
        },
        "dateAndTimes": dates,
        "serviceDetail": {"type": "FEDEX_EXPRESS_SAVER", "description": "FedEx Express Saver"},
        "estimatedDeliveryTimeWindow": {"window": window},
        "standardTransitTimeWindow": {"window": {"ends": iso_offset(scheduled, destination)}},
        "scanEvents": [fedex_scan(e) for e in reversed(events)],
    }


def fedex_complete_result(tracking_number: str, shipments: list[Shipment]) -> dict[str, Any]:
    return {
        "trackingNumber": tracking_number,
        "trackResults": [fedex_track_result(s) for s in shipments],
    }


def fedex_not_found(tracking_number: str, code: str = "TRACKING.TRACKINGNUMBER.NOTFOUND",
                    message: str = "Tracking number cannot be found. Please correct the tracking number and try again.") -> dict[str, Any]:
    return {
        "trackingNumber": tracking_number,
        "trackResults": [{
            "trackingNumberInfo": {"trackingNumber": tracking_number, "trackingNumberUniqueId": "", "carrierCode": ""},
            "error": {"code": code, "message": message},
        }],
    }


def fedex_body(transaction_id: str, complete_results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"transactionId": transaction_id, "output": {"completeTrackResults": complete_results}}


def fedex_errors(transaction_id: str, code: str, message: str) -> dict[str, Any]:
    return {"transactionId": transaction_id, "errors": [{"code": code, "message": message}]}


def fedex_token(access_token: str, ttl: int) -> dict[str, Any]:
    return {"access_token": access_token, "token_type": "bearer", "expires_in": ttl, "scope": "CXS"}


# --- UPS --------------------------------------------------------------------------------------

#: kind -> variants of (type, code, statusCode, description, simplifiedTextDescription)
UPS_CODES: dict[str, tuple[tuple[str, str, str, str, str], ...]] = {
    "label_created": (("M", "MP", "003", "Shipper created a label, UPS has not received the package yet.", "Label Created"),),
    "picked_up": (("I", "OR", "005", "Origin Scan", "On the Way"),),
    "in_transit": (
        ("I", "AR", "005", "Arrived at Facility", "On the Way"),
        ("I", "DP", "005", "Departed from Facility", "On the Way"),
        ("I", "YP", "005", "Processing at UPS Facility", "On the Way"),
    ),
    "out_for_delivery": (
        ("I", "OT", "072", "Out For Delivery Today", "Out for Delivery"),
        ("I", "OF", "021", "Out For Delivery", "Out for Delivery"),
    ),
    "delivered": (("D", "KB", "011", "DELIVERED", "Delivered"), ("D", "FS", "011", "Delivered", "Delivered")),
    "exception": (
        ("X", "48", "022", "The receiver was not available for delivery. We'll make a second attempt the next business day.", "Delivery Attempted"),
        ("X", "U2", "034", "A delay has occurred. We're adjusting delivery plans as quickly as possible.", "Exception"),
    ),
}


def ups_code(event: Event) -> tuple[str, str, str, str, str]:
    variants = UPS_CODES[event.step.kind]
    return variants[event.step.variant % len(variants)]


def ups_address(place: Place) -> dict[str, str]:
    return {
        "city": place.city.upper(),
        "stateProvince": place.region,
        "postalCode": place.postal,
        "country": place.country,
        "countryCode": place.country,
    }


def ups_activity(shipment: Shipment, event: Event) -> dict[str, Any]:
    kind, code, status_code, description, _ = ups_code(event)
    local = local_datetime(event.timestamp, event.step.place)
    gmt = utc_datetime(event.timestamp)
    strip = (seed("ups", shipment.tracking_number) + event.index) % 2 == 0
    return {
        "location": {"address": ups_address(event.step.place), "slic": f"{seed('slic', event.step.place.city) % 10000:04d}"},
        "status": {"type": kind, "description": description, "code": code, "statusCode": status_code},
        "date": local.strftime("%Y%m%d"),
        "time": ups_time(local, strip),
        "gmtDate": gmt.strftime("%Y%m%d"),
        "gmtOffset": offset_text(event.step.place),
        "gmtTime": gmt.strftime("%H:%M:%S"),
    }


def ups_package(shipment: Shipment) -> dict[str, Any]:
    events = shipment.events()
    latest = events[-1]
    kind, code, status_code, description, simplified = ups_code(latest)
    destination = shipment.steps[-1].place
    scheduled = shipment.created_at + shipment.offsets[-1] / shipment.scale
    scheduled_day = local_datetime(scheduled, destination).strftime("%Y%m%d")
    delivery_dates = []
    delivered = [e for e in events if e.step.kind == "delivered"]
    eta = shipment.estimated_delivery()
    if delivered:
        moment = local_datetime(delivered[-1].timestamp, delivered[-1].step.place)
        delivery_dates.append({"type": "DEL", "date": moment.strftime("%Y%m%d")})
        delivery_time = {"type": "DEL", "startTime": "", "endTime": moment.strftime("%H%M%S")}
    else:
        delivery_dates.append({"type": "SDD", "date": scheduled_day})
        if eta is not None:
            eta_day = local_datetime(eta, destination).strftime("%Y%m%d")
            if eta_day != scheduled_day:
                delivery_dates.append({"type": "RDD", "date": eta_day})
        delivery_time = {"type": "EOD", "startTime": "", "endTime": "200000"}
    return {
        "trackingNumber": shipment.tracking_number,
        "deliveryDate": delivery_dates,
        "deliveryTime": delivery_time,
        "activity": [ups_activity(shipment, e) for e in reversed(events)],
        "currentStatus": {
            "type": kind,
            "code": code,
            "statusCode": status_code,
            "description": description,
            "simplifiedTextDescription": simplified,
        },
        "packageAddress": [
            {"type": "ORIGIN", "address": ups_address(shipment.steps[0].place)},
            {"type": "DESTINATION", "address": ups_address(destination)},
        ],
        "weight": {"unitOfMeasurement": "LBS", "weight": "2.00"},
        "service": {"code": "003", "levelCode": "GND", "description": "UPS Ground"},
        "packageCount": 1,
    }


def ups_body(shipment: Shipment) -> dict[str, Any]:
    return {"trackResponse": {"shipment": [{
        "inquiryNumber": shipment.tracking_number,
        "package": [ups_package(shipment)],
        "userRelation": [],
    }]}}


def ups_not_found(tracking_number: str) -> dict[str, Any]:
    """HTTP 200 with a warning and no `package`."""
    return {"trackResponse": {"shipment": [{
        "inquiryNumber": tracking_number,
        "userRelation": [],
        "warnings": [{"code": "TW0001", "message": "Tracking Information Not Found"}],
    }]}}


def ups_errors(code: str, message: str) -> dict[str, Any]:
    return {"response": {"errors": [{"code": code, "message": message}]}}


def ups_token(access_token: str, issued_at_ms: int, ttl: int) -> dict[str, str]:
    """Every field a string, as UPS sends it."""
    return {
        "token_type": "Bearer",
        "issued_at": str(issued_at_ms),
        "client_id": UPS_CLIENT_ID,
        "access_token": access_token,
        "expires_in": str(ttl),
        "status": "approved",
    }
