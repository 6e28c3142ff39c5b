"""Fan-out of one watched order's Redis message to its watchers: decoded once, encoded once.

`FanOut.publish(order_id, watch, payload)` does Hub.publish's work for an order someone on this
pod watches (the reader has already looked `watch` up): decode and check the payload once by
the message rule (`redis_layout.decode_message`: every client field present, an integer `seq`
in 1..2**53-1, `status` and `timestamp` strings), build the `tracking_update` frame once
(`protocol.tracking_update`: never `raw_carrier_response`), raise `watch.seq`, and offer it to
every watcher by the delivery rule (`Connection.deliver`, push/connection.py): the watchers it
is sent to get the SAME whole WebSocket frame (`text_frame`, built once: server frames are
unmasked), held ones the client frame, and one held past WS_MAX_PENDING_BYTES is closed 1013.
A bad payload reaches nobody: it is counted in `malformed` and reported as
`on_malformed(order_id, reason)`, the reason being `MalformedMessage.reason`.

The delivery latency (now - the message's `published_at`, when it has a number there and
anyone got it) is kept here, in a histogram of plain counters (`latency_counts()` per
`LATENCY_BUCKETS` bound plus one for +Inf, `latency_sum`), read by push/metrics.py at scrape
time: no callback and no Prometheus call per message.

A watcher is a push/connection.py `Connection` (the Cython fan-out calls the compiled one's C
`deliver` directly, any other's as a Python method).

This module holds the pure-Python twin; the Cython `ordertrack.push._fanout` has the same
behaviour and is used unless it is not built or `ORDERTRACK_PURE_PYTHON=1`.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable

from ordertrack import protocol, redis_layout
from ordertrack.push import twins
from ordertrack.push.connection import text_frame
from ordertrack.push.delivery import LATENCY_BUCKETS


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
        conns = tuple(watch.conns)
        ws_frame = text_frame(frame) if conns else None
        for conn in conns:
            if conn.deliver(frame, seq, ws_frame):
                delivered += 1
        self.frames += delivered
        published_at = message.get("published_at")
        if delivered and type(published_at) in (int, float):
            latency = time.time() - published_at
            self._latency_counts[bisect_left(LATENCY_BUCKETS, latency)] += 1
            self.latency_sum += latency
        return delivered


#: "cython" or "python": which `FanOut` this process uses; IMPLEMENTATIONS has every one built
IMPLEMENTATION, FanOut, IMPLEMENTATIONS = twins.choose(
    PureFanOut, "ordertrack.push._fanout", "FanOut")
