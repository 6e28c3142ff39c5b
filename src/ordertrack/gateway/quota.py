"""Carrier request quotas, shared by every gateway replica through Redis.

One Lua script (quota.lua) keeps a sliding-window log per carrier in `gateway:quota:{CARRIER}`
and grants a request only when every window has room: N replicas together never exceed the
carrier's contract (DHL 2000/hour and 100/minute, FedEx 1000/hour, UPS 500/hour). A daily-quota
429 pauses the carrier for every replica (`gateway:quota:{CARRIER}:paused`; names in `ordertrack.redis_layout`).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ordertrack import redis_layout

SCRIPT = Path(__file__).with_name("quota.lua").read_text()


@dataclass(frozen=True)
class Window:
    """At most `limit` requests in any `seconds`-long window (the sandbox's carriers enforce
    the same rule in memory: `sandbox.quota.Window`)."""

    limit: int
    seconds: float


@dataclass(frozen=True)
class QuotaState:
    allowed: bool
    wait_seconds: float
    remaining: int
    paused_until: float | None


def carrier_limits(
    dhl_per_hour: int = 2000,
    dhl_burst_per_minute: int | None = 100,
    fedex_per_hour: int = 1000,
    ups_per_hour: int = 500,
) -> dict[str, tuple[Window, ...]]:
    """The contract of the feature log, as windows per carrier."""
    dhl: tuple[Window, ...] = (Window(dhl_per_hour, 3600),)
    if dhl_burst_per_minute:
        dhl += (Window(dhl_burst_per_minute, 60),)
    return {
        "dhl": dhl,
        "fedex": (Window(fedex_per_hour, 3600),),
        "ups": (Window(ups_per_hour, 3600),),
    }


def hourly_rate(windows: tuple[Window, ...]) -> float:
    """Sustained requests per hour the windows allow (the tightest one)."""
    return min(window.limit * 3600 / window.seconds for window in windows)


def next_utc_midnight(now: float) -> float:
    """Daily quotas reset at 00:00 GMT (DHL); FedEx does not say, so the same is assumed."""
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (today + timedelta(days=1)).timestamp()


class Quota:
    """`acquire(carrier) -> (allowed, wait_seconds)`, `pause(carrier, until)`, `remaining(carrier)`."""

    _ids = itertools.count()

    def __init__(self, redis: Any, limits: dict[str, tuple[Window, ...]], replica: str = ""):
        self.redis = redis
        self.limits = limits
        self.replica = replica or f"pid{os.getpid()}"
        self._script = redis.register_script(SCRIPT)

    def _args(self, carrier: str) -> list[Any]:
        limits = self.limits[carrier]
        args: list[Any] = [len(limits)]
        for window in limits:
            args += [window.seconds, window.limit]
        return args

    async def _call(self, carrier: str, mode: str, value: Any) -> QuotaState:
        allowed, wait, remaining, paused = await self._script(
            keys=[redis_layout.quota(carrier), redis_layout.quota_paused(carrier)],
            args=[mode, value, *self._args(carrier)],
        )
        paused_until = float(paused)
        return QuotaState(bool(int(allowed)), float(wait), int(remaining),
                          paused_until if paused_until > 0 else None)

    async def acquire_request(self, carrier: str) -> tuple[QuotaState, str]:
        """Take one request; also returns its id, so an unused request can be `refund`ed."""
        member = f"{self.replica}:{os.getpid()}:{next(self._ids)}"
        return await self._call(carrier, "acquire", member), member

    async def acquire(self, carrier: str) -> tuple[bool, float]:
        """One request now? Else how long until one could be granted (or the pause ends)."""
        state, _ = await self.acquire_request(carrier)
        return state.allowed, state.wait_seconds

    async def refund(self, carrier: str, member: str) -> None:
        await self._call(carrier, "refund", member)

    async def pause(self, carrier: str, until: float) -> None:
        """No requests to `carrier` from any replica until `until` (epoch seconds)."""
        await self._call(carrier, "pause", until)

    async def state(self, carrier: str) -> QuotaState:
        return await self._call(carrier, "peek", "")

    async def remaining(self, carrier: str) -> int:
        """Requests still grantable now (the tightest window)."""
        return (await self.state(carrier)).remaining
