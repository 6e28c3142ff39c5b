"""Hashed timer wheel: the pure-Python twin of the Cython `ordertrack.push._timer_wheel`.

One wheel, driven by one loop timer, holds the heartbeat deadline of every connection.
Both implementations follow the same rules (tests/test_wheel.py feeds them identical
operations and compares every answer):

- A deadline becomes the tick `t`, the smallest integer with `t * tick >= deadline`.
  `advance(now)` looks at the tick `n`, the largest integer with `n * tick <= now`, and
  fires every entry with `t <= n`. So an entry never fires before its deadline and fires at
  most one tick late relative to the advance calls.
- Fired keys come back ordered by tick, and within a tick in the order they were (last)
  scheduled.
- Entries with `t` at or before the wheel's position (`_cur`, the last tick walked) sit in an
  "overdue" bucket; every other entry sits in slot `t % slots` with its absolute tick, so
  deadlines several revolutions ahead simply wait for their round.
- A jump of a revolution or more does not walk the empty ticks: it sweeps every slot once and
  sorts what is due (stable sort by tick keeps the scheduling order within a tick).

`TimerWheel` is the Cython class (ext/ordertrack/push/_timer_wheel.pyx) unless it is not built
or `ORDERTRACK_PURE_PYTHON=1`; then it is `PureTimerWheel`, this module's twin.
"""
from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from ordertrack.push import twins

# Ticks are kept exact as doubles, so the tick grid and both implementations agree.
MAX_TICK = 2**53


def _check_tick(value: float, tick: float) -> float:
    ratio = value / tick
    if math.isnan(ratio) or abs(ratio) >= MAX_TICK:
        raise ValueError(f"time {value!r} is out of range for tick {tick!r}")
    return ratio


def deadline_tick(deadline: float, tick: float) -> int:
    """The smallest integer t with t * tick >= deadline (floating point, corrected)."""
    deadline = float(deadline)
    t = math.ceil(_check_tick(deadline, tick))
    if t * tick < deadline:
        t += 1
    elif (t - 1) * tick >= deadline:
        t -= 1
    return t


def now_tick(now: float, tick: float) -> int:
    """The largest integer n with n * tick <= now (floating point, corrected)."""
    now = float(now)
    n = math.floor(_check_tick(now, tick))
    if n * tick > now:
        n -= 1
    elif (n + 1) * tick <= now:
        n += 1
    return n


def _tick_of(item: tuple[Hashable, int]) -> int:
    return item[1]


class PureTimerWheel:
    """A hashed timer wheel keyed by any hashable object (see the module docstring)."""

    def __init__(self, tick: float, slots: int = 512) -> None:
        if not (isinstance(tick, int | float) and math.isfinite(tick) and tick > 0):
            raise ValueError(f"tick must be a positive number of seconds, got {tick!r}")
        if not (isinstance(slots, int) and slots > 0):
            raise ValueError(f"slots must be a positive integer, got {slots!r}")
        self.tick = float(tick)
        self.slots = slots
        self._wheel: list[dict[Any, int]] = [{} for _ in range(slots)]  # key -> tick
        self._overdue: dict[Any, int] = {}
        self._ticks: dict[Any, int] = {}  # every scheduled key -> its tick
        self._cur: int | None = None  # last tick walked; None until first use

    def __len__(self) -> int:
        return len(self._ticks)

    def __contains__(self, key: object) -> bool:
        return key in self._ticks

    def _bucket(self, t: int) -> dict[Any, int]:
        assert self._cur is not None
        return self._overdue if t <= self._cur else self._wheel[t % self.slots]

    def schedule(self, key: Hashable, deadline: float) -> None:
        """Fire `key` at `deadline`; replaces any earlier entry for the same key."""
        t = deadline_tick(deadline, self.tick)
        self.cancel(key)
        if self._cur is None:
            self._cur = t - 1
        self._bucket(t)[key] = t
        self._ticks[key] = t

    def cancel(self, key: Hashable) -> bool:
        """Forget `key`; True when it was scheduled."""
        t = self._ticks.pop(key, None)
        if t is None:
            return False
        del self._bucket(t)[key]
        return True

    def advance(self, now: float) -> list:
        """Remove and return every key due at `now`, by tick then by scheduling order."""
        n = now_tick(now, self.tick)
        if self._cur is None:
            self._cur = n
        fired = [item for item in self._overdue.items() if item[1] <= n]
        fired.sort(key=_tick_of)
        if n > self._cur:
            if not self._ticks:
                pass
            elif n - self._cur < self.slots:
                for p in range(self._cur + 1, n + 1):
                    bucket = self._wheel[p % self.slots]
                    fired.extend(item for item in bucket.items() if item[1] == p)
            else:
                swept = [item for bucket in self._wheel for item in bucket.items() if item[1] <= n]
                swept.sort(key=_tick_of)
                fired.extend(swept)
        keys = [key for key, _ in fired]
        for key in keys:
            self.cancel(key)
        if n > self._cur:
            self._cur = n
        return keys

    def next_deadline(self) -> float | None:
        """The time of the earliest tick with something due, or None when empty."""
        if not self._ticks:
            return None
        if self._overdue:
            return min(self._overdue.values()) * self.tick
        assert self._cur is not None
        for p in range(self._cur + 1, self._cur + 1 + self.slots):
            if p in self._wheel[p % self.slots].values():
                return p * self.tick
        return min(self._ticks.values()) * self.tick


#: "cython" or "python": which `TimerWheel` this process uses; IMPLEMENTATIONS has every one built
IMPLEMENTATION, TimerWheel, IMPLEMENTATIONS = twins.choose(
    PureTimerWheel, "ordertrack.push._timer_wheel", "TimerWheel")
