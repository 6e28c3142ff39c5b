"""The pod's one index of open connections, and the fan-out of one message to an order's.

`Hub.connections` (connection_id -> connection: evictions, drains, flag re-evaluation),
`Hub.watches` (order_id -> `Watch`: what the pub/sub reader looks an order up in before
anything is built for its message) and `Hub.by_carrier` (carrier -> open connections, kept as
they come and go: the gauges never walk every connection, a stall of ~1.3 ms per 20K
connections) are updated together, by `add`, `set_carrier` and `remove` only.
A watched order's payload goes to `Hub.fanout.publish(order_id, watch, payload)`
(push/fanout.py: decoded once, one frame for every watcher). `Watch.seq` remembers the highest
`seq` seen for the order, so after a Redis outage the pod knows what it may have missed.
"""

from __future__ import annotations

from typing import Any

from ordertrack.push.fanout import FanOut


class Watch:
    """An order's watchers on this pod, in the order they came (a list, not a set: most orders
    have one or two watchers, and a one-item list is ~150 B less than a set, per connection)."""

    __slots__ = ("conns", "seq")

    def __init__(self) -> None:
        self.conns: list = []
        self.seq = 0


class Hub:
    def __init__(self, on_malformed=None):
        self.watches: dict[str, Watch] = {}
        self.connections: dict[str, Any] = {}
        #: open connections per `conn.carrier` (None until the ack names it)
        self.by_carrier: dict[str | None, int] = {}
        self.fanout = FanOut(on_malformed)

    def __len__(self) -> int:
        return len(self.connections)

    def add(self, conn) -> Watch:
        """An open connection: indexed by its id and watching its order."""
        if not self._indexed(conn):
            self.connections[conn.connection_id] = conn
            self._count(conn.carrier, 1)
        watch = self.watches.get(conn.order_id)
        if watch is None:
            watch = self.watches[conn.order_id] = Watch()
        if conn not in watch.conns:
            watch.conns.append(conn)
        return watch

    def remove(self, conn) -> None:
        """A connection gone: no longer indexed, nothing more fanned out to it."""
        connection_id = conn.connection_id
        if self._indexed(conn):
            del self.connections[connection_id]
            self._count(conn.carrier, -1)
        watch = self.watches.get(conn.order_id)
        if watch is not None:
            if conn in watch.conns:
                watch.conns.remove(conn)
            if not watch.conns:
                del self.watches[conn.order_id]

    def set_carrier(self, conn, carrier: str | None) -> None:
        """The ack names the connection's carrier (counted under it from now on)."""
        if self._indexed(conn):
            self._count(conn.carrier, -1)
            self._count(carrier, 1)
        conn.carrier = carrier

    def _indexed(self, conn) -> bool:
        return self.connections.get(conn.connection_id) is conn

    def _count(self, carrier: str | None, change: int) -> None:
        by_carrier = self.by_carrier
        left = by_carrier.get(carrier, 0) + change
        if left:
            by_carrier[carrier] = left
        else:
            by_carrier.pop(carrier, None)

    def publish(self, order_id: str, payload: bytes) -> int:
        """Fan one message out to the order's watchers (the catch-up's path; live messages
        come straight from the reader). Returns how many got it."""
        watch = self.watches.get(order_id)
        if watch is None:
            return 0
        return self.fanout.publish(order_id, watch, payload)
