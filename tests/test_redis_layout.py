"""The Redis layout's pure parts: names (hash tags), the message, stream entries, the state
hash and control messages, decoded once for every reader."""

from __future__ import annotations

import pytest

from ordertrack import malformed, protocol, redis_layout

MESSAGE = redis_layout.encode_message("dhl", 3, "in_transit", "Newark NJ", "2025-10-03T14:02:00Z",
                                      None, {"raw": 1}, 1.5)


def test_keys_a_script_touches_together_share_one_hash_tag():
    assert redis_layout.state("ord_1") == "order:tracking:state:{ord_1}"
    assert redis_layout.stream("ord_1") == "order:tracking:stream:{ord_1}"
    assert redis_layout.user("u1") == "ws:user:{u1}"
    assert redis_layout.quota("dhl") == "gateway:quota:{dhl}"
    assert redis_layout.quota_paused("dhl") == "gateway:quota:{dhl}:paused"
    assert redis_layout.polled("dhl") == "gateway:polled:{dhl}"
    assert redis_layout.claim("dhl", "ord_1") == "gateway:claim:{dhl}:ord_1"
    # channels are no keys: the pods' PSUBSCRIBE order:tracking:* and the id from the suffix
    assert redis_layout.channel("ord_1") == "order:tracking:ord_1"
    assert redis_layout.CHANNEL_PATTERN == "order:tracking:*"


def test_a_published_message_decodes_back():
    message = redis_layout.decode_message(MESSAGE)
    assert (message["seq"], message["status"], message["published_at"]) == (3, "in_transit", 1.5)


@pytest.mark.parametrize(("payload", "reason"), [
    (b"\xff", malformed.NOT_JSON),
    (b"[1]", malformed.NOT_OBJECT),
    (MESSAGE.replace(b'"seq":3', b'"seq":"3"'), malformed.BAD_SEQ),
    (MESSAGE.replace(b'"seq":3', b'"seq":0'), malformed.BAD_SEQ),
    (MESSAGE.replace(b'"seq":3', b'"seq":9223372036854775808'), malformed.BAD_SEQ),
    (MESSAGE.replace(b'"status":"in_transit"', b'"status":7'), malformed.BAD_FIELD),
    (MESSAGE.replace(b'"timestamp"', b'"time"'), malformed.MISSING_FIELD),
])
def test_a_bad_message_is_refused_with_its_reason(payload, reason):
    with pytest.raises(redis_layout.MalformedMessage) as refused:
        redis_layout.decode_message(payload)
    assert refused.value.reason == reason


def test_stream_entries_decode_once_and_unusable_ones_are_reported():
    skipped = []
    entries = [(b"3-0", {b"msg": MESSAGE}), (b"4-0", {b"other": b"x"}), ("5-0", {"msg": MESSAGE}),
               (b"6-0", {b"msg": b"not json"})]
    decoded = redis_layout.decode_stream(entries, lambda entry_id, exc: skipped.append(entry_id))
    assert [(entry.seq, entry.payload) for entry in decoded] == [(3, MESSAGE)]
    assert skipped == [b"4-0", "5-0", b"6-0"]   # 5-0 holds seq 3: not the entry it claims
    event = decoded[0].event("ord_1")
    assert (event.order_id, event.seq, event.status, event.location) == (
        "ord_1", 3, "in_transit", "Newark NJ")


def test_the_state_hash_reads_the_same_for_every_reader():
    raw = {b"status": b"in_transit", b"location": b"", b"carrier": b"dhl", b"seq": b"7"}
    state = redis_layout.decode_state(raw)
    assert (state.status, state.location, state.carrier, state.seq) == ("in_transit", None, "dhl", 7)
    assert redis_layout.decode_state({}) == redis_layout.OrderStateHash()
    assert redis_layout.state_seq(b"7") == redis_layout.state_seq("7") == 7
    for raw_seq in (None, b"", "", str(2**63), "-4", "abc", b"\xff"):
        assert redis_layout.state_seq(raw_seq) == 0, raw_seq
    assert protocol.valid_seq(0) and not protocol.valid_seq(True) and not protocol.valid_seq(2**63)


def test_control_messages_round_trip_and_bad_ones_say_why():
    assert redis_layout.decode_control(redis_layout.encode_evict("ws_conn_1")) == \
        redis_layout.ControlMessage("evict", "ws_conn_1")
    assert redis_layout.decode_control(redis_layout.encode_flag_changed()).op == "flag"
    # what register.lua publishes (cjson, op passed in ARGV) is the same message
    assert redis_layout.decode_control(b'{"connection_id":"ws_conn_2","op":"evict"}') == \
        redis_layout.ControlMessage("evict", "ws_conn_2")
    for bad, why in [(b'{"op":"evict","connection_id":["x"]}', "connection_id string"),
                     (b'{"op":"evict"}', "connection_id string"),
                     (b'["op"]', "unknown op"), (b'{"op":"reboot"}', "unknown op"),
                     (b"\xff not json", "unreadable")]:
        with pytest.raises(redis_layout.MalformedControl, match=why):
            redis_layout.decode_control(bad)
