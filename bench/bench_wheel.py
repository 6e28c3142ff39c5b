"""Timer wheel figures: ns per schedule / cancel / fired entry, and bytes per entry.

Run: .venv/bin/python bench/bench_wheel.py [entries]   (default 20,000, the pod's upper load)
"""
from __future__ import annotations

import gc
import time
import tracemalloc

from bench.lib import cli
from ordertrack.push import _timer_wheel
from ordertrack.push.timer_wheel import PureTimerWheel


class Conn:
    """A key like the pod's connection objects (hashed by identity)."""

    __slots__ = ("__weakref__",)


def best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        fn()
        best = min(best, time.perf_counter_ns() - start)
    return best


def measure(impl: type, count: int) -> dict[str, float]:
    keys = [Conn() for _ in range(count)]
    deadlines = [1000.0 + (i % 300) * 0.1 for i in range(count)]
    w = impl(0.1, 512)
    w.advance(1000.0)

    def schedule() -> None:
        for key, deadline in zip(keys, deadlines, strict=True):
            w.schedule(key, deadline)

    def cancel() -> None:
        for key in keys:
            w.cancel(key)

    def cycle() -> None:
        schedule()
        cancel()

    gc.disable()
    try:
        schedule_cancel = best_of(5, cycle)
        cancel_only = float("inf")
        for _ in range(5):
            schedule()
            cancel_only = min(cancel_only, best_of(1, cancel))
        advance = float("inf")
        for _ in range(5):
            fresh = impl(0.1, 512)
            fresh.advance(1000.0)
            for key, deadline in zip(keys, deadlines, strict=True):
                fresh.schedule(key, deadline)
            start = time.perf_counter_ns()
            fired = fresh.advance(1030.0)
            advance = min(advance, time.perf_counter_ns() - start)
            assert len(fired) == count
    finally:
        gc.enable()

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = impl(0.1, 512)
    for key, deadline in zip(keys, deadlines, strict=True):
        held.schedule(key, deadline)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {
        "schedule_ns": (schedule_cancel - cancel_only) / count,
        "cancel_ns": cancel_only / count,
        "advance_ns_per_entry": advance / count,
        "bytes_per_entry": (after - before) / count,
    }


def main() -> int:
    count = cli(__doc__, entries=20_000).entries
    for name, impl in (("cython", _timer_wheel.TimerWheel), ("python", PureTimerWheel)):
        figures = measure(impl, count)
        print(f"{name:7s} entries={count} " + " ".join(f"{k}={v:.0f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
