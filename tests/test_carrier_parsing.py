"""Carrier parsers: every quirk of carriers.md, fed the real answer shapes (tests/fixtures)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from ordertrack.gateway.carriers import CarrierError, CarrierParseError, dhl, fedex, ups
from ordertrack.gateway.carriers.common import normalise_estimate, normalise_timestamp
from ordertrack.gateway.retry import (
    RetryPolicy,
    classify_status,
    is_daily_quota,
    parse_retry_after,
)

FIXTURES = Path(__file__).parent / "fixtures" / "carriers"


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def load(name: str) -> dict:
    return orjson.loads(raw(name))


# --- common: timestamps ---------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("2024-08-20T09:15:03Z", "2024-08-20T09:15:03Z"),
    ("2024-08-20T09:15:03", "2024-08-20T09:15:03Z"),            # no zone: UTC
    ("2024-08-20T09:15:03.532Z", "2024-08-20T09:15:03Z"),       # fraction dropped
    ("2024-08-20T09:15:03.1", "2024-08-20T09:15:03Z"),
    ("2024-08-20T09:15:03.123456789+00:00", "2024-08-20T09:15:03Z"),
    ("2024-08-20T12:41:57-04:00", "2024-08-20T16:41:57Z"),      # offset converted
    ("2024-08-20T01:00:00+02:00", "2024-08-19T23:00:00Z"),      # crosses midnight
    ("2024-08-20", "2024-08-20T00:00:00Z"),
])
def test_event_timestamps_become_utc_z(value, expected):
    assert normalise_timestamp(value) == expected


def test_estimates_keep_bare_dates_as_dates():
    assert normalise_estimate("2024-08-20") == "2024-08-20"
    assert normalise_estimate("2024-08-20T20:00:00-04:00") == "2024-08-21T00:00:00Z"
    assert normalise_estimate("") is None
    assert normalise_estimate(None) is None
    assert normalise_estimate("soon") is None  # advisory: dropped, not fatal


def test_unreadable_event_timestamp_is_a_parse_error():
    with pytest.raises(CarrierParseError, match="dhl: malformed .*unreadable timestamp"):
        normalise_timestamp("yesterday", "dhl")


# --- DHL ------------------------------------------------------------------------------------

def test_dhl_linked_shipment_keyed_by_number_asked_for():
    results = dhl.parse_response(raw("dhl_linked_out_for_delivery.json"), ["JD014600006281230704"])
    assert list(results) == ["JD014600006281230704"]
    result = results["JD014600006281230704"]
    assert result.found and result.tracking_number == "JD014600006281230704"
    assert result.estimated_delivery == "2024-08-20T18:00:00Z"


def test_dhl_events_oldest_first_with_normalised_times_and_out_for_delivery_text():
    result = dhl.parse_response(load("dhl_linked_out_for_delivery.json"), "JD1")["JD1"]
    got = [(e.timestamp, e.status, e.location, e.raw_code) for e in result.events]
    assert got == [
        ("2024-08-18T08:00:00Z", "label_created", None, "pre-transit"),
        ("2024-08-19T18:30:00Z", "in_transit", "Leipzig, DE", "transit"),
        ("2024-08-20T06:02:00Z", "in_transit", "Berlin, DE", "transit"),
        ("2024-08-20T09:15:03Z", "out_for_delivery", "Berlin, DE", "transit"),
    ]
    # the status block repeats the newest event: not duplicated
    assert len(result.events) == 4
    assert all(e.estimated_delivery == "2024-08-20T18:00:00Z" for e in result.events)
    assert result.events[0].raw["id"] == "7777777770"


def test_dhl_failure_unknown_delivered_and_bare_date_estimate(caplog):
    result = dhl.parse_response(raw("dhl_delivered_after_failure.json"), ["X"])["X"]
    assert [e.status for e in result.events] == [
        "unknown", "exception", "out_for_delivery", "delivered"]
    assert result.estimated_delivery == "2024-08-21"
    assert result.events[-1].timestamp == "2024-08-22T14:41:57Z"
    assert result.events[2].timestamp == "2024-08-22T08:05:10Z"


def test_dhl_status_only_answer_gives_one_event():
    result = dhl.parse_response(raw("dhl_status_only.json"), ["DHL1234567890"])["DHL1234567890"]
    assert [(e.status, e.location, e.timestamp) for e in result.events] == [
        ("in_transit", "Newark, NJ", "2025-10-03T14:02:00Z")]
    assert result.estimated_delivery == "2025-10-04"


def test_dhl_status_repeating_its_newest_event_with_more_detail_is_one_event():
    """DHL's shipment `status` is its newest event again, with the country added and the time
    in another format: one scan, kept once, with the fuller location."""
    result = dhl.parse_response(raw("dhl_status_repeats_newest_event.json"),
                                ["JD014600003BRKLYN"])["JD014600003BRKLYN"]
    got = [(e.timestamp, e.status, e.location) for e in result.events]
    assert got == [
        ("2025-10-02T09:00:00Z", "label_created", None),
        ("2025-10-02T22:40:00Z", "in_transit", "Cincinnati Hub, OH"),
        ("2025-10-03T14:02:00Z", "in_transit", "Brooklyn, NY, US"),
    ]


def test_dhl_404_and_empty_answers_are_not_found():
    result = dhl.parse_response(raw("dhl_not_found_404.json"), ["JD9"], 404)["JD9"]
    assert not result.found and result.error == "NOT_FOUND" and result.events == ()
    assert not dhl.parse_response({"shipments": []}, ["JD9"])["JD9"].found


@pytest.mark.parametrize("body", [b"<html><body>404 Not Found</body></html>", b""])
def test_dhl_404_without_its_problem_body_is_an_error_not_a_missing_shipment(body):
    """A wrong DHL_API_URL (the feature log's base URL already ends in /track/shipments)
    answers 404 from a web server: every order "not found" forever would hide it."""
    with pytest.raises(CarrierError) as info:
        dhl.parse_response(body, ["JD9"], 404)
    assert info.value.kind == "bad_request" and "DHL_API_URL" in str(info.value)


@pytest.mark.parametrize("code, text, expected", [
    ("pre-transit", "", "label_created"),
    ("transit", "Processed at hub", "in_transit"),
    ("transit", "Out for delivery", "out_for_delivery"),
    ("transit", "The shipment is with courier for delivery", "out_for_delivery"),
    ("transit", "With delivery courier", "out_for_delivery"),   # DHL Express checkpoint WC
    ("transit", "The shipment has been loaded onto the delivery vehicle", "out_for_delivery"),
    ("delivered", "", "delivered"),
    ("failure", "", "exception"),
    ("unknown", "", "unknown"),
    ("failure", "out for delivery", "exception"),   # text only upgrades `transit`
])
def test_dhl_status_table(code, text, expected):
    assert dhl.normalise_status(code, text) == expected


def test_dhl_unrecognised_code_is_unknown_and_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="ordertrack.gateway.carriers"):
        result = dhl.parse_response(raw("dhl_unrecognised_code.json"), ["JD1"])["JD1"]
    assert result.events[0].status == "unknown"
    assert result.events[0].raw_code == "customs-hold"
    assert "customs-hold" in caplog.text


@pytest.mark.parametrize("fixture, status, kind", [
    ("dhl_rate_limited_429.json", 429, "rate_limited"),
    ("dhl_daily_quota_429.json", 429, "daily_quota"),
    ("dhl_unauthorized_401.json", 401, "auth"),
])
def test_dhl_error_bodies_raise_typed_errors(fixture, status, kind):
    with pytest.raises(CarrierError) as info:
        dhl.parse_response(raw(fixture), ["JD1"], status)
    assert info.value.kind == kind and info.value.carrier == "dhl"
    assert info.value.status == status


# --- FedEx ----------------------------------------------------------------------------------

BATCH = ["794843185271", "123456789012", "770000000003", "770000000004"]


def test_fedex_batch_keyed_by_each_number():
    results = fedex.parse_response(raw("fedex_batch.json"), BATCH)
    assert list(results) == BATCH


def test_fedex_multiple_track_results_keep_the_latest_scan():
    result = fedex.parse_response(raw("fedex_batch.json"), BATCH)["794843185271"]
    assert result.found
    assert [e.status for e in result.events] == [
        "label_created", "shipped", "in_transit", "in_transit", "in_transit", "out_for_delivery"]
    assert result.events[0].timestamp == "2024-08-18T13:00:00Z"   # -04:00 converted
    assert result.events[-1].timestamp == "2024-08-20T11:41:57Z"
    assert result.events[-1].location == "BROOKLYN, NY, US"
    assert result.events[0].location is None
    # ESTIMATED_DELIVERY wins over both windows
    assert result.estimated_delivery == "2024-08-21T00:00:00Z"
    assert result.events[-1].raw["trackingNumberInfo"]["trackingNumberUniqueId"].startswith("2024")


def test_fedex_scan_listed_twice_and_latest_status_are_one_event():
    """A scan repeated in scanEvents (once without state and country, its time in UTC) and
    again in latestStatusDetail is one event; label created and picked up at the same place
    are two scans (the dev stack's two "Shipped OAKLAND" lines), so both stay."""
    result = fedex.parse_response(raw("fedex_repeated_scan.json"),
                                  ["772211334455"])["772211334455"]
    got = [(e.timestamp, e.status, e.raw_code, e.location) for e in result.events]
    assert got == [
        ("2025-10-01T23:50:00Z", "label_created", "OC", "OAKLAND, CA, US"),
        ("2025-10-02T00:20:00Z", "shipped", "PU", "OAKLAND, CA, US"),
        ("2025-10-03T03:30:00Z", "in_transit", "AR", "NEWARK, NJ, US"),
        ("2025-10-03T12:12:00Z", "out_for_delivery", "OD", "BROOKLYN, NY, US"),
    ]


def test_fedex_not_found_inside_http_200():
    result = fedex.parse_response(raw("fedex_batch.json"), BATCH)["123456789012"]
    assert not result.found
    assert result.error == "TRACKING.TRACKINGNUMBER.NOTFOUND"


def test_fedex_estimate_falls_back_to_windows():
    results = fedex.parse_response(raw("fedex_batch.json"), BATCH)
    # no ESTIMATED_DELIVERY: the estimated window (zone-less, taken as UTC)
    assert results["770000000003"].estimated_delivery == "2024-08-21T12:00:00Z"
    assert [e.status for e in results["770000000003"].events] == ["out_for_delivery", "delivered"]
    # empty estimated window: the standard transit window's end
    assert results["770000000004"].estimated_delivery == "2024-08-24T04:59:59Z"


def test_fedex_unknown_event_type_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="ordertrack.gateway.carriers"):
        result = fedex.parse_response(raw("fedex_batch.json"), BATCH)["770000000004"]
    assert [(e.status, e.raw_code) for e in result.events] == [("unknown", "ZZ"),
                                                                ("exception", "DE")]
    assert "'ZZ'" in caplog.text


def test_fedex_number_missing_from_answer():
    results = fedex.parse_response(raw("fedex_batch.json"), ["794843185271", "999"])
    assert results["999"].found is False and results["999"].error == "MISSING_FROM_ANSWER"


@pytest.mark.parametrize("code, expected", (
    [("OC", "label_created")] + [(c, "shipped") for c in ("OX", "EP", "PU", "PX", "AP")]
    + [(c, "in_transit") for c in ("IT", "IX", "AR", "AF", "AA", "AC", "AX", "DP", "LO", "OF",
                                   "SF", "FD", "EA", "EO", "PF", "PL", "PM", "TR", "AO", "CC",
                                   "CP")]
    + [(c, "out_for_delivery") for c in ("OD", "ED", "AD", "HL", "HP")]
    + [("DL", "delivered")]
    + [(c, "exception") for c in ("DE", "SE", "CD", "DY", "DD", "PD", "CA", "RS", "RD")]
    + [("XX", "unknown"), (None, "unknown"), ("od", "out_for_delivery")]
))
def test_fedex_status_table(code, expected):
    assert fedex.normalise_status(code) == expected


@pytest.mark.parametrize("fixture, status, kind", [
    ("fedex_unauthorized_401.json", 401, "auth"),
    ("fedex_bad_request_400.json", 400, "bad_request"),
    ("fedex_rate_limited_429.json", 429, "rate_limited"),
    ("fedex_daily_quota_429.json", 429, "daily_quota"),
    ("fedex_unavailable_503.json", 503, "server_error"),
])
def test_fedex_error_bodies(fixture, status, kind):
    with pytest.raises(CarrierError) as info:
        fedex.parse_response(raw(fixture), ["1"], status)
    assert info.value.kind == kind
    assert fixture != "fedex_unauthorized_401.json" or "NOT.AUTHORIZED.ERROR" in str(info.value)


# --- UPS ------------------------------------------------------------------------------------

def test_ups_activity_times_built_from_gmt_fields_and_padded():
    result = ups.parse_response(raw("ups_out_for_delivery.json"),
                                ["1Z023E2X0214323462"])["1Z023E2X0214323462"]
    got = [(e.timestamp, e.status, e.raw_code, e.location) for e in result.events]
    assert got == [
        ("2024-08-18T16:00:00Z", "label_created", "003", "US"),                  # gmtTime w/o colons
        ("2024-08-19T05:15:00Z", "in_transit", "005", "Louisville, KY, US"),  # "51500" padded
        ("2024-08-20T07:15:00Z", "in_transit", "005", "Secaucus, NJ, US"),    # local - offset
        ("2024-08-20T22:30:00Z", "exception", "034", "Secaucus, NJ, US"),
        # local "74700" = 07:47 at -04:00; gmt fields say 11:47 UTC
        ("2024-08-21T11:47:00Z", "out_for_delivery", "021", "Brooklyn, NY, US"),
    ]
    # RDD (rescheduled) beats SDD; a bare date stays a date
    assert result.estimated_delivery == "2024-08-21"
    assert all(e.estimated_delivery == "2024-08-21" for e in result.events)


def test_ups_del_is_not_an_estimate_and_unknown_type_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="ordertrack.gateway.carriers"):
        result = ups.parse_response(raw("ups_delivered.json"),
                                    "1Z999AA10123456784")["1Z999AA10123456784"]
    assert result.estimated_delivery == "2024-08-21"   # SDD, not DEL's 2024-08-22
    assert [e.status for e in result.events] == ["unknown", "delivered"]
    assert "'P'" in caplog.text
    assert ups.parse_response({"trackResponse": {"shipment": [{"package": [{
        "trackingNumber": "1Z", "deliveryDate": [{"type": "DEL", "date": "20240822"}],
        "activity": []}]}]}}, ["1Z"])["1Z"].estimated_delivery is None


def test_ups_feature_log_sample_uses_current_status_for_statusless_activity():
    result = ups.parse_response(raw("ups_feature_log_sample.json"), ["1Z999AA10123456784"])
    event, = result["1Z999AA10123456784"].events
    assert (event.status, event.location, event.timestamp) == (
        "in_transit", "LOUISVILLE, KY", "2025-10-03T14:00:00Z")


def test_ups_activity_listed_twice_is_one_event_with_the_fuller_location():
    """The newest activity comes twice (once with only a city and local time), and
    currentStatus repeats it too: one event."""
    result = ups.parse_response(raw("ups_repeated_activity.json"),
                                ["1Z999AA10123459999"])["1Z999AA10123459999"]
    got = [(e.timestamp, e.status, e.location) for e in result.events]
    assert got == [
        ("2025-10-01T13:00:00Z", "label_created", "US"),
        ("2025-10-03T03:30:00Z", "in_transit", "SECAUCUS, NJ, US"),
        ("2025-10-03T12:12:00Z", "out_for_delivery", "BROOKLYN, NY, US"),
    ]


def test_ups_not_found_warning_inside_http_200():
    result = ups.parse_response(raw("ups_not_found.json"), ["1ZNOTFOUND0000001"])
    assert result["1ZNOTFOUND0000001"].found is False
    assert result["1ZNOTFOUND0000001"].error == "TW0001"


def test_ups_invalid_number_is_per_number_and_429_is_rate_limited():
    result = ups.parse_response(raw("ups_invalid_400.json"), ["BAD"], 400)["BAD"]
    assert result.found is False and result.error == "TV1002"
    with pytest.raises(CarrierError) as info:
        ups.parse_response(raw("ups_rate_limited_429.json"), ["1Z"], 429)
    assert info.value.kind == "rate_limited" and "10429" in info.value.detail


@pytest.mark.parametrize("type_, code, expected", (
    [("M", None, "label_created"), ("I", None, "in_transit"), ("D", None, "delivered"),
     ("X", None, "exception"), ("MV", None, "exception"), ("NA", None, "unknown"),
     (None, None, "unknown"), ("Q", None, "unknown")]
    + [("I", "003", "label_created")] + [("I", c, "shipped") for c in ("038", "157")]
    + [("I", c, "out_for_delivery") for c in ("006", "021", "037", "072", "078", "089", "091",
                                              "146", "162", "017", "040")]
    + [("I", c, "delivered") for c in ("011", "026", "143")]
    + [("I", c, "exception") for c in ("022", "023", "024", "034", "035", "036", "060", "064")]
    + [("D", "005", "delivered"), ("I", "999", "in_transit"), ("M", "21", "out_for_delivery")]
))
def test_ups_status_table_overrides_before_type(type_, code, expected):
    assert ups.normalise_status(type_, code) == expected


# --- malformed bodies ------------------------------------------------------------------------

@pytest.mark.parametrize("module, body, needle", [
    (dhl, b"<html>502 Bad Gateway</html>", "not JSON"),
    (dhl, b"[1, 2]", "JSON list"),
    (dhl, {"shipment": []}, "missing shipments"),
    (dhl, {"shipments": {"id": 1}}, "shipments is a dict"),
    (dhl, {"shipments": [{"id": "x", "events": [{"statusCode": "transit"}]}]}, "timestamp"),
    (dhl, {"shipments": [{"id": "x", "events": ["oops"]}]}, "event is a str"),
    (fedex, b"", "not JSON"),
    (fedex, {"output": {}}, "missing output.completeTrackResults"),
    (fedex, {"output": {"completeTrackResults": [{"trackingNumber": "1"}]}}, "trackResults"),
    (fedex, {"output": {"completeTrackResults": [
        {"trackingNumber": "1", "trackResults": [{"scanEvents": [{"date": "bad"}]}]}]}},
     "unreadable timestamp"),
    (ups, b"{not json", "not JSON"),
    (ups, {"trackResponse": {}}, "missing trackResponse.shipment"),
    (ups, {"trackResponse": {"shipment": []}}, "missing trackResponse.shipment[0]"),
    (ups, {"trackResponse": {"shipment": [{"package": [{"activity": [{"date": "2024"}]}]}]}},
     "unreadable date"),
    (ups, {"trackResponse": {"shipment": [{"package": [{"activity": [
        {"date": "20241340", "time": "1"}]}]}]}}, "impossible activity time"),
])
def test_malformed_bodies_raise_parse_error_naming_carrier(module, body, needle):
    with pytest.raises(CarrierParseError) as info:
        module.parse_response(body, ["1"])
    assert info.value.kind == "malformed"
    assert info.value.carrier == module.CARRIER
    assert needle in str(info.value)
    assert str(info.value).startswith(f"{module.CARRIER}: malformed")


# --- retry decisions (pure) ------------------------------------------------------------------

def test_retry_after_seconds_and_http_date():
    now = datetime(2024, 8, 20, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Tue, 20 Aug 2024 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Tue, 20 Aug 2024 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_daily_quota_rule():
    assert is_daily_quota(raw("dhl_daily_quota_429.json"))
    assert is_daily_quota(raw("fedex_daily_quota_429.json"))
    assert not is_daily_quota(raw("dhl_rate_limited_429.json"))
    assert not is_daily_quota(raw("fedex_rate_limited_429.json"))
    assert not is_daily_quota(raw("ups_rate_limited_429.json"))
    error = classify_status("dhl", 429, raw("dhl_daily_quota_429.json"), {})
    assert error.kind == "daily_quota" and 0 < error.retry_after <= 86400


def test_policy_retries_only_retryable_kinds_and_honours_retry_after():
    policy = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=1.0, max_retry_after=5.0)
    for kind in ("rate_limited", "server_error", "timeout"):
        assert policy.delay(CarrierError("ups", kind), 0) is not None
        assert policy.delay(CarrierError("ups", kind), 3) is None   # at most 3 retries
    for kind in ("daily_quota", "auth", "bad_request", "malformed"):
        assert policy.delay(CarrierError("ups", kind, retry_after=1), 0) is None
    # Retry-After is a floor (plus a little jitter so replicas do not retry in step) ...
    assert 2.0 <= policy.delay(CarrierError("ups", "rate_limited", retry_after=2.0), 0) <= 2.01
    # ... and one longer than we may wait is not cut short: no retry in this cycle
    assert policy.delay(CarrierError("ups", "rate_limited", retry_after=600.0), 0) is None
    for retry in range(3):
        assert 0 <= policy.delay(CarrierError("ups", "timeout"), retry) <= 0.01 * 2 ** retry


@pytest.mark.parametrize("locality, country, expected", [
    ("Chicago IL", "US", "Chicago, IL, US"),
    ("Brooklyn NY", "US", "Brooklyn, NY, US"),
    ("Toronto ON", "CA", "Toronto, ON, CA"),
    ("Chicago, IL", "US", "Chicago, IL, US"),   # already written the usual way
    ("Chicago", "US", "Chicago, US"),
    ("Leipzig", "DE", "Leipzig, DE"),
    ("Hub LE", "DE", "Hub LE, DE"),            # outside the US and Canada: left alone
    (None, "US", "US"),
])
def test_dhl_writes_a_place_as_the_other_carriers_do(locality, country, expected):
    """DHL's "Chicago IL, US" reads "Chicago, IL, US", as FedEx and UPS give it."""
    node = {"location": {"address": {"addressLocality": locality, "countryCode": country}}}
    assert dhl.location(node) == expected


def test_a_label_scan_and_the_pickup_are_two_different_statuses_for_every_carrier():
    """FedEx OC, DHL pre-transit and UPS type M / 003 say the label exists and the carrier
    has not got the parcel yet: `label_created`, not `shipped` like the pickup after it."""
    assert fedex.normalise_status("OC") == "label_created"
    assert fedex.normalise_status("PU") == "shipped"
    assert dhl.normalise_status("pre-transit") == "label_created"
    assert ups.normalise_status("M") == "label_created"
    assert ups.normalise_status("I", "003") == "label_created"
