"""The delivery rules (push/delivery.py), without sockets: hold until the ack, never a `seq`
twice, the resume gap rule, replay from a stream."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from ordertrack import protocol, redis_layout
from ordertrack.push import connection, delivery
from ordertrack.push.connection import HOLD, NO_SEQ, OVERFLOW, SEND, SKIP
from tests.support import recording_connection


def entry(seq: int, status: str = "in_transit") -> tuple[bytes, dict]:
    message = {"status": status, "location": "Newark NJ", "timestamp": "t", "estimated_delivery": None,
               "carrier": "dhl", "raw_carrier_response": {"x": 1}, "seq": seq}
    return f"{seq}-0".encode(), {b"msg": orjson.dumps(message)}


def events(*entries):
    return redis_layout.decode_stream(entries)


def seqs(frames: list[bytes]) -> list:
    return [orjson.loads(f)["data"].get("seq", orjson.loads(f)["event"]) for f in frames]


def test_updates_before_the_ack_are_held_in_order_then_released_without_duplicates():
    conn = recording_connection(acked=False)
    assert conn.offer(b"u3", 3) == HOLD
    assert conn.offer(b"u2", 2) == HOLD
    assert conn.offer(b"err", NO_SEQ) == HOLD
    assert conn.offer(b"u3-again", 3) == HOLD
    assert conn.held_bytes == len(b"u3u2erru3-again")
    conn.sent_seq = 2  # the ack's state said the client is at seq 2
    assert delivery.flush_backlog(conn) == [b"u3", b"err"]
    assert conn.acked and conn.backlog is None and conn.held_bytes == 0 and conn.sent_seq == 3


def test_held_updates_past_the_pending_bytes_budget_close_the_connection():
    conn = recording_connection(acked=False, max_pending_bytes=10)
    assert conn.offer(b"aaaa", 1) == HOLD
    assert conn.offer(b"bbbbbb", 2) == HOLD  # 10 bytes: at the budget, not past it
    assert conn.offer(b"c", 3) == OVERFLOW
    # what it held is let go: the client will resume from its last seq on a new connection
    assert conn.backlog is None and conn.held_bytes == 0
    # an acked connection's frames are not held, so they are not counted here
    live = recording_connection(max_pending_bytes=10)
    assert live.offer(b"x" * 50, 1) == SEND and live.held_bytes == 0


def test_a_single_update_larger_than_the_budget_overflows_at_once():
    conn = recording_connection(acked=False, max_pending_bytes=10)
    assert conn.offer(b"x" * 11, 1) == OVERFLOW
    assert conn.backlog is None


def test_a_seq_the_client_has_is_never_sent_again():
    conn = recording_connection(sent_seq=5)
    assert conn.offer(b"old", 5) == SKIP
    assert conn.offer(b"older", 4) == SKIP
    assert conn.offer(b"new", 6) == SEND
    assert conn.offer(b"new", 6) == SKIP
    assert conn.sent_seq == 6


def test_frames_without_a_seq_are_always_sent_and_nothing_after_close():
    conn = recording_connection(sent_seq=9)
    assert conn.offer(protocol.HEARTBEAT_ACK, NO_SEQ) == SEND
    assert conn.offer(protocol.HEARTBEAT_ACK, NO_SEQ) == SEND
    conn.close_reason = protocol.SLOW_CONSUMER
    assert conn.offer(b"u10", 10) == SKIP
    assert conn.offer(protocol.HEARTBEAT_ACK, NO_SEQ) == SKIP
    assert conn.sent_seq == 9


def test_hold_makes_a_live_update_wait_for_the_replay():
    conn = recording_connection(sent_seq=3)
    delivery.hold(conn)
    assert conn.offer(b"u4", 4) == HOLD
    assert delivery.flush_backlog(conn) == [b"u4"]


# --- one text, two builds: the compiled connection and the interpreted one agree -----------------
steps = st.lists(st.one_of(
    st.tuples(st.just("offer"), st.binary(max_size=40), st.one_of(st.just(NO_SEQ), st.integers(0, 12))),
    st.tuples(st.just("release")), st.tuples(st.just("hold")),
), max_size=30)


@settings(max_examples=200, deadline=None)
@given(steps=steps, acked=st.booleans(), sent_seq=st.integers(0, 6),
       budget=st.sampled_from([0, 30, 100, 1 << 20]))
def test_the_compiled_connection_offers_as_the_interpreted_one(steps, acked, sent_seq, budget):
    # `make test` builds the extension: without it this fails, it is never skipped
    assert "cython" in connection.IMPLEMENTATIONS, "ordertrack.push._connection is not built"
    python = recording_connection(acked, sent_seq, budget, impl="python")
    cython = recording_connection(acked, sent_seq, budget, impl="cython")
    for step in steps:
        if step[0] == "offer":
            _, frame, seq = step
            assert cython.offer(frame, seq) == python.offer(frame, seq)
        elif step[0] == "release":
            assert delivery.flush_backlog(cython) == delivery.flush_backlog(python)
        else:
            delivery.hold(cython)
            delivery.hold(python)
        assert (cython.acked, cython.backlog, cython.held_bytes, cython.sent_seq) == (
            python.acked, python.backlog, python.held_bytes, python.sent_seq)


def test_resume_gap_rule():
    # nothing happened since last_seq: no gap, even with an empty stream
    assert not delivery.resume_gap(last_seq=5, state_seq=5, first_seq=None)
    # the next event is kept: no gap
    assert not delivery.resume_gap(last_seq=5, state_seq=8, first_seq=6)
    # the order moved on but the stream is empty, or trimmed past last_seq + 1: gap
    assert delivery.resume_gap(last_seq=5, state_seq=8, first_seq=None)
    assert delivery.resume_gap(last_seq=5, state_seq=8, first_seq=7)


def test_replay_sends_the_missed_events_in_order_and_raises_sent_seq():
    conn = recording_connection(sent_seq=2)
    frames = delivery.replay(conn, 2, 5, events(entry(3), entry(4), entry(5)))
    assert seqs(frames) == [3, 4, 5]
    assert all(b"raw_carrier_response" not in f for f in frames)
    assert conn.sent_seq == 5
    # the live copy of seq 5 arriving afterwards is not shown twice
    assert conn.offer(b"u5", 5) == SKIP


def test_replay_from_a_trimmed_stream_says_so_first_then_sends_what_is_kept():
    conn = recording_connection(sent_seq=1)
    frames = delivery.replay(conn, 1, 9, events(entry(7), entry(8), entry(9)))
    first = orjson.loads(frames[0])
    assert first["event"] == "error" and first["data"]["code"] == "RESUME_UNAVAILABLE"
    assert seqs(frames[1:]) == [7, 8, 9]


def test_replay_of_a_stream_with_unreadable_entries_sends_the_readable_ones():
    conn = recording_connection()
    bad_json = (b"4-0", {b"msg": b"{not json"})
    not_object = (b"5-0", {b"msg": b"[1,2]"})
    no_msg = (b"6-0", {b"other": b"x"})
    skipped = []
    decoded = redis_layout.decode_stream([entry(3), bad_json, not_object, no_msg, entry(7)],
                                         lambda entry_id, exc: skipped.append(entry_id))
    assert seqs(delivery.replay(conn, 2, 7, decoded)) == [3, 7]
    assert skipped == [b"4-0", b"5-0", b"6-0"]
