"""The delivery rules of one connection, without I/O: what to send, hold or skip.

A connection's delivery state is four attributes (push/connection.py's `Connection` has them,
so do the test doubles): `close_reason` (None while open), `acked` (the `connection_ack` went
out), `backlog` (updates held until then: a list of `(seq, frame)`, or None) and `sent_seq`
(the highest `seq` the client has). The rules:

- nothing is sent once the pod has closed the connection;
- until the ack, updates are held in `backlog`, in arrival order;
- never a `seq` the client already has (replays, catch-ups after an outage and live updates
  overlap: the client sees each event once, in order);
- on resume from `last_seq`, the stream's events after it are replayed; when the order has
  moved past `last_seq` but the stream no longer starts right after it, the client is told
  the history is gone (`resume_gap`).

The fan-out (push/fanout.py and its Cython twin) applies `offer` inline to every watcher.
"""

from __future__ import annotations

from ordertrack import protocol


def offer(conn, frame: bytes, seq: int | None) -> bool:
    """An update for `conn`: True when it must be sent now (`sent_seq` is raised), False when
    it is held until the ack or skipped (closed, or the client has it). `seq` None (an `error`
    frame, say) is never deduplicated."""
    if conn.close_reason is not None:
        return False
    if not conn.acked:
        backlog = conn.backlog
        if backlog is None:
            conn.backlog = backlog = []
        backlog.append((seq, frame))
        return False
    if seq is not None:
        if seq <= conn.sent_seq:
            return False
        conn.sent_seq = seq
    return True


def release(conn) -> list[bytes]:
    """The ack (or a replay) went out: mark `conn` acked and return the held frames that must
    be sent now, in order, without any the client already has."""
    conn.acked = True
    backlog, conn.backlog = conn.backlog, None
    return [frame for seq, frame in backlog or () if offer(conn, frame, seq)]


def hold(conn) -> None:
    """A replay is about to be fetched: hold live updates back until it is written."""
    conn.acked = False


def resume_gap(last_seq: int, state_seq: int, first_seq: int | None) -> bool:
    """True when events after `last_seq` existed but the stream no longer holds all of them:
    the order is past `last_seq` and the stream's first kept event is not `last_seq + 1`."""
    return state_seq > last_seq and (first_seq is None or first_seq > last_seq + 1)


def replay(conn, last_seq: int, state_seq: int, events) -> list[bytes]:
    """The frames a resume from `last_seq` sends, given the order's state `seq` and its stream
    events after `last_seq` (`redis_layout.decode_stream`: `.seq` and `.message`, in order,
    unusable entries already skipped); `sent_seq` is raised past every replayed event."""
    frames: list[bytes] = []
    first_seq = events[0].seq if events else None
    if resume_gap(last_seq, state_seq, first_seq):
        frames.append(protocol.error(
            "RESUME_UNAVAILABLE", f"events after seq {last_seq} are no longer kept; refetch over REST"))
    for event in events:
        if event.seq <= last_seq:
            continue
        frames.append(protocol.tracking_update(event.message))
        if event.seq > conn.sent_seq:
            conn.sent_seq = event.seq
    return frames
