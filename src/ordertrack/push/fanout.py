"""Fan-out of one watched order's Redis message to its watchers: decoded once, encoded once.

`FanOut.publish(order_id, watch, payload)` does Hub.publish's work for an order someone on this
pod watches (the reader has already looked `watch` up): decode the payload once with orjson,
check it (a JSON object, an integer `seq` in 1..2**53-1 (`protocol.MAX_SEQ`), `status` a
string; the other client fields are null when absent), build the `tracking_update` frame once (`protocol.tracking_update`: never
`raw_carrier_response`), raise `watch.seq`, and offer it to every watcher by the delivery rule
(`delivery.offer`, push/delivery.py): the watchers it is sent to get the SAME whole WebSocket
frame (`text_frame`, built once: server frames are unmasked), held ones the client frame, and
one held past WS_MAX_PENDING_BYTES is closed 1013. A bad payload reaches nobody: it is counted in `malformed` and
reported as `on_malformed(order_id, reason)`. `on_delivered(count, latency)` is called when
anyone got it and the message carries `published_at`.

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
from collections.abc import Callable

import orjson

from ordertrack import protocol
from ordertrack.push import malformed as why
from ordertrack.push import twins
from ordertrack.push.delivery import OVERFLOW, SEND, offer

MAX_SEQ = protocol.MAX_SEQ
SLOW_CONSUMER = protocol.SLOW_CONSUMER


class MalformedUpdate(ValueError):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_update(payload: bytes) -> tuple[bytes, int, object]:
    """A Redis message -> (client frame, seq, published_at); MalformedUpdate(reason) if bad."""
    if len(payload) > why.MAX_PAYLOAD_BYTES:
        raise MalformedUpdate(why.PAYLOAD_TOO_LARGE)
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise MalformedUpdate(why.NOT_JSON) from None
    if type(message) is not dict:
        raise MalformedUpdate(why.NOT_OBJECT)
    seq = message.get("seq")
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise MalformedUpdate(why.BAD_SEQ)
    if type(message.get("status")) is not str:
        raise MalformedUpdate(why.BAD_STATUS)
    return protocol.tracking_update(message), seq, message.get("published_at")


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

    def __init__(self, on_delivered: Callable[[int, float], object] | None = None,
                 on_malformed: Callable[[str | None, str], object] | None = None):
        self.on_delivered = on_delivered
        self.on_malformed = on_malformed or _ignore
        self.messages = 0
        self.malformed = 0
        self.frames = 0

    def publish(self, order_id: str, watch, payload: bytes) -> int:
        """Fan one message out to `watch.conns`; returns how many connections it was sent to."""
        self.messages += 1
        try:
            frame, seq, published_at = decode_update(payload)
        except MalformedUpdate as exc:
            self.malformed += 1
            self.on_malformed(order_id, exc.reason)
            return 0
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
        if delivered and self.on_delivered is not None and type(published_at) in (int, float):
            self.on_delivered(delivered, time.time() - published_at)
        return delivered


#: "cython" or "python": which `FanOut` this process uses; IMPLEMENTATIONS has every one built
IMPLEMENTATION, FanOut, IMPLEMENTATIONS = twins.choose(
    PureFanOut, "ordertrack.push._fanout", "FanOut")
