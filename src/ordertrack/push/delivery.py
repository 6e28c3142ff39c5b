"""The delivery rules of one connection, without I/O: what to send, hold or skip.

A connection's delivery state is a few attributes of push/connection.py's `Connection`:
`close_reason` (None while open), `acked` (the `connection_ack` went
out), `backlog` (updates held until then: a list of `(seq, frame)`, or None), `held_bytes`
(the bytes of the frames `offer` put there), `sent_seq` (the highest `seq` the client has) and
`max_pending_bytes` (WS_MAX_PENDING_BYTES). The rules:

- nothing is sent once the pod has closed the connection;
- until the ack, updates are held in `backlog`, in arrival order; held bytes count against
  WS_MAX_PENDING_BYTES like bytes queued on the socket: past it the held frames are dropped
  and the connection must be closed 1013 (`protocol.SLOW_CONSUMER`), so the client
  reconnects and resumes instead of the pod holding an order's whole history for it;
- never a `seq` the client already has (replays, catch-ups after an outage and live updates
  overlap: the client sees each event once, in order);
- on resume from `last_seq`, the stream's events after it are replayed; when the order has
  moved past `last_seq` but the stream no longer starts right after it, the client is told
  the history is gone (`resume_gap`);
- a resume from a `last_seq` the order never reached (its state says less: Redis lost it, say
  a restart without persistence) is answered `error` `RESYNC_REQUIRED` with the order's `seq`:
  the client refetches over REST and takes that seq as its own (`resync_required`).

`Connection.offer` (push/connection.py: one text, compiled and interpreted) is the rule above
for one update and `Connection.deliver` acts on it (send, hold, skip or close 1013); the
fan-out calls `deliver` for every watcher, the pod for its own replies. The functions here are
the rules around an ack and a resume, on any connection.
"""

from __future__ import annotations

from ordertrack import protocol
from ordertrack.push.connection import SEND

#: upper bounds (seconds) of the delivery-latency histogram's buckets, +Inf implied (the
#: fan-out keeps it: now - the message's `published_at`, when anyone got it)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def flush_backlog(conn) -> list[bytes]:
    """The ack (or a replay) went out: mark `conn` acked and return the held frames that must
    be sent now, in order, without any the client already has."""
    conn.acked = True
    backlog, conn.backlog = conn.backlog, None
    conn.held_bytes = 0
    return [frame for seq, frame in backlog or () if conn.offer(frame, seq) == SEND]


def hold(conn) -> None:
    """A replay is about to be fetched: hold live updates back until it is written."""
    conn.acked = False


def resume_gap(last_seq: int, state_seq: int, first_seq: int | None) -> bool:
    """True when events after `last_seq` existed but the stream no longer holds all of them:
    the order is past `last_seq` and the stream's first kept event is not `last_seq + 1`."""
    return state_seq > last_seq and (first_seq is None or first_seq > last_seq + 1)


def resync_required(last_seq: int, state_seq: int) -> bool:
    """True when the client resumes from a seq the order's state never reached: whatever it
    holds past `state_seq` is not what the pod will send under those numbers."""
    return last_seq > state_seq


def resync_frame(last_seq: int, state_seq: int) -> bytes:
    return protocol.error(
        "RESYNC_REQUIRED", f"last_seq {last_seq} is past this order's seq {state_seq}; refetch "
        "over REST and continue from this seq", seq=state_seq)


def replay(conn, last_seq: int, state_seq: int, events) -> list[bytes]:
    """The frames a resume from `last_seq` sends, given the order's state `seq` and its stream
    events after `last_seq` (`redis_layout.decode_stream`: `.seq` and `.message`, in order,
    unusable entries already skipped); `sent_seq` is raised past every replayed event."""
    if resync_required(last_seq, state_seq):
        return [resync_frame(last_seq, state_seq)]
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
