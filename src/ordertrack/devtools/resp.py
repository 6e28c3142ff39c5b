"""What Redis writes to a subscriber, as bytes, and feeding such bytes to a pub/sub reader.

For the tests and micro-benchmarks of push/pubsub_reader.py (Cython and twin alike): `feed`
hands a byte stream to a reader the way the event loop feeds an `asyncio.BufferedProtocol`,
and the builders give the RESP replies a `PSUBSCRIBE`d connection receives.
"""

from __future__ import annotations

from collections.abc import Iterable

from ordertrack import redis_layout

_PATTERN = redis_layout.CHANNEL_PATTERN.encode()


def feed(reader, data: bytes) -> None:
    """Hand `data` to the reader as the event loop does, one buffer-full at a time
    (`get_buffer`, copy, `buffer_updated`)."""
    view = memoryview(data)
    while view:
        buf = reader.get_buffer(len(view))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        reader.buffer_updated(n)
        view = view[n:]


def bulk(value: bytes) -> bytes:
    """A RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pmessage(channel: bytes, payload: bytes) -> bytes:
    """A message on a channel of the order pattern, as the PSUBSCRIBEd pod gets it."""
    return b"*4\r\n" + bulk(b"pmessage") + bulk(_PATTERN) + bulk(channel) + bulk(payload)


def message(channel: bytes, payload: bytes) -> bytes:
    """A message on a SUBSCRIBEd (control) channel."""
    return b"*3\r\n" + bulk(b"message") + bulk(channel) + bulk(payload)


def confirmation(kind: bytes, channel: bytes, count: int) -> bytes:
    """Redis's answer to PSUBSCRIBE / SUBSCRIBE (`kind`) of `channel`."""
    return b"*3\r\n" + bulk(kind) + bulk(channel) + b":%d\r\n" % count


def order_stream(updates: Iterable[tuple[str, bytes]]) -> bytes:
    """The pmessages of these (order_id, payload) PUBLISHes, concatenated."""
    return b"".join(pmessage(redis_layout.channel(order_id).encode(), payload)
                    for order_id, payload in updates)
