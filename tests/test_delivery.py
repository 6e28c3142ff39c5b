"""The delivery rules (push/delivery.py), without sockets: hold until the ack, never a `seq`
twice, the resume gap rule, replay from a stream."""

from __future__ import annotations

import orjson

from ordertrack import protocol, redis_layout
from ordertrack.push import delivery


class State:
    """A connection's delivery attributes and nothing else."""

    def __init__(self, acked: bool = True, sent_seq: int = 0):
        self.close_reason = None
        self.acked = acked
        self.backlog = None
        self.sent_seq = sent_seq


def entry(seq: int, status: str = "in_transit") -> tuple[bytes, dict]:
    message = {"status": status, "location": "Newark NJ", "timestamp": "t", "estimated_delivery": None,
               "carrier": "dhl", "raw_carrier_response": {"x": 1}, "seq": seq}
    return f"{seq}-0".encode(), {b"msg": orjson.dumps(message)}


def events(*entries):
    return redis_layout.decode_stream(entries)


def seqs(frames: list[bytes]) -> list:
    return [orjson.loads(f)["data"].get("seq", orjson.loads(f)["event"]) for f in frames]


def test_updates_before_the_ack_are_held_in_order_then_released_without_duplicates():
    conn = State(acked=False)
    assert not delivery.offer(conn, b"u3", 3)
    assert not delivery.offer(conn, b"u2", 2)
    assert not delivery.offer(conn, b"err", None)
    assert not delivery.offer(conn, b"u3-again", 3)
    conn.sent_seq = 2  # the ack's state said the client is at seq 2
    assert delivery.release(conn) == [b"u3", b"err"]
    assert conn.acked and conn.backlog is None and conn.sent_seq == 3


def test_a_seq_the_client_has_is_never_sent_again():
    conn = State(sent_seq=5)
    assert not delivery.offer(conn, b"old", 5)
    assert not delivery.offer(conn, b"older", 4)
    assert delivery.offer(conn, b"new", 6)
    assert not delivery.offer(conn, b"new", 6)
    assert conn.sent_seq == 6


def test_frames_without_a_seq_are_always_sent_and_nothing_after_close():
    conn = State(sent_seq=9)
    assert delivery.offer(conn, protocol.HEARTBEAT_ACK, None)
    assert delivery.offer(conn, protocol.HEARTBEAT_ACK, None)
    conn.close_reason = protocol.SLOW_CONSUMER
    assert not delivery.offer(conn, b"u10", 10)
    assert not delivery.offer(conn, protocol.HEARTBEAT_ACK, None)
    assert conn.sent_seq == 9


def test_hold_makes_a_live_update_wait_for_the_replay():
    conn = State(sent_seq=3)
    delivery.hold(conn)
    assert not delivery.offer(conn, b"u4", 4)
    assert delivery.release(conn) == [b"u4"]


def test_resume_gap_rule():
    # nothing happened since last_seq: no gap, even with an empty stream
    assert not delivery.resume_gap(last_seq=5, state_seq=5, first_seq=None)
    # the next event is kept: no gap
    assert not delivery.resume_gap(last_seq=5, state_seq=8, first_seq=6)
    # the order moved on but the stream is empty, or trimmed past last_seq + 1: gap
    assert delivery.resume_gap(last_seq=5, state_seq=8, first_seq=None)
    assert delivery.resume_gap(last_seq=5, state_seq=8, first_seq=7)


def test_replay_sends_the_missed_events_in_order_and_raises_sent_seq():
    conn = State(sent_seq=2)
    frames = delivery.replay(conn, 2, 5, events(entry(3), entry(4), entry(5)))
    assert seqs(frames) == [3, 4, 5]
    assert all(b"raw_carrier_response" not in f for f in frames)
    assert conn.sent_seq == 5
    # the live copy of seq 5 arriving afterwards is not shown twice
    assert not delivery.offer(conn, b"u5", 5)


def test_replay_from_a_trimmed_stream_says_so_first_then_sends_what_is_kept():
    conn = State(sent_seq=1)
    frames = delivery.replay(conn, 1, 9, events(entry(7), entry(8), entry(9)))
    first = orjson.loads(frames[0])
    assert first["event"] == "error" and first["data"]["code"] == "RESUME_UNAVAILABLE"
    assert seqs(frames[1:]) == [7, 8, 9]


def test_replay_of_a_stream_with_unreadable_entries_sends_the_readable_ones():
    conn = State()
    bad_json = (b"4-0", {b"msg": b"{not json"})
    not_object = (b"5-0", {b"msg": b"[1,2]"})
    no_msg = (b"6-0", {b"other": b"x"})
    skipped = []
    decoded = redis_layout.decode_stream([entry(3), bad_json, not_object, no_msg, entry(7)],
                                         lambda entry_id, exc: skipped.append(entry_id))
    assert seqs(delivery.replay(conn, 2, 7, decoded)) == [3, 7]
    assert skipped == [b"4-0", b"5-0", b"6-0"]
