"""Server-initiated closes, spread over loop iterations: a mass close stalls nobody.

Closing a connection costs a close frame, a disconnect and, soon after, its cleanup (hub,
registry, a log line, metrics): for 2,000 slow consumers evicted by one fan-out, or a kill
switch, or a drain, that was one long stall of every healthy watcher's delivery. So a close is
DECIDED where it is asked for (`Connection.close` sets `close_reason` at once: nothing more is
delivered to it, and the first reason is the one logged) and CARRIED OUT here: at most
`per_turn` closes per loop iteration and at most `budget` seconds of them, the rest in order on
the next iterations (`call_soon`), so reads and fan-out run in between. The wheel's aborts of
clients that never answered our close go through it too (push/pod.py), and the registry
releases the evicted slots in pipelines of `user_registry.RELEASE_CHUNK`.

Every close asked for runs exactly once, in the order asked, however many there are.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("ordertrack.push")

#: closes carried out per loop iteration at most ...
CLOSES_PER_TURN = 32
#: ... and for at most this long (seconds) per iteration
TURN_BUDGET_SECONDS = 0.0005


class CloseScheduler:
    def __init__(self, defer: Callable[[Callable[[], object]], object],
                 per_turn: int = CLOSES_PER_TURN, budget: float = TURN_BUDGET_SECONDS,
                 clock: Callable[[], float] = time.perf_counter):
        """`defer(callback)` runs `callback` on a later loop iteration (`loop.call_soon`)."""
        self._defer = defer
        self.per_turn = per_turn
        self.budget = budget
        self._clock = clock
        self._queue: deque = deque()
        self._scheduled = False

    def __len__(self) -> int:
        """Closes asked for and not carried out yet."""
        return len(self._queue)

    def add(self, action: Callable, *args) -> None:
        """Carry out `action(*args)` (a close frame, an abort) on the next loop iteration that
        has room for it, after every close asked for before it."""
        self._queue.append((action, args))
        if not self._scheduled:
            self._scheduled = True
            self._defer(self.turn)

    def turn(self) -> int:
        """One iteration's share of the queue; returns how many closes it carried out."""
        queue = self._queue
        deadline = self._clock() + self.budget
        done = 0
        while queue and done < self.per_turn:
            action, args = queue.popleft()
            done += 1
            try:
                action(*args)
            except Exception:  # noqa: BLE001 - one broken transport must not stop the others
                log.exception("a scheduled close failed")
            if self._clock() >= deadline:
                break
        if queue:
            self._defer(self.turn)
        else:
            self._scheduled = False
        return done
