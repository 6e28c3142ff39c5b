"""Fan-out of one watched order's Redis message to its watchers: decoded once, encoded once.

`FanOut.publish(order_id, watch, payload)` does Hub.publish's work for an order someone on this
pod watches (the reader has already looked `watch` up): decode and check the payload once by
the message rule (`redis_layout.decode_message`'s checks, in its order: at most
MAX_PAYLOAD_BYTES, JSON, an object, an integer `seq` in 1..2**53-1, `status` and `timestamp`
present and strings), build the `tracking_update` frame once (`protocol.tracking_update`'s
fields: never `raw_carrier_response`), raise `watch.seq`, and hand it to every watcher's
`Connection.deliver` (push/connection.py, THE delivery rule): the watchers it is sent to get the
SAME whole WebSocket frame (`text_frame`, built once: server frames are unmasked), held ones
the client frame, and one held past WS_MAX_PENDING_BYTES is closed 1013. A bad payload reaches
nobody: it is counted in `malformed` and reported as `on_malformed(order_id, reason)`.

The delivery latency (now - the message's `published_at`, when it has a number there and
anyone got it) is kept here, in a histogram of plain counters (`latency_counts()` per
`delivery.LATENCY_BUCKETS` bound plus one for +Inf, `latency_sum`), read by push/metrics.py at
scrape time: no callback and no Prometheus call per message.

One text, two builds (Cython's pure-Python mode, as push/connection.py): setup.py compiles
this file with ext/ordertrack/push/_fanout.pxd as `ordertrack.push._fanout`, whose fan-out
calls the compiled connection's `deliver` in C; interpreted, it is the twin. `_decode` is the
message rule as the hot path runs it: tests/test_message_rule.py holds it to
`redis_layout.decode_message`, the rule everywhere else.
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # Cython is needed to build only; interpreted, this runs as plain Python
    from ordertrack.push import interpreted as cython

from bisect import bisect_left
from time import time as wall_clock

import orjson

from ordertrack import malformed as why
from ordertrack import protocol, redis_layout
from ordertrack.push import twins
from ordertrack.push.delivery import LATENCY_BUCKETS

if cython.compiled:
    from cython.cimports.ordertrack.push._connection import Connection, c_text_frame
    from cython.cimports.posix.time import CLOCK_REALTIME, clock_gettime, timespec
else:
    from ordertrack.push.connection import text_frame

FIELDS = protocol.CLIENT_UPDATE_FIELDS
STRING_FIELDS = redis_layout.STRING_FIELDS
MAX_SEQ = cython.declare(cython.longlong, protocol.MAX_SEQ)
MAX_PAYLOAD_BYTES = cython.declare(cython.Py_ssize_t, why.MAX_PAYLOAD_BYTES)
EVENT = "tracking_update"
loads = orjson.loads
dumps = orjson.dumps
JSONDecodeError = orjson.JSONDecodeError


def _ignore(*_args) -> None:
    return None


@cython.cfunc
@cython.inline
def _now() -> cython.double:
    """Wall-clock seconds (published_at's clock); compiled, clock_gettime without a Python call."""
    if cython.compiled:
        ts = cython.declare(timespec)
        clock_gettime(CLOCK_REALTIME, cython.address(ts))
        return ts.tv_sec + ts.tv_nsec * 1e-9
    return wall_clock()


class FanOut:
    """Decode once, encode once, deliver by each watcher's rule (see the module docstring)."""

    if not cython.compiled:
        __slots__ = ("on_malformed", "messages", "malformed", "frames", "latency_sum",
                     "_latency_counts", "_seq")

    def __init__(self, on_malformed=None):
        self.on_malformed = on_malformed or _ignore
        self.messages = 0
        self.malformed = 0
        self.frames = 0
        self.latency_sum = 0.0
        self._latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._seq = 0

    def latency_counts(self) -> list:
        """Observations per bucket (not cumulative): one per LATENCY_BUCKETS bound, then +Inf."""
        return list(self._latency_counts)

    def _decode(self, payload: bytes):
        """(client frame, published_at) with the `seq` in `_seq`, or the reason (a str) the
        payload is malformed: redis_layout.decode_message's checks in the same order."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            return why.PAYLOAD_TOO_LARGE
        try:
            decoded = loads(payload)
        except JSONDecodeError:
            return why.NOT_JSON
        if type(decoded) is not dict:
            return why.NOT_OBJECT
        message: dict = decoded
        seq = message.get("seq")
        if type(seq) is not int or not (1 <= seq <= MAX_SEQ):
            return why.BAD_SEQ
        for field in STRING_FIELDS:
            if field not in message:
                return why.MISSING_FIELD
        for field in STRING_FIELDS:
            if type(message[field]) is not str:
                return why.BAD_FIELD
        self._seq = seq
        data = {field: message.get(field) for field in FIELDS}
        return dumps({"event": EVENT, "data": data}), message.get("published_at")

    def publish(self, order_id: str, watch, payload: bytes) -> cython.Py_ssize_t:
        """Fan one message out to `watch.conns`; returns how many connections it was sent to."""
        delivered: cython.Py_ssize_t = 0
        self.messages += 1
        decoded = self._decode(payload)
        if type(decoded) is str:
            self.malformed += 1
            self.on_malformed(order_id, decoded)
            return 0
        frame, published_at = decoded
        seq: cython.longlong = self._seq
        if seq > watch.seq:
            watch.seq = seq
        # Everyone it is sent to gets the same whole WebSocket frame, built once; compiled, the
        # compiled connection's `deliver` is a C call, any other watcher's a Python one
        conns = tuple(watch.conns)
        if not conns:
            return 0
        if cython.compiled:
            ws_frame = c_text_frame(frame)
            for conn in conns:
                if type(conn) is Connection:
                    if cython.cast(Connection, conn).deliver(frame, seq, ws_frame):
                        delivered += 1
                elif conn.deliver(frame, seq, ws_frame):
                    delivered += 1
        else:
            ws_frame = text_frame(frame)
            for conn in conns:
                if conn.deliver(frame, seq, ws_frame):
                    delivered += 1
        self.frames += delivered
        if delivered and (type(published_at) is float or type(published_at) is int):
            latency: cython.double = _now() - published_at
            if cython.compiled:
                # bisect_left's answer without a Python call: the first bound >= latency
                i: cython.Py_ssize_t = 0
                bounds: tuple = LATENCY_BUCKETS
                while i < len(bounds) and latency > cython.cast(cython.double, bounds[i]):
                    i += 1
            else:
                i = bisect_left(LATENCY_BUCKETS, latency)
            self._latency_counts[i] += 1
            self.latency_sum += latency
        return delivered


if not cython.compiled:
    PureFanOut = FanOut
    #: "cython" or "python": which `FanOut` this process uses; IMPLEMENTATIONS has every one
    #: built (the compiled build of this same file, and this interpreted one)
    IMPLEMENTATION, FanOut, IMPLEMENTATIONS = twins.choose(
        PureFanOut, "ordertrack.push._fanout", "FanOut")
