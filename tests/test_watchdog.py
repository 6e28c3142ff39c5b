"""The subscription watchdog's rules (push/watchdog.py): when a quiet subscription is probed and
when its silence counts as lost. The broker's use of it, against a Redis that goes silent:
test_redis_ha.py."""

from __future__ import annotations

import pytest

from ordertrack.push.watchdog import DEFAULT_DEADLINE_SECONDS, SubscriptionWatchdog


def test_watchdog_counts_silence_beyond_the_deadline_as_lost():
    dog = SubscriptionWatchdog(interval=5, now=100.0)
    assert dog.deadline == DEFAULT_DEADLINE_SECONDS == 15.0
    assert not dog.lost(115.0)
    assert dog.lost(115.1)
    dog.seen(112.0)  # a message arrived: the silence counts from there
    assert not dog.lost(127.0)
    assert dog.lost(127.5)
    dog.reset(200.0)  # resubscribed
    assert not dog.lost(214.0)


def test_watchdog_asks_for_a_probe_only_when_quiet():
    dog = SubscriptionWatchdog(interval=5, deadline=15, now=0.0)
    assert not dog.probe_due(4.9)
    assert dog.probe_due(5.0)
    dog.probed(5.0)
    assert not dog.probe_due(9.9)  # one probe per interval, not one per check
    assert dog.probe_due(10.0)
    dog.seen(11.0)  # traffic (or the pong) is proof enough
    assert not dog.probe_due(15.9)
    assert dog.probe_due(16.0)


def test_watchdog_next_check_is_the_earlier_of_probe_and_deadline():
    dog = SubscriptionWatchdog(interval=5, deadline=15, now=0.0)
    assert dog.next_check(1.0) == 4.0
    dog.probed(5.0)
    dog.probed(10.0)
    assert dog.next_check(12.0) == 3.0  # deadline at 15 before the probe at 15: both 15
    dog.probed(14.0)
    assert dog.next_check(14.0) == 1.0  # deadline first
    assert dog.next_check(20.0) == 0.0


@pytest.mark.parametrize(("interval", "deadline"), [(15, 15), (20, 15), (0, 15), (-1, 15)])
def test_watchdog_refuses_a_probe_interval_that_cannot_beat_the_deadline(interval, deadline):
    with pytest.raises(ValueError, match="must be above 0 and below the deadline"):
        SubscriptionWatchdog(interval=interval, deadline=deadline)
