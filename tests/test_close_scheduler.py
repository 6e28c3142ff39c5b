"""The close scheduler's rule (push/close_scheduler.py): N closes asked for at once are carried
out over ceil(N / per_turn) loop iterations, in order, none lost, each exactly once; a turn
also stops when its time budget is spent. Deterministic: the test plays the loop's part."""

from __future__ import annotations

import asyncio
import math

import pytest

from ordertrack.push.close_scheduler import CloseScheduler


class Turns:
    """The loop's `call_soon`, one iteration at a time."""

    def __init__(self):
        self.deferred: list = []

    def __call__(self, callback) -> None:
        self.deferred.append(callback)

    def run_iteration(self) -> None:
        callbacks, self.deferred = self.deferred, []
        for callback in callbacks:
            callback()


@pytest.mark.parametrize(("count", "per_turn"), [(1, 32), (32, 32), (33, 32), (2000, 32), (7, 3)])
def test_n_closes_happen_over_k_iterations_each_exactly_once_in_order(count, per_turn):
    turns = Turns()
    scheduler = CloseScheduler(turns, per_turn=per_turn, budget=60.0)
    done: list[int] = []
    for index in range(count):
        scheduler.add(done.append, index)
    assert done == []  # nothing on the iteration that asked: the fan-out finishes first
    per_iteration = []
    while turns.deferred:
        before = len(done)
        turns.run_iteration()
        per_iteration.append(len(done) - before)
    assert done == list(range(count))
    assert len(per_iteration) == math.ceil(count / per_turn)
    assert max(per_iteration) <= per_turn
    assert len(scheduler) == 0


def test_closes_asked_for_while_it_works_join_the_queue_and_none_is_lost():
    turns = Turns()
    scheduler = CloseScheduler(turns, per_turn=4, budget=60.0)
    done: list[str] = []

    def close_and_ask_for_another(name: str) -> None:
        done.append(name)
        if name.startswith("a"):
            scheduler.add(done.append, "b" + name[1:])

    for index in range(6):
        scheduler.add(close_and_ask_for_another, f"a{index}")
    iterations = 0
    while turns.deferred:
        turns.run_iteration()
        iterations += 1
        assert len(turns.deferred) <= 1  # one turn scheduled at a time
    assert sorted(done) == sorted([f"a{i}" for i in range(6)] + [f"b{i}" for i in range(6)])
    assert len(done) == len(set(done)) == 12
    assert iterations == 3


def test_a_turn_stops_when_its_time_budget_is_spent():
    now = [0.0]
    turns = Turns()
    scheduler = CloseScheduler(turns, per_turn=100, budget=0.001, clock=lambda: now[0])
    done: list[int] = []

    def slow_close(index: int) -> None:
        now[0] += 0.0004  # each close costs 0.4 ms: three fit in a turn's 1 ms (the 3rd ends it)
        done.append(index)

    for index in range(10):
        scheduler.add(slow_close, index)
    counts = []
    while turns.deferred:
        before = len(done)
        turns.run_iteration()
        counts.append(len(done) - before)
    assert counts == [3, 3, 3, 1]
    assert done == list(range(10))


def test_a_failing_close_does_not_stop_the_others():
    turns = Turns()
    scheduler = CloseScheduler(turns, per_turn=2, budget=60.0)
    done: list[int] = []

    def close(index: int) -> None:
        if index == 1:
            raise OSError("transport gone")
        done.append(index)

    for index in range(5):
        scheduler.add(close, index)
    while turns.deferred:
        turns.run_iteration()
    assert done == [0, 2, 3, 4]


async def test_on_a_real_loop_other_callbacks_run_between_the_turns():
    loop = asyncio.get_running_loop()
    scheduler = CloseScheduler(loop.call_soon, per_turn=10)
    order: list[str] = []
    all_closed = asyncio.Event()

    def close(name: str) -> None:
        order.append(name)
        if name == "close29":
            all_closed.set()

    for index in range(30):
        scheduler.add(close, f"close{index}")

    ticks = asyncio.Event()

    def tick(n: int) -> None:  # someone else's work, one callback per iteration
        order.append(f"tick{n}")
        if n < 3:
            loop.call_soon(tick, n + 1)
        else:
            ticks.set()

    loop.call_soon(tick, 0)
    await asyncio.wait_for(ticks.wait(), 5)
    await asyncio.wait_for(all_closed.wait(), 5)
    assert len(scheduler) == 0
    closes = [item for item in order if item.startswith("close")]
    assert closes == [f"close{i}" for i in range(30)]
    # the other work is not held up until all 30 are done
    assert order.index("tick1") < order.index("close29")
