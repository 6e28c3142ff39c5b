"""In-process map order_id -> watching connections; each update is encoded once per pod.

A Redis message is decoded once, turned into one client frame, and that same bytes object is
written to every watcher of the order and to nobody else. `Watch.seq` remembers the highest
`seq` seen for the order, so after a Redis outage the pod knows what it may have missed.
"""

from __future__ import annotations

import logging
import time

import orjson

from ordertrack import protocol

log = logging.getLogger("ordertrack.push.hub")


class Watch:
    __slots__ = ("conns", "seq")

    def __init__(self) -> None:
        self.conns: set = set()
        self.seq = 0


class Hub:
    def __init__(self, on_delivered=None):
        self.watches: dict[str, Watch] = {}
        self._on_delivered = on_delivered

    def add(self, conn) -> Watch:
        watch = self.watches.get(conn.order_id)
        if watch is None:
            watch = self.watches[conn.order_id] = Watch()
        watch.conns.add(conn)
        return watch

    def remove(self, conn) -> None:
        watch = self.watches.get(conn.order_id)
        if watch is not None:
            watch.conns.discard(conn)
            if not watch.conns:
                del self.watches[conn.order_id]

    def publish(self, order_id: str, payload: bytes) -> int:
        """Fan one Redis message out to the order's watchers. Returns how many got it."""
        watch = self.watches.get(order_id)
        if watch is None:
            return 0
        try:
            message = orjson.loads(payload)
            if not isinstance(message, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            log.warning("dropping malformed message on order %s: %s", order_id, exc)
            return 0
        seq = message.get("seq")
        if seq is not None and not protocol.valid_seq(seq):
            # a seq of 2^63 would make every later (real) update look already sent
            log.warning("dropping message on order %s: seq %r out of range", order_id, seq)
            return 0
        if seq is not None and seq > watch.seq:
            watch.seq = seq
        return self.deliver(watch, protocol.tracking_update(message), seq, message.get("published_at"))

    def deliver(self, watch: Watch, frame: bytes, seq: int | None, published_at=None) -> int:
        delivered = 0
        for conn in tuple(watch.conns):
            if conn.deliver(frame, seq):
                delivered += 1
        if self._on_delivered is not None and delivered and isinstance(published_at, int | float):
            self._on_delivered(delivered, time.time() - published_at)
        return delivered
