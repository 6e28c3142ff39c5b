"""The carrier sandbox: pure timelines and shapes, then the real server over HTTP."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import UTC, datetime

import httpx
import pytest

from ordertrack.sandbox import shapes
from ordertrack.sandbox.faults import FaultBook, parse_fault
from ordertrack.sandbox.quota import Quota
from ordertrack.sandbox.shipments import Place, Shipment, Step, new_shipment, scripted_steps
from tests.support import REPO, free_port, wait_for, wait_http_ok

T0 = datetime(2025, 10, 3, 11, 47, 0, tzinfo=UTC).timestamp()  # 07:47 in Newark (UTC-4 -> -5 here)
NEWARK = Place("NEWARK", "NJ", "US", "07114", -300)


def fully_reached(carrier: str, number: str) -> Shipment:
    shipment = new_shipment(carrier, number, T0, scale=1.0)
    shipment.advance(len(shipment.steps), T0)
    return shipment


# --- pure: timelines ---------------------------------------------------------------------------


def test_timeline_is_deterministic_and_follows_the_script():
    steps = scripted_steps("dhl", "DHL1234567890")
    assert steps == scripted_steps("dhl", "DHL1234567890")
    kinds = [s.kind for s in steps]
    assert kinds[:2] == ["label_created", "picked_up"]
    assert 2 <= kinds.count("in_transit") <= 4
    assert kinds[-2:] == ["out_for_delivery", "delivered"]
    assert [s.kind for s in scripted_steps("ups", "1ZEXCEPTION9")][-1] == "exception"


def test_shipment_shows_only_reached_events_and_runs_time_scale_times_faster():
    shipment = new_shipment("fedex", "FX1", T0, scale=60.0)
    assert [e.step.kind for e in shipment.observe(T0)] == ["label_created"]
    pickup_after = shipment.steps[1].after  # shipment seconds
    assert len(shipment.observe(T0 + pickup_after / 60 - 1)) == 1
    events = shipment.observe(T0 + pickup_after / 60)
    assert [e.step.kind for e in events] == ["label_created", "picked_up"]
    assert events[1].timestamp == T0 + pickup_after / 60


def test_advance_adds_exactly_the_asked_steps_and_keeps_earlier_timestamps():
    shipment = new_shipment("dhl", "DHL42", T0, scale=1.0)
    first = shipment.observe(T0 + 5)
    assert shipment.advance(1, T0 + 10) == 1
    events = shipment.observe(T0 + 11)
    assert len(events) == len(first) + 1
    assert events[0] == first[0]
    assert events[1].timestamp == T0 + 10
    # the rest of the timeline follows on from the forced step
    next_due = T0 + 10 + shipment.steps[2].after
    assert len(shipment.observe(next_due - 1)) == 2
    assert len(shipment.observe(next_due)) == 3
    assert shipment.advance(100, T0 + 20) == len(shipment.steps) - 3
    assert shipment.finished and shipment.estimated_delivery() is None


def test_explicit_timeline_from_admin_events():
    shipment = new_shipment("ups", "1ZX", T0, events=[
        {"kind": "shipped"}, {"status": "out_for_delivery", "city": "Brooklyn", "after_seconds": 30},
    ])
    assert [s.kind for s in shipment.steps] == ["label_created", "out_for_delivery"]
    assert shipment.steps[1].place.city == "BROOKLYN"
    with pytest.raises(ValueError, match="unknown event kind"):
        new_shipment("ups", "1ZX", T0, events=[{"kind": "teleported"}])


# --- pure: shapes ------------------------------------------------------------------------------


def test_dhl_shape_varies_timestamps_and_has_no_out_for_delivery_code():
    shipment = fully_reached("dhl", "DHL1234567890")
    body = shapes.dhl_body(shipment)
    ship = body["shipments"][0]
    assert ship["id"] == "DHL1234567890"
    events = ship["events"]
    assert events[0]["statusCode"] == "delivered" and ship["status"] == events[0]
    assert [e["statusCode"] for e in events][-1] == "pre-transit"  # newest first
    stamps = [e["timestamp"] for e in events]
    assert any(s.endswith("Z") and "." not in s for s in stamps)
    assert any(not s.endswith("Z") for s in stamps)
    assert any("." in s for s in stamps)
    ofd = [e for e in events if "deliver" in e["status"] and e["statusCode"] == "transit"]
    assert ofd and ofd[0]["status"] in ("out for delivery", "with courier for delivery")
    assert {e["statusCode"] for e in events} <= {"pre-transit", "transit", "delivered"}
    assert set(events[0]["location"]["address"]) == {"addressLocality", "countryCode", "postalCode"}
    linked = shapes.dhl_body(fully_reached("dhl", "DHL77LINKED"))["shipments"][0]
    assert linked["id"] != "DHL77LINKED"


def test_dhl_shape_in_transit_has_estimates_and_bare_date():
    shipment = new_shipment("dhl", "DHL9", T0)
    shipment.observe(T0)
    ship = shapes.dhl_shipment(shipment)
    assert ship["status"]["statusCode"] == "pre-transit"
    assert ship["estimatedTimeOfDelivery"].endswith("Z")
    assert set(ship["estimatedDeliveryTimeFrame"]) == {"estimatedFrom", "estimatedThrough"}
    assert len(ship["details"]["estimatedDeliveryDate"]) == 10


def test_fedex_shape_times_carry_offsets_and_scans_are_newest_first():
    shipment = new_shipment("fedex", "FX5", T0)
    shipment.advance(3, T0 + 100)
    result = shapes.fedex_track_result(shipment)
    detail = result["latestStatusDetail"]
    assert set(detail) >= {"code", "derivedCode", "description", "statusByLocale", "scanLocation"}
    scans = result["scanEvents"]
    assert len(scans) == 4 and scans[-1]["eventType"] == "OC"
    parsed = [datetime.fromisoformat(s["date"]) for s in scans]
    assert all(p.tzinfo is not None for p in parsed) and parsed == sorted(parsed, reverse=True)
    types = {d["type"] for d in result["dateAndTimes"]}
    assert {"ESTIMATED_DELIVERY", "ACTUAL_PICKUP", "SHIP"} <= types
    window = result["estimatedDeliveryTimeWindow"]["window"]
    assert datetime.fromisoformat(window["ends"]).tzinfo is None  # FedEx's window has no offset
    assert datetime.fromisoformat(result["standardTransitTimeWindow"]["window"]["ends"]).tzinfo
    missing = shapes.fedex_not_found("FXNOTFOUND")
    assert missing["trackResults"][0]["error"]["code"] == "TRACKING.TRACKINGNUMBER.NOTFOUND"


def test_ups_shape_local_times_without_leading_zero_and_string_token():
    steps = (Step("label_created", NEWARK, 0.0), Step("picked_up", NEWARK, 60.0),
             Step("delivered", NEWARK, 60.0))
    shipment = Shipment("ups", "1Z999", steps, created_at=T0)
    shipment.observe(T0 + 130)
    package = shapes.ups_body(shipment)["trackResponse"]["shipment"][0]["package"][0]
    activity = package["activity"]
    assert [a["status"]["type"] for a in activity] == ["D", "I", "M"]
    assert {a["time"] for a in activity} & {"64700", "64800", "64900"}  # 06:47 local, no zero
    assert all(len(a["time"]) in (5, 6) for a in activity)
    assert activity[-1]["gmtTime"] == "11:47:00" and activity[-1]["gmtOffset"] == "-05:00"
    assert package["deliveryDate"][0]["type"] == "DEL"
    assert package["currentStatus"]["statusCode"] == "011"
    token = shapes.ups_token("abc", 1685542319575, 14399)
    assert all(isinstance(v, str) for v in token.values()) and token["expires_in"] == "14399"


# --- pure: quota and faults --------------------------------------------------------------------


def test_quota_refuses_over_the_hour_and_the_minute_burst():
    quota = Quota(per_hour=5, per_minute=2)
    assert quota.acquire(0) is None and quota.acquire(1) is None
    assert quota.acquire(2) == pytest.approx(58)
    assert quota.acquire(61) is None and quota.acquire(62) is None and quota.acquire(121) is None
    assert quota.acquire(200) == pytest.approx(3400)  # 5 in the hour


def test_faults_apply_to_the_next_matching_requests_only():
    book = FaultBook()
    book.add(parse_fault({"carrier": "ups", "kind": "503", "count": 2, "tracking_number": "1ZA"}))
    book.add(parse_fault({"carrier": "dhl", "kind": "daily_quota", "count": 1}))
    assert book.take("ups", ["1ZB"]) is None
    assert [book.take("ups", ["1ZA"]) for _ in range(3)] == ["503", "503", None]
    assert [book.take("dhl", ["X"]) for _ in range(3)] == ["daily_quota"] * 3
    with pytest.raises(ValueError, match="kind"):
        parse_fault({"carrier": "ups", "kind": "explode"})


# --- over HTTP ---------------------------------------------------------------------------------

DHL_HEADERS = {"DHL-API-Key": "sandbox-dhl-key"}
UPS_BASIC = "Basic " + base64.b64encode(b"sandbox-ups-id:sandbox-ups-secret").decode()


@pytest.fixture
def sandbox(procs):
    port = free_port()
    procs.start("sandbox", "--port", str(port), "--host", "127.0.0.1",
                env={"SANDBOX_SLOW_SECONDS": "3"})
    base = f"http://127.0.0.1:{port}"
    wait_http_ok(base + "/_admin/health")
    with httpx.Client(base_url=base, timeout=5.0) as client:
        yield client


def fedex_token(client: httpx.Client) -> str:
    answer = client.post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": "sandbox-fedex-id",
        "client_secret": "sandbox-fedex-secret"})
    assert answer.status_code == 200
    return answer.json()["access_token"]


def ups_headers(client: httpx.Client) -> dict[str, str]:
    answer = client.post("/security/v1/oauth/token", data={"grant_type": "client_credentials"},
                         headers={"Authorization": UPS_BASIC})
    assert answer.status_code == 200
    return {"Authorization": "Bearer " + answer.json()["access_token"],
            "transId": "t1", "transactionSrc": "ordertrack-tests"}


def fedex_track(client, token, *numbers):
    return client.post("/track/v1/trackingnumbers", headers={"Authorization": f"Bearer {token}"},
                       json={"includeDetailedScans": True, "trackingInfo": [
                           {"trackingNumberInfo": {"trackingNumber": n}} for n in numbers]})


def test_dhl_over_http_shapes_errors_advance_and_stats(sandbox):
    unauthorized = sandbox.get("/track/shipments", params={"trackingNumber": "DHL1"})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["content-type"] == "application/problem+json"
    missing = sandbox.get("/track/shipments", params={"trackingNumber": "DHLNOTFOUND1"},
                          headers=DHL_HEADERS)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["title"] == "No result found" and missing.json()["status"] == 404

    first = sandbox.get("/track/shipments", params={"trackingNumber": "DHL1"}, headers=DHL_HEADERS)
    assert first.status_code == 200
    ship = first.json()["shipments"][0]
    assert ship["id"] == "DHL1" and ship["status"]["statusCode"] == "pre-transit"
    assert len(ship["events"]) == 1

    moved = sandbox.post("/_admin/advance", json={"tracking_number": "DHL1", "steps": 1}).json()
    assert moved["advanced"][0]["new_events"] == 1
    again = sandbox.get("/track/shipments", params={"trackingNumber": "DHL1", "service": "express"},
                        headers=DHL_HEADERS).json()["shipments"][0]
    assert len(again["events"]) == 2 and again["events"][1] == ship["events"][0]
    linked = sandbox.get("/track/shipments", params={"trackingNumber": "DHL2LINKED"},
                         headers=DHL_HEADERS).json()["shipments"][0]
    assert linked["id"] != "DHL2LINKED"

    stats = sandbox.get("/_admin/stats").json()
    assert stats["dhl"]["requests"] == 5 and stats["dhl"]["tracking_numbers"]["DHL1"] == 3
    assert [r["numbers"] for r in stats["recent"]][-1] == ["DHL2LINKED"]
    assert sandbox.post("/_admin/advance", json={"tracking_number": "NOPE"}).status_code == 404
    created = sandbox.post("/_admin/advance", json={"tracking_number": "NEW1", "carrier": "dhl",
                                                    "steps": 2}).json()["advanced"][0]
    assert created["reached"] == 3 and created["status"] == "in_transit"


def test_fedex_oauth_batches_multi_results_and_token_expiry(sandbox):
    bad = sandbox.post("/oauth/token", data={"grant_type": "client_credentials",
                                             "client_id": "x", "client_secret": "y"})
    assert bad.status_code == 401
    answer = sandbox.post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": "sandbox-fedex-id",
        "client_secret": "sandbox-fedex-secret"}).json()
    assert answer["token_type"] == "bearer" and answer["scope"] == "CXS"
    assert isinstance(answer["expires_in"], int)
    token = answer["access_token"]

    results = fedex_track(sandbox, token, "FX1", "FXNOTFOUND2", "FX3MULTI")
    assert results.status_code == 200
    complete = results.json()["output"]["completeTrackResults"]
    assert [c["trackingNumber"] for c in complete] == ["FX1", "FXNOTFOUND2", "FX3MULTI"]
    assert complete[0]["trackResults"][0]["latestStatusDetail"]["code"] == "OC"
    assert complete[1]["trackResults"][0]["error"]["code"] == "TRACKING.TRACKINGNUMBER.NOTFOUND"
    older, newer = complete[2]["trackResults"]
    assert older["latestStatusDetail"]["code"] == "DL"
    assert older["scanEvents"][0]["date"] < newer["scanEvents"][0]["date"]

    too_many = fedex_track(sandbox, token, *[f"FX{i}" for i in range(31)])
    assert too_many.status_code == 400 and too_many.json()["errors"][0]["code"]

    assert fedex_track(sandbox, "made-up", "FX1").json()["errors"][0]["code"] == "NOT.AUTHORIZED.ERROR"
    assert sandbox.post("/_admin/tokens/expire", json={"carrier": "fedex"}).json()["expired"] == 1
    expired = fedex_track(sandbox, token, "FX1")
    assert expired.status_code == 401
    assert expired.json()["errors"][0]["code"] == "NOT.AUTHORIZED.ERROR"
    assert "transactionId" in expired.json()
    assert fedex_track(sandbox, fedex_token(sandbox), "FX1").status_code == 200
    assert sandbox.get("/_admin/stats").json()["fedex"]["token_requests"] == 3


def test_ups_oauth_headers_invalid_and_not_found(sandbox):
    assert sandbox.post("/security/v1/oauth/token", data={"grant_type": "client_credentials"},
                        headers={"Authorization": "Basic eDp5"}).status_code == 401
    token = sandbox.post("/security/v1/oauth/token", data={"grant_type": "client_credentials"},
                         headers={"Authorization": UPS_BASIC}).json()
    assert all(isinstance(v, str) for v in token.values())
    assert token["expires_in"] == "14399" and token["status"] == "approved"
    headers = {"Authorization": "Bearer " + token["access_token"], "transId": "t1",
               "transactionSrc": "tests"}
    url = "/api/track/v1/details/{}?locale=en_US"

    no_trans = sandbox.get(url.format("1Z1"), headers={"Authorization": headers["Authorization"]})
    assert no_trans.status_code == 400
    invalid = sandbox.get(url.format("1ZINVALID"), headers=headers)
    assert invalid.status_code == 400
    assert invalid.json()["response"]["errors"][0]["code"] == "TV1002"
    missing = sandbox.get(url.format("1ZNOTFOUND"), headers=headers)
    assert missing.status_code == 200
    shipment = missing.json()["trackResponse"]["shipment"][0]
    assert "package" not in shipment and shipment["warnings"][0]["code"] == "TW0001"

    found = sandbox.get(url.format("1Z1"), headers=headers).json()
    package = found["trackResponse"]["shipment"][0]["package"][0]
    assert package["trackingNumber"] == "1Z1"
    assert package["currentStatus"]["type"] == "M"
    assert package["deliveryDate"][0]["type"] == "SDD" and len(package["deliveryDate"][0]["date"]) == 8
    assert set(package["activity"][0]) >= {"date", "time", "gmtDate", "gmtTime", "gmtOffset",
                                          "location", "status"}
    assert sandbox.get(url.format("1Z1"), headers={**headers, "Authorization": "Bearer x"}
                       ).status_code == 401


def test_faults_in_each_carriers_shape(sandbox):
    def fault(**body):
        assert sandbox.post("/_admin/faults", json=body).status_code == 200

    def dhl(number="DHL1", **kw):
        return sandbox.get("/track/shipments", params={"trackingNumber": number},
                           headers=DHL_HEADERS, **kw)

    fault(carrier="dhl", kind="503", count=1, tracking_number="DHL1")
    assert dhl("DHL2").status_code == 200  # another number is not affected
    unavailable = dhl()
    assert unavailable.status_code == 503 and unavailable.json()["status"] == 503
    assert dhl().status_code == 200

    fault(carrier="dhl", kind="malformed", count=1)
    broken = dhl()
    assert broken.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.text)

    fault(carrier="dhl", kind="slow", count=1)
    with pytest.raises(httpx.ReadTimeout):
        dhl(timeout=0.5)

    token = fedex_token(sandbox)
    fault(carrier="fedex", kind="429", count=1)
    limited = fedex_track(sandbox, token, "FX1")
    assert limited.status_code == 429 and "retry-after" not in limited.headers
    assert limited.json()["errors"][0]["code"]

    headers = ups_headers(sandbox)
    url = "/api/track/v1/details/1Z1"
    fault(carrier="ups", kind="429_retry_after", count=1)
    retry = sandbox.get(url, headers=headers)
    assert retry.status_code == 429 and retry.headers["retry-after"] == "1"
    fault(carrier="ups", kind="401", count=1)
    assert sandbox.get(url, headers=headers).status_code == 401
    assert sandbox.get(url, headers=headers).status_code == 200  # rejected once only

    fault(carrier="ups", kind="daily_quota", count=1)
    for _ in range(3):
        daily = sandbox.get(url, headers=headers)
        assert daily.status_code == 429
        assert "daily quota" in daily.json()["response"]["errors"][0]["message"].lower()
    sandbox.post("/_admin/reset")
    assert sandbox.get(url, headers=headers).status_code == 200
    assert sandbox.get("/_admin/stats").json()["ups"]["requests"] == 1


def test_quota_answers_429_in_the_carriers_shape(sandbox):
    config = sandbox.post("/_admin/config", json={"ups_quota_per_hour": 2,
                                                  "dhl_quota_per_minute": 1}).json()
    assert config["ups_quota_per_hour"] == 2
    headers = ups_headers(sandbox)
    codes = [sandbox.get(f"/api/track/v1/details/1Z{i}", headers=headers) for i in range(3)]
    assert [c.status_code for c in codes] == [200, 200, 429]
    assert codes[2].json() == {"response": {"errors": [{"code": "10429",
                                                        "message": "Too Many Requests"}]}}
    assert not any(h.lower().startswith(("retry-after", "x-ratelimit")) for h in codes[2].headers)

    params = {"trackingNumber": "DHL1"}
    assert sandbox.get("/track/shipments", params=params, headers=DHL_HEADERS).status_code == 200
    burst = sandbox.get("/track/shipments", params=params, headers=DHL_HEADERS)
    assert burst.status_code == 429 and burst.json()["title"] == "Too Many Requests"
    assert int(burst.headers["retry-after"]) > 0
    assert sandbox.post("/_admin/config", json={"bogus": 1}).status_code == 400


def test_time_scale_moves_explicit_shipments(procs):
    port = free_port()
    procs.start("sandbox", "--port", str(port), "--time-scale", "600")
    base = f"http://127.0.0.1:{port}"
    wait_http_ok(base + "/_admin/health")
    with httpx.Client(base_url=base, timeout=5.0) as client:
        created = client.post("/_admin/shipments", json={
            "carrier": "dhl", "tracking_number": "DHLFAST", "events": [
                {"kind": "label_created"}, {"kind": "out_for_delivery", "after_seconds": 120},
                {"kind": "delivered", "after_seconds": 120}]})
        assert created.status_code == 201 and created.json()["reached"] == 1

        def status():
            answer = client.get("/track/shipments", params={"trackingNumber": "DHLFAST"},
                                headers=DHL_HEADERS).json()["shipments"][0]
            return answer["status"]["statusCode"] == "delivered" and answer

        delivered = wait_for(status, timeout=5, what="DHLFAST delivered")
        assert [e["statusCode"] for e in delivered["events"]] == ["delivered", "transit", "pre-transit"]
        assert client.post("/_admin/shipments", json={"carrier": "dhl"}).status_code == 400


def test_cli_rejects_a_bad_setting_with_one_line():
    done = subprocess.run([sys.executable, "-m", "ordertrack", "sandbox", "--port", "http"],
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "sandbox-port='http'" in done.stderr and "TCP port" in done.stderr
