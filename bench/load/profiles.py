"""Load-test profiles: the log's staging scenario (15 min ramp at 500/s, 20 min hold, 10 min ramp
down, one update per connection every 30 s, heartbeats, ~2.4 % graceful reconnects) scaled to
what one 2-core machine can drive."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

#: the log: 1,203 graceful disconnects of 49,847 connections over the 20 min hold
RECONNECT_FRACTION = 1_203 / 49_847


@dataclass(frozen=True)
class Profile:
    name: str
    connections: int
    pods: int
    ramp_per_second: float
    hold_seconds: float
    #: one tracking update per connection every this many seconds (the log: 30)
    update_interval: float
    #: the client's {"event":"heartbeat"} period (tracking-client.js: 25 s)
    heartbeat_interval: float
    #: the pod's HEARTBEAT_INTERVAL_SECONDS (ping frames; the log's manifest: 30)
    ping_interval: float
    reconnect_fraction: float = RECONNECT_FRACTION
    #: ramp-down speed in closes/s (None: the ramp rate)
    ramp_down_per_second: float | None = None
    #: run the peers and Artillery beside our pod when they are installed
    peers: bool = False
    #: the peers run by default (None: every installed one)
    peer_names: tuple[str, ...] | None = None
    #: a reconnect storm: every connection is cut at `storm_at` seconds into the hold and
    #: comes back within `storm_seconds` (as after a load balancer restart), resuming with
    #: ?last_seq (None: no storm)
    storm_at: float | None = None
    storm_seconds: float = 1.0
    description: str = ""

    @property
    def ramp_seconds(self) -> float:
        return self.connections / self.ramp_per_second

    @property
    def ramp_down_seconds(self) -> float:
        return self.connections / (self.ramp_down_per_second or self.ramp_per_second)

    @property
    def total_seconds(self) -> float:
        return self.ramp_seconds + self.hold_seconds + self.ramp_down_seconds

    @property
    def updates_per_second(self) -> float:
        return self.connections / self.update_interval

    @property
    def reconnects(self) -> int:
        return math.ceil(self.connections * self.reconnect_fraction)

    def scaled(self, connections: int | None = None, hold_seconds: float | None = None) -> Profile:
        changes: dict = {}
        if connections is not None:
            changes["connections"] = connections
        if hold_seconds is not None:
            changes["hold_seconds"] = hold_seconds
            if self.storm_at is not None:  # the storm keeps its place in the hold
                changes["storm_at"] = hold_seconds * self.storm_at / self.hold_seconds
        return replace(self, **changes)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("smoke", 1_000, 1, 500, hold_seconds=12, update_interval=3,
                heartbeat_interval=2.5, ping_interval=3,
                description="1,000 connections on one pod, under a minute (make test)"),
        Profile("pod", 19_500, 1, 500, hold_seconds=150, update_interval=30,
                heartbeat_interval=25, ping_interval=30, peers=True,
                description="one pod, 19,500 connections, ramp 500/s, 150 s hold"),
        Profile("storm", 19_500, 1, 500, hold_seconds=60, update_interval=30,
                heartbeat_interval=25, ping_interval=30, reconnect_fraction=0.0, peers=True,
                peer_names=("nchan", "uws"), storm_at=20.0, storm_seconds=1.0,
                description="one pod, 19,500 connections, all cut and back within 1 s "
                            "(?last_seq) 20 s into a 60 s hold; beside nchan and uws"),
        Profile("cluster", 45_000, 3, 500, hold_seconds=150, update_interval=30,
                heartbeat_interval=25, ping_interval=30,
                description="3 pods sharing one port (SO_REUSEPORT), 45,000 connections, ramp 500/s"),
    )
}


def schedule(index: int, rate: float) -> float:
    """Seconds after the start at which connection `index` opens (open loop: fixed times)."""
    return index / rate


def reconnect_indices(connections: int, count: int) -> list[int]:
    """The connections that disconnect gracefully and come back, spread over all of them."""
    if count <= 0:
        return []
    step = connections / count
    return sorted({int(n * step) for n in range(count)})


def reconnect_offset(rank: int, count: int, hold_seconds: float) -> float:
    """When (seconds into the hold) the rank-th reconnecting connection drops: evenly spread,
    away from the hold's edges."""
    return hold_seconds * (rank + 0.5) / max(count, 1) * 0.8 + hold_seconds * 0.1


def storm_offset(index: int, connections: int, spread: float) -> float:
    """Seconds after the storm's start at which connection `index` is cut and comes back:
    evenly over `spread` seconds, in index order."""
    return spread * index / max(connections, 1)
