"""Fan-out of one watched order's Redis message to its watchers: decoded once, encoded once.

`FanOut.publish(order_id, watch, payload)` does Hub.publish's work for an order someone on this
pod watches (the reader has already looked `watch` up): decode and check the payload once by
the message rule (`redis_layout.decode_message`: every client field present, an integer `seq`
in 1..2**53-1, `status` and `timestamp` strings), build the `tracking_update` frame once
(`protocol.tracking_update`: never `raw_carrier_response`), raise `watch.seq`, and offer it to
every watcher by the delivery rule (`delivery.offer`, push/delivery.py): the watchers it is
sent to get the SAME whole WebSocket frame (`text_frame`, built once: server frames are
unmasked), held ones the client frame, and one held past WS_MAX_PENDING_BYTES is closed 1013.
A bad payload reaches nobody: it is counted in `malformed` and reported as
`on_malformed(order_id, reason)`, the reason being `MalformedMessage.reason`.

The delivery latency (now - the message's `published_at`, when it has a number there and
anyone got it) is kept here, in a histogram of plain counters (`latency_counts()` per
`LATENCY_BUCKETS` bound plus one for +Inf, `latency_sum`), read by push/metrics.py at scrape
time: no callback and no Prometheus call per message.

A watcher is anything with the connection's delivery attributes (`close_reason`, `acked`,
`backlog`, `held_bytes`, `sent_seq`, `max_pending_bytes`), `send_frame(ws_frame)` and
`close(close)`: push/connection.py's `Connection` (the Cython fan-out calls the Cython one's
C methods directly).

This module holds the pure-Python twin; the Cython `ordertrack.push._fanout` has the same
behaviour and is used unless it is not built or `ORDERTRACK_PURE_PYTHON=1`.
"""

from __future__ import annotations

import struct
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from ordertrack import protocol, redis_layout
from ordertrack.push import twins
from ordertrack.push.delivery import OVERFLOW, SEND, offer

SLOW_CONSUMER = protocol.SLOW_CONSUMER
#: upper bounds (seconds) of the delivery-latency histogram's buckets, +Inf implied; the
#: Cython fan-out takes them from here (this module defines them before it imports that one)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def text_frame(payload: bytes) -> bytes:
    """A whole server-to-client WebSocket text frame (FIN, unmasked: RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


def _ignore(*_args) -> None:
    return None


class PureFanOut:
    """The pure-Python twin (see the module docstring)."""

    def __init__(self, on_malformed: Callable[[str | None, str], object] | None = None):
        self.on_malformed = on_malformed or _ignore
        self.messages = 0
        self.malformed = 0
        self.frames = 0
        self.latency_sum = 0.0
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)

    def latency_counts(self) -> list[int]:
        """Observations per bucket (not cumulative): one per LATENCY_BUCKETS bound, then +Inf."""
        return list(self._latency_counts)

    def publish(self, order_id: str, watch, payload: bytes) -> int:
        """Fan one message out to `watch.conns`; returns how many connections it was sent to."""
        self.messages += 1
        try:
            message = redis_layout.decode_message(payload)
        except redis_layout.MalformedMessage as exc:
            self.malformed += 1
            self.on_malformed(order_id, exc.reason)
            return 0
        seq = message["seq"]
        frame = protocol.tracking_update(message)
        if seq > watch.seq:
            watch.seq = seq
        delivered = 0
        ws_frame = None
        for conn in tuple(watch.conns):
            verdict = offer(conn, frame, seq)
            if verdict == SEND:
                if ws_frame is None:
                    ws_frame = text_frame(frame)
                conn.send_frame(ws_frame)
                delivered += 1
            elif verdict == OVERFLOW:
                conn.close(SLOW_CONSUMER)
        self.frames += delivered
        published_at: Any = message.get("published_at")
        if delivered and type(published_at) in (int, float):
            latency = time.time() - published_at
            self._latency_counts[bisect_left(LATENCY_BUCKETS, latency)] += 1
            self.latency_sum += latency
        return delivered


#: "cython" or "python": which `FanOut` this process uses; IMPLEMENTATIONS has every one built
IMPLEMENTATION, FanOut, IMPLEMENTATIONS = twins.choose(
    PureFanOut, "ordertrack.push._fanout", "FanOut")
