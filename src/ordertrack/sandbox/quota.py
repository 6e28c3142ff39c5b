"""Per-carrier request quotas: sliding windows over the last hour (and, for DHL, minute).

Pure bookkeeping: callers pass `now`. A request the quota refuses is not counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class Window:
    """At most `limit` requests in any `seconds`-long window."""

    limit: int
    seconds: float
    hits: deque[float] = field(default_factory=deque)

    def _expire(self, now: float) -> None:
        while self.hits and self.hits[0] <= now - self.seconds:
            self.hits.popleft()

    def wait(self, now: float) -> float:
        """Seconds until one more request fits (0 when it fits now)."""
        self._expire(now)
        if len(self.hits) < self.limit:
            return 0.0
        return max(0.001, self.hits[len(self.hits) - self.limit] + self.seconds - now)

    def record(self, now: float) -> None:
        self.hits.append(now)


@dataclass
class Quota:
    """A carrier's quota: requests per hour, and optionally a per-minute burst allowance."""

    per_hour: int
    per_minute: int | None = None
    hour: Window = field(init=False)
    minute: Window | None = field(init=False)

    def __post_init__(self) -> None:
        self.hour = Window(self.per_hour, 3600.0)
        self.minute = Window(self.per_minute, 60.0) if self.per_minute else None

    def set_limits(self, per_hour: int | None = None, per_minute: int | None = None) -> None:
        """Change limits, keeping the requests already counted."""
        if per_hour is not None:
            self.per_hour = self.hour.limit = per_hour
        if per_minute is not None:
            self.per_minute = per_minute
            if self.minute is None:
                self.minute = Window(per_minute, 60.0)
            self.minute.limit = per_minute

    def acquire(self, now: float) -> float | None:
        """Count a request and return None, or refuse it and return seconds to wait."""
        wait = self.hour.wait(now)
        if self.minute is not None:
            wait = max(wait, self.minute.wait(now))
        if wait > 0:
            return wait
        self.hour.record(now)
        if self.minute is not None:
            self.minute.record(now)
        return None

    def used(self, now: float) -> int:
        self.hour.wait(now)
        return len(self.hour.hits)
