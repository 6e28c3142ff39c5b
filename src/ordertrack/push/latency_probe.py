"""Where an update's time goes inside the pod, for a sample of messages (issue 23).

Off by default (`LATENCY_SAMPLE_EVERY=0`): `install` then hands back the fan-out itself, so the
reader calls it directly and nothing here runs. With N > 0, every Nth update the reader hands on
is timed, and the loop's lag is probed every `LAG_PROBE_SECONDS`; the histogram
`ordertrack_ws_latency_probe_seconds{stage}` has, per stage:

- `redis_to_read`: the message's `published_at` (the publisher's clock, just before its Redis
  call) -> the reader hands it to the fan-out: the publish round trip, the Lua, PUBLISH, the
  kernel and the pod's wake-up and parse, and any message before it in the same read;
- `fanout`: handed to the fan-out -> every frame given to its socket (picows writes at once
  when nothing is queued, so this ends in the kernel);
- `loop_lag`: how long a kernel timer's expiry waits for the loop to run it: what a client's
  frame (any readable socket) waits behind the loop's current turn.

The lag probe is a Linux `timerfd` read by the loop like any socket, armed at an absolute
CLOCK_MONOTONIC time and compared with `time.monotonic_ns()` when the loop gets to it: what a
readable socket waits, to the microsecond. A `call_later` probe reads a little more than the
loop's wait: libuv rounds a timer to whole milliseconds of a clock read once per loop turn (an
idle loop on the 2-vCPU VM, 200 probes each: timerfd p50 0.13-0.15 / p99 0.22 ms, call_later
p50 0.19-0.21 / p99 0.26-0.33 ms; the rest is the VM waking up). Where there is no timerfd the
probe falls back to `call_later`.

A sampled message costs two clock reads and one JSON parse; an unsampled one a counter.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable

import orjson
from prometheus_client import Histogram

from ordertrack.push import metrics

#: seconds between two loop-lag probes (20 wake-ups a second)
LAG_PROBE_SECONDS = 0.05
#: fine buckets: the figures of interest are 0.1 .. 5 ms
BUCKETS = (0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003,
           0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
STAGES = ("redis_to_read", "fanout", "loop_lag")

PROBE = Histogram(
    "ordertrack_ws_latency_probe_seconds",
    "Sampled stages of an update's way through the pod and the event loop's lag "
    "(LATENCY_SAMPLE_EVERY; absent when 0)",
    ["stage"], buckets=BUCKETS, registry=metrics.REGISTRY,
)


class SampledFanOut:
    """`on_update` with every `every`th call timed (same signature as `FanOut.publish`)."""

    __slots__ = ("publish", "every", "count", "_read", "_fanout")

    def __init__(self, publish: Callable, every: int):
        self.publish = publish
        self.every = every
        self.count = 0
        self._read = PROBE.labels("redis_to_read")
        self._fanout = PROBE.labels("fanout")

    def __call__(self, order_id: str, watch, payload: bytes):
        self.count += 1
        if self.count < self.every:
            return self.publish(order_id, watch, payload)
        self.count = 0
        read = time.time()
        delivered = self.publish(order_id, watch, payload)
        written = time.time()
        if delivered:
            self._fanout.observe(written - read)
            published_at = published_at_of(payload)
            if published_at is not None:
                self._read.observe(max(0.0, read - published_at))
        return delivered


def published_at_of(payload: bytes) -> float | None:
    """The message's `published_at` (epoch seconds), or None when it has none."""
    try:
        value = orjson.loads(payload).get("published_at")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return float(value) if type(value) in (int, float) else None


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1


def _timerfd_calls():
    """libc's timerfd_create and timerfd_settime, or None (not Linux, no libc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None


class LagProbe:
    """Every `interval` seconds, how long a timer's expiry waited for the loop, in seconds, to
    `observe` (the pod's `loop_lag` stage; the load generator's own list)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, observe: Callable[[float], object],
                 interval: float = LAG_PROBE_SECONDS):
        self.loop = loop
        self.interval = interval
        self.observe = observe
        self.handle: asyncio.TimerHandle | None = None
        self.fd = -1
        self._due_ns = 0
        self._settime: Callable[..., int] | None = None
        #: "timerfd" (microseconds) or "call_later" (libuv's milliseconds: the fallback)
        self.kind = "call_later"

    def start(self) -> None:
        calls = _timerfd_calls()
        if calls is not None:
            create, self._settime = calls
            fd = create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self.fd = fd
                self.kind = "timerfd"
                self.loop.add_reader(fd, self._expired)
        self._arm()

    def _arm(self) -> None:
        if self.fd < 0:
            self.handle = self.loop.call_later(self.interval, self._fire,
                                               time.monotonic() + self.interval)
            return
        self._due_ns = time.monotonic_ns() + int(self.interval * 1e9)
        when = _Itimerspec(_Timespec(0, 0), _Timespec(*divmod(self._due_ns, 1_000_000_000)))
        assert self._settime is not None
        self._settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(when), None)

    def _expired(self) -> None:
        try:
            os.read(self.fd, 8)  # the expiry count: always 1, the timer is re-armed each time
        except BlockingIOError:
            return
        self.observe(max(0.0, (time.monotonic_ns() - self._due_ns) / 1e9))
        self._arm()

    def _fire(self, due: float) -> None:
        self.observe(max(0.0, time.monotonic() - due))
        self._arm()

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


def install(loop: asyncio.AbstractEventLoop, publish: Callable, every: int) -> Callable:
    """The pod's `on_update`: `publish` itself when `every` is 0, else a sampled wrapper, with
    the loop-lag probe started."""
    if every <= 0:
        return publish
    LagProbe(loop, PROBE.labels("loop_lag").observe).start()
    return SampledFanOut(publish, every)
