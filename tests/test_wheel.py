"""The heartbeat timer wheel: push/timer_wheel.py compiled (ordertrack.push._timer_wheel) and
interpreted (its twin, PureTimerWheel): one text, two builds.

Unit behaviour runs against both; the property tests feed both (and a plain sorted-list
model of the rules) the same random operations and compare every answer.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ordertrack.push import _timer_wheel, timer_wheel
from ordertrack.push.timer_wheel import PureTimerWheel, deadline_tick, now_tick

IMPLS = [pytest.param(_timer_wheel.TimerWheel, id="cython"),
         pytest.param(PureTimerWheel, id="python")]


@pytest.fixture(params=IMPLS)
def Wheel(request):
    return request.param


class Conn:
    """Stands in for a connection object: hashable by identity, like the pod's keys."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Conn({self.name})"


def test_the_extension_is_built_and_chosen_by_default():
    assert set(timer_wheel.IMPLEMENTATIONS) == {"cython", "python"}
    assert timer_wheel.IMPLEMENTATION == "cython"
    assert timer_wheel.TimerWheel is _timer_wheel.TimerWheel


def test_the_environment_variable_selects_the_twin():
    """The same switch as the pub/sub reader's and the fan-out's: the pod then runs on twins."""
    out = subprocess.run(
        [sys.executable, "-c", "from ordertrack.push import timer_wheel as w;"
         "print(w.IMPLEMENTATION, w.TimerWheel is w.PureTimerWheel)"],
        env=dict(os.environ, ORDERTRACK_PURE_PYTHON="1"), capture_output=True, text=True,
        check=True)
    assert out.stdout.split() == ["python", "True"]


def test_never_fires_before_the_deadline(Wheel):
    w = Wheel(0.25, 16)
    w.schedule("a", 10.1)
    assert w.advance(10.0) == []
    assert w.advance(10.24) == []
    assert "a" in w
    # the deadline rounds up to the tick grid: 10.25
    assert w.advance(10.25) == ["a"]
    assert "a" not in w and len(w) == 0


def test_grid_points_are_computed_in_floating_point(Wheel):
    # 101 * 0.1 is 10.100000000000001 in doubles: 10.1 is still before that grid point
    w = Wheel(0.1, 16)
    w.schedule("a", 10.05)
    assert w.advance(10.1) == []
    assert w.advance(10.100000000000001) == ["a"]


def test_fires_once_then_forgets(Wheel):
    w = Wheel(1.0)
    w.schedule("a", 3.0)
    assert w.advance(3.0) == ["a"]
    assert w.advance(100.0) == []
    assert w.cancel("a") is False


def test_order_is_by_tick_then_scheduling_order(Wheel):
    w = Wheel(1.0, 8)
    conns = [Conn(str(i)) for i in range(5)]
    w.schedule(conns[0], 5.0)
    w.schedule(conns[1], 3.0)
    w.schedule(conns[2], 4.5)  # tick 5, scheduled after conns[0]
    w.schedule(conns[3], 2.2)  # tick 3, after conns[1]
    w.schedule(conns[4], 1.0)
    assert w.advance(0.0) == []
    assert w.advance(6.0) == [conns[4], conns[1], conns[3], conns[0], conns[2]]


def test_reschedule_replaces_the_entry(Wheel):
    w = Wheel(1.0, 8)
    w.schedule("a", 5.0)
    w.schedule("b", 5.0)
    w.schedule("a", 5.0)  # same tick again: now after b
    assert len(w) == 2
    w.schedule("c", 2.0)
    w.schedule("c", 30.0)  # pushed later (beyond a revolution)
    assert w.advance(4.0) == []
    assert w.advance(5.0) == ["b", "a"]
    assert w.advance(29.0) == []
    assert w.advance(30.0) == ["c"]


def test_cancel(Wheel):
    w = Wheel(0.5, 4)
    w.schedule("a", 1.0)
    w.schedule("b", 1.0)
    assert w.cancel("a") is True
    assert w.cancel("a") is False
    assert w.cancel("never") is False
    assert "a" not in w and len(w) == 1
    assert w.advance(2.0) == ["b"]


def test_far_future_deadlines_wait_for_their_round(Wheel):
    w = Wheel(1.0, 4)  # one revolution = 4 s
    w.schedule("far", 13.0)
    w.schedule("near", 1.0)
    fired = []
    for second in range(0, 13):
        fired += w.advance(float(second))
    assert fired == ["near"]
    assert w.advance(13.0) == ["far"]


def test_big_jump_fires_everything_due_in_order(Wheel):
    w = Wheel(0.1, 8)
    w.advance(1e6)
    w.schedule("c", 1e6 + 50.0)
    w.schedule("a", 1e6 + 0.1)
    w.schedule("b", 1e6 + 3.2)
    w.schedule("late", 1e6 + 5000.0)
    assert w.advance(1e6 + 4000.0) == ["a", "b", "c"]
    assert w.next_deadline() == pytest.approx(1e6 + 5000.0)
    assert w.advance(1e6 + 4999.9) == []
    assert w.advance(1e6 + 5000.0) == ["late"]


def test_past_deadlines_fire_at_the_next_advance(Wheel):
    w = Wheel(1.0, 8)
    w.advance(100.0)
    w.schedule("new", 101.0)
    w.schedule("old", 50.0)
    w.schedule("older", 10.0)
    assert w.next_deadline() == 10.0
    assert w.advance(100.0) == ["older", "old"]
    assert w.advance(101.0) == ["new"]


def test_next_deadline(Wheel):
    w = Wheel(0.25, 8)
    assert w.next_deadline() is None
    w.schedule("a", 10.1)
    w.schedule("b", 9.0)
    assert w.next_deadline() == 9.0
    w.cancel("b")
    assert w.next_deadline() == 10.25
    w.advance(10.25)
    assert w.next_deadline() is None


def test_len_and_contains_with_connection_keys(Wheel):
    w = Wheel(1.0)
    conns = [Conn(str(i)) for i in range(100)]
    for i, conn in enumerate(conns):
        w.schedule(conn, float(i))
    assert len(w) == 100 and conns[42] in w and Conn("42") not in w
    fired = w.advance(49.0)
    assert fired == conns[:50]
    assert len(w) == 50 and conns[42] not in w and conns[50] in w


# Times where ceil/floor of time / tick lands on the wrong side of the grid in doubles and
# the correction steps matter (deadline up, deadline down, now down, now up).
EDGES = [(4095.15, 0.03), (2534.61, 0.03), (7006.2, 0.1), (8505.4, 0.1)]


@pytest.mark.parametrize("x,tick", EDGES)
def test_tick_rounding_edges(Wheel, x, tick):
    t = deadline_tick(x, tick)
    assert (t - 1) * tick < x <= t * tick
    n = now_tick(x, tick)
    assert n * tick <= x < (n + 1) * tick

    w = Wheel(tick, 8)
    w.schedule("a", x)
    assert w.next_deadline() == t * tick
    assert w.advance((t - 1) * tick) == []
    assert w.advance(t * tick) == ["a"]

    w = Wheel(tick, 8)
    w.schedule("later", (n + 1) * tick)
    w.schedule("now", n * tick)
    assert w.advance(x) == ["now"]


@given(x=st.floats(min_value=-1e7, max_value=1e7), tick=st.floats(min_value=1e-3, max_value=10))
def test_tick_rounding_property(x, tick):
    t = deadline_tick(x, tick)
    assert (t - 1) * tick < x <= t * tick
    n = now_tick(x, tick)
    assert n * tick <= x < (n + 1) * tick


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e300])
def test_unusable_times_are_refused(Wheel, bad):
    w = Wheel(0.1)
    with pytest.raises(ValueError):
        w.schedule("a", bad)
    with pytest.raises(ValueError):
        w.advance(bad)
    assert len(w) == 0


@pytest.mark.parametrize("tick,slots", [(0, 8), (-1.0, 8), (1.0, 0)])
def test_bad_shape_is_refused(Wheel, tick, slots):
    with pytest.raises(ValueError):
        Wheel(tick, slots)


# ---------------------------------------------------------------- property tests

KEYS = st.sampled_from([f"k{i}" for i in range(12)])
TICKS = st.sampled_from([0.1, 0.25, 1.0, 0.03])


class SameAnswers(RuleBasedStateMachine):
    """Both wheels and a sorted-list model get identical operations and must agree."""

    @initialize(tick=TICKS, slots=st.sampled_from([1, 3, 4, 8, 64]), start=st.sampled_from([0.0, 1e6]))
    def build(self, tick, slots, start):
        self.tick = tick
        self.wheels = [_timer_wheel.TimerWheel(tick, slots), PureTimerWheel(tick, slots)]
        self.now = start
        self.model: dict[str, tuple[float, int]] = {}  # key -> (deadline, schedule order)
        self.order = 0

    @rule(key=KEYS, offset=st.one_of(
        st.floats(min_value=-50, max_value=200, allow_nan=False),
        st.integers(min_value=-40, max_value=400).map(lambda k: k * 0.05),
        st.floats(min_value=0, max_value=1e5),
        st.integers(min_value=-1000, max_value=10**5).map(lambda k: k * 0.01),
    ))
    def schedule(self, key, offset):
        deadline = self.now + offset
        for w in self.wheels:
            w.schedule(key, deadline)
        self.order += 1
        self.model[key] = (deadline, self.order)

    @rule(key=KEYS)
    def cancel(self, key):
        answers = [w.cancel(key) for w in self.wheels]
        assert answers == [key in self.model] * 2
        self.model.pop(key, None)

    @rule(step=st.one_of(
        st.floats(min_value=0, max_value=5, allow_nan=False),
        st.integers(min_value=0, max_value=100).map(lambda k: k * 0.05),
        st.floats(min_value=0, max_value=2e5),
    ))
    def advance(self, step):
        self.now += step
        fast, slow = (w.advance(self.now) for w in self.wheels)
        assert fast == slow
        n = now_tick(self.now, self.tick)
        due = sorted(
            (deadline_tick(d, self.tick), order, key)
            for key, (d, order) in self.model.items()
            if deadline_tick(d, self.tick) <= n
        )
        assert fast == [key for _, _, key in due]
        for key in fast:
            deadline, _ = self.model.pop(key)
            assert deadline <= self.now, "fired early"
        for deadline, _ in self.model.values():
            # what did not fire is due less than one tick ago at most
            assert deadline > self.now - self.tick - 1e-6

    @invariant()
    def agree(self):
        if not hasattr(self, "wheels"):
            return
        fast, slow = self.wheels
        assert len(fast) == len(slow) == len(self.model)
        for key in self.model:
            assert key in fast and key in slow
        nd = fast.next_deadline()
        assert nd == slow.next_deadline()
        if self.model:
            first = min(deadline_tick(d, self.tick) for d, _ in self.model.values())
            assert nd == first * self.tick
        else:
            assert nd is None


SameAnswers.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSameAnswers = SameAnswers.TestCase


# ------------------------------------------- many entries (their figures: bench/bench_wheel.py)

N = 10_000


@pytest.mark.parametrize("Impl", IMPLS)
def test_ten_thousand_entries_scheduled_then_cancelled_leave_it_empty(Impl):
    w = Impl(0.1, 512)
    keys = [Conn(str(i)) for i in range(N)]
    for i, key in enumerate(keys):
        w.schedule(key, 1000.0 + (i % 300) * 0.1)
    assert len(w) == N
    for key in keys:
        w.cancel(key)
    assert len(w) == 0


@pytest.mark.parametrize("Impl", IMPLS)
def test_ten_thousand_entries_due_all_fire_in_one_advance(Impl):
    keys = [Conn(str(i)) for i in range(N)]
    w = Impl(0.1, 512)
    w.advance(1000.0)
    for i, key in enumerate(keys):
        w.schedule(key, 1000.0 + (i % 300) * 0.1)
    assert sorted(map(id, w.advance(1030.0))) == sorted(map(id, keys))
    assert len(w) == 0
