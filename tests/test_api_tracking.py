"""The REST answer's rules (api/tracking.py's pure functions), without HTTP: the document from
the store's order and history, and the stream's newer events merged into it."""

from __future__ import annotations

import orjson

from ordertrack import redis_layout
from ordertrack.api.tracking import apply_stream, build_document, timeline_key
from ordertrack.models import Order, StoredEvent


def order(**fields) -> Order:
    base = {"order_id": "ord_1", "user_id": "u1", "carrier": "dhl", "tracking_number": "JD1",
            "status": "in_transit", "last_update": "2025-10-03T12:00:00Z",
            "estimated_delivery": None, "seq": 2}
    return Order(**{**base, **fields})


def event(seq: int, status: str, timestamp: str, eta: str | None = None,
          location: str | None = "Hub") -> StoredEvent:
    return StoredEvent("ord_1", seq, status, location, timestamp, eta)


def entry(seq: int, status: str, timestamp: str, eta: str | None = None) -> redis_layout.StreamEntry:
    message = {"status": status, "location": "Stream hub", "timestamp": timestamp,
               "estimated_delivery": eta, "carrier": "dhl", "seq": seq}
    return redis_layout.StreamEntry(seq, orjson.dumps(message), message)


HISTORY = [event(1, "shipped", "2025-10-03T10:00:00Z", "2025-10-05"),
           event(2, "in_transit", "2025-10-03T12:00:00Z")]


def test_the_document_is_the_stores_order_with_its_history_by_scan_time():
    late = event(3, "in_transit", "2025-10-03T11:00:00Z")  # a late, older scan got seq 3
    doc = build_document(order(seq=3), [*HISTORY, late])
    assert doc["seq"] == 3 and doc["status"] == "in_transit"
    assert [item["seq"] for item in doc["history"]] == [1, 3, 2]
    assert doc["history"][0] == {"status": "shipped", "location": "Hub",
                                 "timestamp": "2025-10-03T10:00:00Z", "seq": 1}
    assert doc["user_id"] == "u1"  # for the owner check; app.py pops it before answering


def test_an_order_without_an_estimate_keeps_the_last_one_a_scan_gave():
    assert build_document(order(), HISTORY)["estimated_delivery"] == "2025-10-05"
    assert build_document(order(estimated_delivery="2025-10-09"), HISTORY)[
        "estimated_delivery"] == "2025-10-09"
    assert build_document(order(), [])["estimated_delivery"] is None


def test_seq_is_the_highest_the_order_or_its_history_knows():
    assert build_document(order(seq=7), HISTORY)["seq"] == 7
    assert build_document(order(seq=0), HISTORY)["seq"] == 2


def test_the_streams_newer_events_are_merged_by_the_order_state_rule():
    doc = build_document(order(), HISTORY)
    merged = apply_stream(doc, [entry(2, "in_transit", "2025-10-03T12:00:00Z"),  # known: ignored
                                entry(3, "out_for_delivery", "2025-10-04T08:00:00Z", "2025-10-04")])
    assert merged is not doc and doc["seq"] == 2  # a new document; the cached one is unchanged
    assert (merged["status"], merged["last_update"], merged["estimated_delivery"], merged["seq"]) \
        == ("out_for_delivery", "2025-10-04T08:00:00Z", "2025-10-04", 3)
    assert [item["seq"] for item in merged["history"]] == [1, 2, 3]
    assert merged["history"][-1]["location"] == "Stream hub"


def test_a_late_older_scan_from_the_stream_takes_its_place_but_moves_nothing():
    doc = build_document(order(status="delivered", last_update="2025-10-04T09:00:00Z"), HISTORY)
    merged = apply_stream(doc, [entry(3, "in_transit", "2025-10-03T11:00:00Z")])
    assert (merged["status"], merged["last_update"], merged["seq"]) == \
        ("delivered", "2025-10-04T09:00:00Z", 3)
    assert [item["seq"] for item in merged["history"]] == [1, 3, 2]


def test_nothing_newer_in_the_stream_is_the_same_document():
    doc = build_document(order(), HISTORY)
    assert apply_stream(doc, []) is doc
    assert apply_stream(doc, [entry(1, "shipped", "2025-10-03T10:00:00Z")]) is doc


def test_the_timeline_is_by_scan_time_then_seq():
    items = [{"timestamp": "2025-10-03T10:00:00Z", "seq": 2},
             {"timestamp": "2025-10-03T10:00:00Z", "seq": 1},
             {"timestamp": "2025-10-02T23:59:59Z", "seq": 3}]
    assert [item["seq"] for item in sorted(items, key=timeline_key)] == [3, 1, 2]
