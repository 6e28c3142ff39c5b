"""The pod's one index of open connections, and the fan-out of one message to an order's.

`Hub.connections` (connection_id -> connection: evictions, drains, flag re-evaluation,
gauges) and `Hub.watches` (order_id -> `Watch`: what the pub/sub reader looks an order up in
before anything is built for its message) are updated together, by `add` and `remove` only.
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
        self.fanout = FanOut(on_malformed)

    def __len__(self) -> int:
        return len(self.connections)

    def add(self, conn) -> Watch:
        """An open connection: indexed by its id and watching its order."""
        self.connections[conn.connection_id] = conn
        watch = self.watches.get(conn.order_id)
        if watch is None:
            watch = self.watches[conn.order_id] = Watch()
        if conn not in watch.conns:
            watch.conns.append(conn)
        return watch

    def remove(self, conn) -> None:
        """A connection gone: no longer indexed, nothing more fanned out to it."""
        connection_id = conn.connection_id
        if self.connections.get(connection_id) is conn:
            del self.connections[connection_id]
        watch = self.watches.get(conn.order_id)
        if watch is not None:
            if conn in watch.conns:
                watch.conns.remove(conn)
            if not watch.conns:
                del self.watches[conn.order_id]

    def publish(self, order_id: str, payload: bytes) -> int:
        """Fan one message out to the order's watchers (the catch-up's path; live messages
        come straight from the reader). Returns how many got it."""
        watch = self.watches.get(order_id)
        if watch is None:
            return 0
        return self.fanout.publish(order_id, watch, payload)
