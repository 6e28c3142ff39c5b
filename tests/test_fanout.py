"""The fan-out, Cython and pure-Python twin alike: decode once, encode once, the delivery rule.

Every test runs against each built implementation; the property test feeds both the same
random messages and watcher states and compares every frame, backlog and counter.
"""

from __future__ import annotations

import importlib
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertrack import malformed, protocol, redis_layout
from ordertrack.push import connection, delivery, fanout
from ordertrack.push.hub import Watch
from tests.support import recording_connection

IMPLS = sorted(fanout.IMPLEMENTATIONS)


def payload_of(ws_frame: bytes) -> bytes:
    """The payload of one whole unmasked WebSocket text frame (and that it is one)."""
    assert ws_frame[0] == 0x81 and not ws_frame[1] & 0x80
    n, start = ws_frame[1], 2
    if n == 126:
        n, start = int.from_bytes(ws_frame[2:4], "big"), 4
    elif n == 127:
        n, start = int.from_bytes(ws_frame[2:10], "big"), 10
    assert len(ws_frame) == start + n
    return ws_frame[start:]


def message(seq: int, **overrides) -> dict:
    body = {
        "status": "in_transit", "location": "Newark NJ", "timestamp": "2025-10-03T14:00:00Z",
        "estimated_delivery": "2025-10-04", "carrier": "dhl",
        "raw_carrier_response": {"secret": "carrier internals"}, "seq": seq,
        "published_at": time.time(),
    }
    body.update(overrides)
    return body


def watch_of(*conns) -> Watch:
    watch = Watch()
    watch.conns.extend(conns)
    return watch


@pytest.fixture(params=IMPLS)
def impl(request):
    return fanout.IMPLEMENTATIONS[request.param]


def test_the_extension_is_built_and_chosen_by_default():
    assert set(IMPLS) == {"cython", "python"}
    assert fanout.IMPLEMENTATION == "cython"


def test_one_frame_for_every_watcher_without_carrier_internals(impl):
    out = impl()
    watchers = [recording_connection() for _ in range(10)]
    watch = watch_of(*watchers)
    body = message(7)

    assert out.publish("ord_1", watch, orjson.dumps(body)) == 10

    frames = [w.sent[0] for w in watchers]
    assert all(frame is frames[0] for frame in frames)  # built once, the same bytes for all
    assert payload_of(frames[0]) == protocol.tracking_update(body)
    assert frames[0] == connection.text_frame(protocol.tracking_update(body))
    sent = orjson.loads(payload_of(frames[0]))
    assert sent == {"event": "tracking_update", "data": {
        "status": "in_transit", "location": "Newark NJ", "timestamp": "2025-10-03T14:00:00Z",
        "estimated_delivery": "2025-10-04", "carrier": "dhl", "seq": 7}}
    assert watch.seq == 7 and all(w.sent_seq == 7 for w in watchers)
    # one latency observation per message, not per frame; published_at was just now
    assert sum(out.latency_counts()) == 1 and 0 <= out.latency_sum < 60
    assert (out.messages, out.frames, out.malformed) == (1, 10, 0)


def test_an_unacked_connection_holds_updates_until_the_ack(impl):
    out = impl()
    waiting, live = recording_connection(acked=False), recording_connection()
    watch = watch_of(waiting, live)
    for seq in (1, 2):
        out.publish("ord_1", watch, orjson.dumps(message(seq)))
    assert waiting.sent == [] and [s for s, _ in waiting.backlog] == [1, 2]
    assert [f for _, f in waiting.backlog] == [payload_of(f) for f in live.sent]
    assert waiting.held_bytes == sum(len(f) for _, f in waiting.backlog)


def test_a_connection_held_past_its_pending_bytes_is_closed_1013_and_the_others_get_it(impl):
    out = impl()
    held = recording_connection(acked=False, max_pending_bytes=1000)
    live, other_held = recording_connection(), recording_connection(acked=False)
    watch = watch_of(held, live, other_held)
    body = orjson.dumps(message(1, location="x" * 300))
    frame_size = len(protocol.tracking_update(redis_layout.decode_message(body)))
    seq = 0
    while held.close_reason is None:
        seq += 1
        out.publish("ord_1", watch, orjson.dumps(message(seq, location="x" * 300)))
    # closed by the update that would have passed 1,000 held bytes; what it held is let go
    assert seq == 1000 // frame_size + 1
    assert held.close_reason is protocol.SLOW_CONSUMER
    assert held.backlog is None and held.held_bytes == 0 and held.sent == []
    assert len(live.sent) == seq and other_held.close_reason is None
    assert [s for s, _ in other_held.backlog] == list(range(1, seq + 1))
    out.publish("ord_1", watch, orjson.dumps(message(seq + 1)))
    assert held.backlog is None and len(live.sent) == seq + 1


def test_never_a_seq_twice_nor_an_older_one(impl):
    out = impl()
    ahead = recording_connection(sent_seq=5)  # e.g. its ack carried seq 5
    watch = watch_of(ahead)
    for seq in (4, 5, 6, 6, 3):
        out.publish("ord_1", watch, orjson.dumps(message(seq)))
    assert [orjson.loads(payload_of(f))["data"]["seq"] for f in ahead.sent] == [6]
    assert watch.seq == 6


def test_nothing_reaches_a_connection_being_closed(impl):
    out = impl()
    closing = recording_connection()
    closing.close_reason = protocol.SLOW_CONSUMER
    assert out.publish("ord_1", watch_of(closing), orjson.dumps(message(1))) == 0
    assert closing.sent == [] and closing.backlog is None


BAD = [
    (b"not json", malformed.NOT_JSON),
    (b"", malformed.NOT_JSON),
    (b"[1, 2]", malformed.NOT_OBJECT),
    (b'"text"', malformed.NOT_OBJECT),
    (orjson.dumps(message("3")), malformed.BAD_SEQ),
    (orjson.dumps(message(1.0)), malformed.BAD_SEQ),
    (orjson.dumps(message(True)), malformed.BAD_SEQ),
    (orjson.dumps(message(0)), malformed.BAD_SEQ),
    (orjson.dumps(message(-4)), malformed.BAD_SEQ),
    (orjson.dumps(message(2**53 + 1)), malformed.BAD_SEQ),
    (orjson.dumps({k: v for k, v in message(1).items() if k != "seq"}), malformed.BAD_SEQ),
    (orjson.dumps(message(2**53)), malformed.BAD_SEQ),
    (orjson.dumps({k: v for k, v in message(1).items() if k != "status"}), malformed.MISSING_FIELD),
    (orjson.dumps({k: v for k, v in message(1).items() if k != "timestamp"}), malformed.MISSING_FIELD),
    (orjson.dumps(message(1, status=None)), malformed.BAD_FIELD),
    (orjson.dumps(message(1, timestamp=1759501320)), malformed.BAD_FIELD),
    (orjson.dumps(message(1, location="x" * (11 << 20))), malformed.PAYLOAD_TOO_LARGE),
]


@pytest.mark.parametrize(("payload", "reason"), BAD, ids=[r for _, r in BAD])
def test_a_bad_payload_reaches_nobody_and_the_next_one_flows(impl, payload, reason):
    reported = []
    out = impl(on_malformed=lambda order_id, why: reported.append((order_id, why)))
    watcher = recording_connection()
    watch = watch_of(watcher)

    assert out.publish("ord_bad", watch, payload) == 0
    assert reported == [("ord_bad", reason)]
    assert watcher.sent == [] and watch.seq == 0 and out.malformed == 1

    assert out.publish("ord_bad", watch, orjson.dumps(message(2**53 - 1))) == 1
    assert orjson.loads(payload_of(watcher.sent[0]))["data"]["seq"] == 2**53 - 1


def test_latency_only_for_messages_that_carry_published_at(impl):
    out = impl()
    watch = watch_of(recording_connection())
    out.publish("ord_1", watch, orjson.dumps({k: v for k, v in message(1).items()
                                             if k != "published_at"}))
    out.publish("ord_1", watch, orjson.dumps(message(2, published_at="yesterday")))
    out.publish("ord_1", watch, orjson.dumps(message(3)))
    assert out.frames == 3 and sum(out.latency_counts()) == 1


def test_latency_lands_in_the_bucket_of_its_bound(impl):
    """Prometheus buckets are `le`: 3 ms goes in the 5 ms bucket, 2 s in +Inf."""
    out = impl()
    watch = watch_of(recording_connection())
    for seq, age in ((1, 0.003), (2, 2.0)):
        out.publish("ord_1", watch, orjson.dumps(message(seq, published_at=time.time() - age)))
    counts = out.latency_counts()
    assert len(counts) == len(delivery.LATENCY_BUCKETS) + 1
    assert counts[delivery.LATENCY_BUCKETS.index(0.005)] == 1 and counts[-1] == 1
    assert sum(counts) == 2 and 2.0 < out.latency_sum < 60


FRAMERS = {"python": connection.text_frame}
if "cython" in connection.IMPLEMENTATIONS:  # the compiled build's (C), which its fan-out uses
    FRAMERS["cython"] = importlib.import_module("ordertrack.push._connection").text_frame


@pytest.mark.parametrize("framer", sorted(FRAMERS))
def test_text_frame_is_an_unmasked_final_text_frame(framer):
    text_frame = FRAMERS[framer]
    assert text_frame(b"hi") == b"\x81\x02hi"
    assert text_frame(b"") == b"\x81\x00"
    for n in (125, 126, 200, 65535, 65536, 70000):
        assert text_frame(b"x" * n) == connection.text_frame(b"x" * n)
        assert payload_of(text_frame(b"x" * n)) == b"x" * n
    assert text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert text_frame(b"x" * 70000)[:10] == b"\x81\x7f" + (70000).to_bytes(8, "big")


# --- both implementations, the same random input -----------------------------------------------
payloads = st.one_of(
    st.builds(lambda seq, status: orjson.dumps(message(seq, status=status, published_at=1.0)),
              st.integers(-2, 2**53 + 2), st.sampled_from(["in_transit", "delivered", None])),
    st.sampled_from([b"{", b"[]", b"null", orjson.dumps(message("1"))]),
    st.binary(max_size=20),
)
watcher_states = st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.booleans(),
                                    st.sampled_from([200, 600, 1 << 20])),
                          min_size=0, max_size=4)


@settings(max_examples=150, deadline=None)
@given(states=watcher_states, stream=st.lists(payloads, max_size=25))
def test_both_implementations_deliver_the_same_frames(states, stream):
    results = []
    for name in IMPLS:
        watchers = []
        for acked, sent_seq, closing, budget in states:
            w = recording_connection(acked=acked, sent_seq=sent_seq, max_pending_bytes=budget)
            if closing:
                w.close_reason = protocol.SERVER_SHUTDOWN
            watchers.append(w)
        calls = []
        out = fanout.IMPLEMENTATIONS[name](
            on_malformed=lambda order_id, why, calls=calls: calls.append((order_id, why)))
        watch = watch_of(*watchers)
        counts = [out.publish("ord_p", watch, payload) for payload in stream]
        results.append((counts, calls, watch.seq, out.messages, out.frames, out.malformed,
                        sum(out.latency_counts()),
                        [(w.sent, w.backlog, w.held_bytes, w.sent_seq, w.close_reason)
                         for w in watchers]))
    assert results[0] == results[1]
