"""One rule for a tracking message: `redis_layout.decode_message` (stream entries, the REST
history, the fan-out's twin) and the Cython fan-out accept exactly the same payloads, give the
same reason for the same bad one, and build the same client frame for a good one.

Payloads are whole messages (`redis_layout.encode_message`) broken at random: fields dropped,
fields given other JSON values, other JSON documents, bytes that are not JSON.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ordertrack import malformed, protocol, redis_layout
from ordertrack.push import fanout
from ordertrack.push.hub import Watch
from tests.support import recording_connection
from tests.test_fanout import payload_of

IMPLS = sorted(fanout.IMPLEMENTATIONS)
KEYS = ("status", "location", "timestamp", "estimated_delivery", "carrier",
        "raw_carrier_response", "seq", "published_at")


def by_the_rule(payload: bytes) -> tuple:
    """("frame", bytes, seq) for a good message, ("malformed", reason) for a bad one."""
    try:
        message = redis_layout.decode_message(payload)
    except redis_layout.MalformedMessage as exc:
        return ("malformed", exc.reason)
    return ("frame", protocol.tracking_update(message), message["seq"])


def by_the_fanout(name: str, payload: bytes) -> tuple:
    reasons: list[str] = []
    out = fanout.IMPLEMENTATIONS[name](on_malformed=lambda _order_id, why: reasons.append(why))
    watcher = recording_connection()
    watch = Watch()
    watch.conns.append(watcher)
    delivered = out.publish("ord_rule", watch, payload)
    if reasons:
        assert delivered == 0 and watcher.sent == [] and out.malformed == 1
        return ("malformed", reasons[0])
    assert delivered == 1 and len(watcher.sent) == 1 and watch.seq == watcher.sent_seq
    return ("frame", payload_of(watcher.sent[0]), watch.seq)


def assert_one_rule(payload: bytes) -> tuple:
    expected = by_the_rule(payload)
    for name in IMPLS:
        assert by_the_fanout(name, payload) == expected, name
    return expected


# --- payloads ----------------------------------------------------------------------------------
texts = st.text(max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6)
seqs = st.one_of(st.integers(1, protocol.MAX_SEQ),
                 st.sampled_from([0, -1, protocol.MAX_SEQ + 1, 2**63, True, 1.0, "1", None]))
whole = st.builds(
    redis_layout.encode_message,
    carrier=st.sampled_from(["dhl", "ups", "fedex"]), seq=st.integers(1, protocol.MAX_SEQ),
    status=st.sampled_from(["label_created", "in_transit", "delivered"]),
    location=st.none() | texts, timestamp=texts, estimated_delivery=st.none() | texts,
    raw=st.none() | st.dictionaries(texts, json_values, max_size=3),
    published_at=st.floats(0, 2e9))


@st.composite
def broken(draw) -> bytes:
    """A whole message with some fields dropped and some given other values."""
    message = orjson.loads(draw(whole))
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True)):
        del message[key]
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True)):
        message[key] = draw(seqs if key == "seq" else json_values)
    return orjson.dumps(message)


payloads = st.one_of(
    whole, broken(), broken(),
    json_values.map(orjson.dumps),        # other JSON documents (arrays, numbers, ...)
    st.binary(max_size=40),               # mostly not JSON at all
)


@settings(max_examples=400, deadline=None)
@given(payload=payloads)
@example(payload=redis_layout.encode_message("dhl", 1, "in_transit", None, "t", None, None, 1.0))
@example(payload=b'{"seq": 1, "status": "in_transit"}')      # what the old fan-out let through
def test_the_rule_the_twin_and_the_cython_fanout_agree(payload):
    assert_one_rule(payload)


# --- the rule itself: which reason, in which order ---------------------------------------------
def whole_message(**overrides) -> dict:
    message = orjson.loads(redis_layout.encode_message(
        "dhl", 3, "in_transit", "Newark NJ", "2025-10-03T14:02:00Z", None, {"raw": 1}, 1.5))
    message.update(overrides)
    return message


def without(*keys: str) -> bytes:
    return orjson.dumps({k: v for k, v in whole_message().items() if k not in keys})


CASES = [
    (b"x" * (malformed.MAX_PAYLOAD_BYTES + 1), malformed.PAYLOAD_TOO_LARGE),
    (b"{not json", malformed.NOT_JSON),
    (b"[1]", malformed.NOT_OBJECT),
    (orjson.dumps(whole_message(seq="3")), malformed.BAD_SEQ),
    (without("seq", "status"), malformed.BAD_SEQ),            # seq is checked first
    (without("status"), malformed.MISSING_FIELD),
    (without("timestamp", "location"), malformed.MISSING_FIELD),
    (orjson.dumps(whole_message(status=7, carrier=None) | {"location": None}), malformed.BAD_FIELD),
    (orjson.dumps({k: v for k, v in whole_message(status=7).items() if k != "timestamp"}),
     malformed.MISSING_FIELD),                                # absence before type
    (orjson.dumps(whole_message(timestamp=None)), malformed.BAD_FIELD),
]


@pytest.mark.parametrize(("payload", "reason"), CASES, ids=[f"{i}-{r}" for i, (_, r) in enumerate(CASES)])
def test_each_bad_message_gets_the_first_reason_that_applies(payload, reason):
    assert assert_one_rule(payload) == ("malformed", reason)


def test_a_whole_message_gives_the_client_fields_only():
    kind, frame, seq = assert_one_rule(orjson.dumps(whole_message(location=None)))
    assert kind == "frame" and seq == 3
    assert orjson.loads(frame) == {"event": "tracking_update", "data": {
        "status": "in_transit", "location": None, "timestamp": "2025-10-03T14:02:00Z",
        "estimated_delivery": None, "carrier": "dhl", "seq": 3}}


def test_fields_a_publisher_leaves_out_reach_the_client_as_null():
    """Only seq, status and timestamp are required: another publisher's sparse message flows."""
    kind, frame, seq = assert_one_rule(without("location", "estimated_delivery", "carrier",
                                               "raw_carrier_response", "published_at"))
    assert kind == "frame" and seq == 3
    assert orjson.loads(frame)["data"] == {
        "status": "in_transit", "location": None, "timestamp": "2025-10-03T14:02:00Z",
        "estimated_delivery": None, "carrier": None, "seq": 3}
