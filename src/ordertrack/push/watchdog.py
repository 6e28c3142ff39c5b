"""When a quiet pub/sub subscription counts as lost (pure: the caller passes the clock).

A pub/sub socket only reads, so a subscription left on a demoted master or behind a stalled
network never errors: it just goes silent. The pod therefore makes its subscription speak at a
known rate (every `interval` seconds when nothing else arrived it PUBLISHes a probe on its own
control channel through the command client, which follows the master: push/subscription.py) and
counts it lost after `deadline` seconds without any message at all (update, control message,
its probe).
"""

from __future__ import annotations

#: silence that counts as a lost subscription (REDIS_SUBSCRIPTION_DEADLINE_SECONDS)
DEFAULT_DEADLINE_SECONDS = 15.0


class SubscriptionWatchdog:
    __slots__ = ("interval", "deadline", "last_seen", "last_probe")

    def __init__(self, interval: float, deadline: float = DEFAULT_DEADLINE_SECONDS,
                 now: float = 0.0):
        if not 0 < interval < deadline:
            raise ValueError(f"the probe interval ({interval} s) must be above 0 and below "
                             f"the deadline ({deadline} s)")
        self.interval = interval
        self.deadline = deadline
        self.reset(now)

    def reset(self, now: float) -> None:
        """A (re)subscription was confirmed at `now`: the silence counts from here."""
        self.last_seen = now
        self.last_probe = now

    def seen(self, now: float) -> None:
        """Anything arrived on the subscription."""
        self.last_seen = now

    def probed(self, now: float) -> None:
        """A probe (PING) was sent on the subscription."""
        self.last_probe = now

    def probe_due(self, now: float) -> bool:
        """Quiet for `interval` and not probed since: time to send a PING."""
        return now - max(self.last_seen, self.last_probe) >= self.interval

    @property
    def lost_at(self) -> float:
        return self.last_seen + self.deadline

    def lost(self, now: float) -> bool:
        """Silent beyond the deadline: mark not live, resubscribe (re-resolving the master)."""
        return now > self.lost_at

    def next_check(self, now: float) -> float:
        """Seconds until the next probe or the deadline, whichever is first (>= 0)."""
        next_probe = max(self.last_seen, self.last_probe) + self.interval
        return max(0.0, min(next_probe, self.lost_at) - now)
