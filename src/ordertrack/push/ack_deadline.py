"""The admission deadline: a connection not acknowledged within REDIS_SUBSCRIBE_TIMEOUT_SECONDS
of its 101 is closed 4002, whatever Redis is doing (no subscription, a round trip that fails,
or one that is merely slow and would succeed later).

Connections wait in the order they opened (an OrderedDict: O(1) at both ends and by key), so
one loop timer at the oldest one's deadline is enough. Admission calls `done` when it sends
the ack; a connection closed or gone meanwhile is dropped when the timer reaches it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable


class AckDeadlines:
    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float,
                 on_expired: Callable[[list], object]):
        self.loop = loop
        self.limit = limit
        #: called once per firing with the connections whose deadline passed (oldest first)
        self.on_expired = on_expired
        self._waiting: OrderedDict = OrderedDict()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, conn) -> None:
        """`conn` (with `opened_at` in loop time) starts waiting for its ack."""
        self._waiting[conn] = None
        if self._timer is None:
            self._arm()

    def done(self, conn) -> None:
        """`conn` got its ack (or its outcome otherwise): its deadline no longer applies."""
        self._waiting.pop(conn, None)

    def _arm(self) -> None:
        oldest = next(iter(self._waiting))
        self._timer = self.loop.call_at(oldest.opened_at + self.limit, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.loop.time()
        waiting = self._waiting
        expired = []
        while waiting:
            conn = next(iter(waiting))
            if conn.cleaned or conn.close_reason is not None:
                waiting.popitem(last=False)
            elif conn.opened_at + self.limit <= now + 0.001:  # a timer may fire a hair early
                waiting.popitem(last=False)
                expired.append(conn)
            else:
                break
        if waiting:
            self._arm()
        if expired:
            self.on_expired(expired)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
