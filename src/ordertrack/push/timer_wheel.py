# cython: cdivision=True
"""Hashed timer wheel: one wheel, driven by one loop timer, holds the heartbeat deadline of
every connection.

The rules (tests/test_wheel.py feeds both builds identical operations and compares every answer):

- A deadline becomes the tick `t`, the smallest integer with `t * tick >= deadline`.
  `advance(now)` looks at the tick `n`, the largest integer with `n * tick <= now`, and
  fires every entry with `t <= n`. So an entry never fires before its deadline and fires at
  most one tick late relative to the advance calls.
- Fired keys come back ordered by tick, and within a tick in the order they were (last)
  scheduled.
- Entries with `t` at or before the wheel's position (`_cur`, the last tick walked) sit in an
  "overdue" bucket (the last one); every other entry sits in slot `t % slots` with its absolute
  tick, so deadlines several revolutions ahead simply wait for their round.
- A jump of a revolution or more does not walk the empty ticks: it sweeps every slot once and
  sorts what is due (stable sort by tick keeps the scheduling order within a tick).

Entries live in per-slot rings (doubly-linked around a sentinel, appended at the tail, so a
slot keeps the scheduling order) plus a dict key -> entry for O(1) cancel and re-schedule.

One text, two builds (Cython's pure-Python mode, as push/connection.py): setup.py compiles
this file with ext/ordertrack/push/_timer_wheel.pxd (C fields, C methods) as
`ordertrack.push._timer_wheel`; interpreted, it is the twin (`PureTimerWheel`).
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # Cython is needed to build only; interpreted, this runs as plain Python
    from ordertrack.push import interpreted as cython

if cython.compiled:  # ceil and floor: C ones giving a long long (the .pxd)
    from cython.cimports.libc.math import fabs, isnan
else:
    from math import ceil, fabs, floor, isnan
from operator import itemgetter

from ordertrack.push import twins

# Ticks are kept exact as doubles, so the tick grid is the same in both builds (2**53).
MAX_TICK = 9007199254740992.0
_by_tick = itemgetter(0)


def _out_of_range(value: float, tick: float) -> ValueError:
    return ValueError(f"time {float(value)!r} is out of range for tick {float(tick)!r}")


def deadline_tick(deadline: float, tick: float) -> int:
    """The smallest integer t with t * tick >= deadline (floating point, corrected)."""
    ratio: cython.double = deadline / tick
    if isnan(ratio) or fabs(ratio) >= MAX_TICK:
        raise _out_of_range(deadline, tick)
    t: cython.longlong = ceil(ratio)
    if t * tick < deadline:
        t += 1
    elif (t - 1) * tick >= deadline:
        t -= 1
    return t


def now_tick(now: float, tick: float) -> int:
    """The largest integer n with n * tick <= now (floating point, corrected)."""
    ratio: cython.double = now / tick
    if isnan(ratio) or fabs(ratio) >= MAX_TICK:
        raise _out_of_range(now, tick)
    n: cython.longlong = floor(ratio)
    if n * tick > now:
        n -= 1
    elif (n + 1) * tick <= now:
        n += 1
    return n


@cython.no_gc  # compiled: the rings' links would double the GC's work; the wheel unlinks them
@cython.cclass
class _Entry:
    """One scheduled key: its absolute deadline tick and its neighbours in its slot's ring."""

    if not cython.compiled:
        __slots__ = ("key", "tick", "prev", "next")
        key: object
        tick: int
        prev: _Entry
        next: _Entry


def _ring() -> _Entry:
    """An empty slot: a sentinel entry linked to itself (so linking and unlinking an entry
    never needs to know its slot)."""
    ring: _Entry = _Entry.__new__(_Entry)
    ring.prev = ring
    ring.next = ring
    return ring


@cython.no_gc_clear  # compiled: __dealloc__ needs its rings
@cython.cclass
class TimerWheel:
    """A hashed timer wheel keyed by any hashable object (see the module docstring)."""

    if not cython.compiled:
        __slots__ = ("tick", "slots", "_index", "_rings", "_cur", "_started")

    def __init__(self, tick, slots=512):
        if not isinstance(tick, (int, float)) or not (tick > 0) or tick == float("inf"):
            raise ValueError(f"tick must be a positive number of seconds, got {tick!r}")
        if not isinstance(slots, int) or slots <= 0:
            raise ValueError(f"slots must be a positive integer, got {slots!r}")
        self.tick = float(tick)
        self.slots = slots
        self._index = {}
        #: slots + 1 rings (the last: the overdue bucket), each made on its first use
        self._rings = [None] * (slots + 1)
        self._cur = 0
        self._started = False

    def __dealloc__(self):
        """Compiled: entries are not tracked by the GC (no_gc), so a dropped wheel breaks its
        rings' reference cycles itself. Interpreted it is never called (the GC does it)."""
        ring: _Entry
        e: _Entry
        nxt: _Entry
        if self._rings is None:  # __init__ refused its arguments
            return
        for ring in self._rings:
            if ring is not None:
                e = ring.next
                while e is not ring:
                    nxt = e.next
                    e.prev = e.next = None
                    e = nxt
                ring.prev = ring.next = None

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key) -> bool:
        return key in self._index

    def _bucket_of(self, t):
        if t <= self._cur:
            return self.slots
        b: cython.Py_ssize_t = t % self.slots
        return b + self.slots if b < 0 else b  # C's % (cdivision) keeps the sign of negative ticks

    def _unlink(self, e: _Entry) -> None:
        # e keeps its stale neighbours until it is relinked or dropped: nothing points back at
        # it any more, so that forms no cycle
        prev: _Entry = e.prev
        nxt: _Entry = e.next
        prev.next = nxt
        nxt.prev = prev

    def _take(self, ring: _Entry, upto, exact, out, with_tick):
        """Remove the entries of a ring whose tick is == upto (exact) or <= upto, in ring
        order, appending their keys (or (tick, key) pairs) to out."""
        e: _Entry = ring.next
        while e is not ring:
            entry: _Entry = e
            e = entry.next
            if (entry.tick == upto) if exact else (entry.tick <= upto):
                self._unlink(entry)
                if with_tick:
                    out.append((entry.tick, entry.key))
                else:
                    out.append(entry.key)
                del self._index[entry.key]
        return 0

    def schedule(self, key, deadline: cython.double) -> None:
        """Fire key at deadline; replaces any earlier entry for the same key."""
        t: cython.longlong = deadline_tick(deadline, self.tick)
        e: _Entry = self._index.get(key)
        if e is None:
            e = _Entry.__new__(_Entry)
            e.key = key
            self._index[key] = e
        else:
            self._unlink(e)
        if not self._started:
            self._cur = t - 1
            self._started = True
        # appended to its bucket's ring (the overdue one when t <= _cur: advance moves _cur
        # only after taking what is due, so an entry's bucket stays right while it is linked)
        b: cython.Py_ssize_t = self._bucket_of(t)
        ring: _Entry = self._rings[b]
        if ring is None:
            ring = _ring()
            self._rings[b] = ring
        tail: _Entry = ring.prev
        e.tick = t
        e.prev = tail
        e.next = ring
        tail.next = e
        ring.prev = e

    def cancel(self, key) -> bool:
        """Forget key; True when it was scheduled."""
        e: _Entry = self._index.pop(key, None)
        if e is None:
            return False
        self._unlink(e)
        return True

    def advance(self, now: cython.double) -> list:
        """Remove and return every key due at now, by tick then by scheduling order."""
        n: cython.longlong = now_tick(now, self.tick)
        p: cython.longlong
        b: cython.Py_ssize_t
        ring: _Entry
        fired: list = []
        if not self._started:
            self._cur = n
            self._started = True
        if not self._index:
            if n > self._cur:
                self._cur = n
            return fired
        ring = self._rings[self.slots]
        if ring is not None and ring.next is not ring:
            self._take(ring, n, False, fired, True)
            fired.sort(key=_by_tick)
            fired = [pair[1] for pair in fired]
        if n > self._cur:
            if n - self._cur < self.slots:
                for p in range(self._cur + 1, n + 1):
                    ring = self._rings[self._bucket_of(p)]
                    if ring is not None and ring.next is not ring:
                        self._take(ring, p, True, fired, False)
            else:
                swept: list = []
                for b in range(self.slots):
                    ring = self._rings[b]
                    if ring is not None and ring.next is not ring:
                        self._take(ring, n, False, swept, True)
                swept.sort(key=_by_tick)
                fired.extend([pair[1] for pair in swept])
            self._cur = n
        return fired

    def next_deadline(self):
        """The time of the earliest tick with something due, or None when empty."""
        p: cython.longlong
        best: cython.longlong
        first: cython.bint
        if not self._index:
            return None
        ring: _Entry = self._rings[self.slots]
        e: _Entry
        if ring is not None and ring.next is not ring:
            e = ring.next
            best = e.tick
            while e is not ring:
                if e.tick < best:
                    best = e.tick
                e = e.next
            return best * self.tick
        for p in range(self._cur + 1, self._cur + 1 + self.slots):
            ring = self._rings[self._bucket_of(p)]
            if ring is None:
                continue
            e = ring.next
            while e is not ring:
                if e.tick == p:
                    return p * self.tick
                e = e.next
        first = True
        best = 0
        for e in self._index.values():
            if first or e.tick < best:
                best = e.tick
                first = False
        return best * self.tick


if not cython.compiled:
    PureTimerWheel = TimerWheel
    #: "cython" or "python": which `TimerWheel` this process uses; IMPLEMENTATIONS has every
    #: one built (the compiled build of this same file, and this interpreted one)
    IMPLEMENTATION, TimerWheel, IMPLEMENTATIONS = twins.choose(
        PureTimerWheel, "ordertrack.push._timer_wheel", "TimerWheel")
