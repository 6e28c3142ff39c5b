"""The carriers' push (webhook) bodies, parsed by the same rules as their tracking answers.

Pure: bytes in, `CarrierResult`s out (one per tracking number the body names), or
`CarrierParseError` naming what is wrong. Each shape reuses its carrier's polling parser, so a
pushed scan normalises exactly as the same scan polled (status, UTC time, location, estimate)
and has the same scan identity.

- FedEx Advanced Integrated Visibility: a Track API `completeTrackResults` entry
  (`trackingNumber`, `trackResults[]`) plus the webhook's `eventId`/`eventCreateTime`.
- UPS Track Alert: one activity per callback: `trackingNumber`, `localActivityDate`,
  `localActivityTime`, `gmtActivityDate`/`gmtActivityTime`/`gmtOffset` when sent,
  `activityLocation`, `activityStatus{type,code,description}`, `scheduledDeliveryDate`.
  Without the Tracking API's `statusCode`, out for delivery (type `I`) is read from the
  description, as for DHL.
- DHL Unified Push: the Unified tracking shape, `{"shipments": [...]}`.
"""

from __future__ import annotations

from ordertrack.gateway.carriers import dhl, fedex, ups
from ordertrack.gateway.carriers.common import (
    CarrierParseError,
    decode_body,
    get_path,
    normalise_estimate,
    opt_str,
)
from ordertrack.models import CarrierResult, TrackingEvent


def parse_fedex(body: bytes | str | dict) -> list[CarrierResult]:
    data = decode_body(fedex.CARRIER, body)
    results = get_path(fedex.CARRIER, data, "trackResults", kind=list)
    number = opt_str(data.get("trackingNumber"))
    if number is None and results and isinstance(results[0], dict):
        info = results[0].get("trackingNumberInfo")
        number = opt_str(info.get("trackingNumber")) if isinstance(info, dict) else None
    if number is None:
        raise CarrierParseError(fedex.CARRIER, "missing trackingNumber")
    return [fedex.parse_track_result(fedex.choose_result(results), number)]


def _ups_estimate(data: dict) -> str | None:
    value = opt_str(data.get("scheduledDeliveryDate"))
    digits = "".join(ch for ch in value or "" if ch.isdigit())
    if len(digits) != 8:
        return None
    return normalise_estimate(f"{digits[:4]}-{digits[4:6]}-{digits[6:]}", ups.CARRIER)


def parse_ups(body: bytes | str | dict) -> list[CarrierResult]:
    data = decode_body(ups.CARRIER, body)
    number = opt_str(data.get("trackingNumber"))
    if number is None:
        raise CarrierParseError(ups.CARRIER, "missing trackingNumber")
    status = get_path(ups.CARRIER, data, "activityStatus")
    location = data.get("activityLocation")
    # the callback's activity in the Tracking API's activity shape, read by the same rules
    activity = {
        "date": data.get("localActivityDate"),
        "time": data.get("localActivityTime"),
        "gmtDate": data.get("gmtActivityDate"),
        "gmtTime": data.get("gmtActivityTime"),
        "gmtOffset": data.get("gmtOffset"),
        "location": {"address": location} if isinstance(location, dict) else None,
        "status": status,
    }
    normalised, raw_code = ups.status_of(status)
    if normalised == "in_transit" and dhl.OUT_FOR_DELIVERY_TEXT.search(
            opt_str(status.get("description")) or ""):
        # Track Alert sends no statusCode (072, 021, ...): the wording says out for delivery
        normalised = "out_for_delivery"
    estimate = _ups_estimate(data)
    event = TrackingEvent(normalised, ups.activity_location(activity),
                          ups.activity_timestamp(activity), estimate, raw_code, data)
    return [CarrierResult(number, True, (event,), estimate)]


def parse_dhl(body: bytes | str | dict) -> list[CarrierResult]:
    data = decode_body(dhl.CARRIER, body)
    shipments = get_path(dhl.CARRIER, data, "shipments", kind=list)
    results = []
    for i, shipment in enumerate(shipments):
        shipment_id = opt_str(shipment.get("id")) if isinstance(shipment, dict) else None
        if shipment_id is None:
            raise CarrierParseError(dhl.CARRIER, f"shipments[{i}] has no id")
        results.append(dhl.parse_shipment(shipment, shipment_id))
    return results


PARSERS = {"dhl": parse_dhl, "fedex": parse_fedex, "ups": parse_ups}
