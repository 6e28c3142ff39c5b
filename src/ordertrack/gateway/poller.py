"""The polling work: one carrier loop per carrier, and what happens to a claimed batch.

Per order of a batch: found -> store the events its history lacks -> publish each new one
(in seq order); an unchanged answer publishes nothing; not found (normal for new shipments)
is neither a failure nor a success; a failed carrier call is one more consecutive failure,
and MORE than `failure_threshold` of them page (PagerDuty trigger, once) and flag the order;
its next success resolves the alert and clears the flag. A daily-quota 429 pauses the
carrier for every replica and is nobody's failure; so does a 429 whose Retry-After outlasts
the retries (the carrier throttles us, not the order).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from redis.exceptions import RedisError

from ordertrack.gateway.carriers.common import CarrierError
from ordertrack.gateway.metrics import Metrics
from ordertrack.gateway.pagerduty import PagerDuty
from ordertrack.gateway.publisher import Publisher
from ordertrack.gateway.quota import Quota, next_utc_midnight
from ordertrack.gateway.record import record_events
from ordertrack.gateway.scheduler import (
    Scheduler,
    deferred_scores,
    period_with_push,
    spacing_with_push,
)
from ordertrack.models import ACTIVE_STATUSES, CarrierResult, Order, OrderState, TrackingEvent

log = logging.getLogger("ordertrack.gateway.poller")


class QuotaWait(Exception):
    """Our shared quota had no room for a request within the allowed wait."""

    def __init__(self, carrier: str, wait_seconds: float, paused: bool):
        self.carrier = carrier
        self.wait_seconds = wait_seconds
        self.paused = paused
        what = "paused (carrier quota or Retry-After)" if paused else "quota spent"
        super().__init__(f"{carrier}: {what}, next request in {wait_seconds:.1f}s")


def quota_gate(quota: Quota, carrier: str, max_wait: float,
               metrics: Metrics | None = None) -> Callable[[httpx.Request], Awaitable[None]]:
    """An httpx request hook: every tracking HTTP request, retries included, takes one
    request from the shared quota first, so the ceiling holds for what carriers really see.
    OAuth token and push subscription requests are not tracking calls and pass freely."""

    async def hook(request: httpx.Request) -> None:
        if "oauth" in request.url.path or "subscription" in request.url.path:
            return
        waited = 0.0
        while True:
            state, _ = await quota.acquire_request(carrier)
            if state.allowed:
                if metrics is not None:
                    metrics.requests.labels(carrier).inc()
                return
            if waited + state.wait_seconds > max_wait:
                raise QuotaWait(carrier, state.wait_seconds, state.paused_until is not None)
            await asyncio.sleep(state.wait_seconds)
            waited += state.wait_seconds

    return hook


def with_estimate(result: CarrierResult) -> list[TrackingEvent]:
    """The result's events; the newest carries the shipment's estimate when it has none."""
    events = list(result.events)
    if events and events[-1].estimated_delivery is None and result.estimated_delivery:
        events[-1] = dataclasses.replace(events[-1], estimated_delivery=result.estimated_delivery)
    return events


class Poller:
    """Polls claimed batches: carrier -> store -> Redis, plus failure accounting."""

    def __init__(self, store: Any, publisher: Publisher, quota: Quota, scheduler: Scheduler,
                 pager: PagerDuty, metrics: Metrics, *, failure_threshold: int = 10,
                 replica: str = ""):
        self.store = store
        self.publisher = publisher
        self.quota = quota
        self.scheduler = scheduler
        self.pager = pager
        self.metrics = metrics
        self.failure_threshold = failure_threshold
        self.replica = replica
        #: order_id -> carrier of orders whose stored events may not all be published (Redis
        #: failed mid-way); flushed by the carrier loop even once the order is no longer active
        self._unpublished: dict[str, str] = {}

    async def poll_batch(self, carrier: str, client: Any, orders: list[Order]) -> None:
        if not orders:
            return
        numbers = [order.tracking_number for order in orders]
        try:
            results = await client.track(numbers)
        except QuotaWait as exc:
            log.info("%s: %d order(s) skipped this cycle: %s", carrier, len(orders), exc)
            self.metrics.polls.labels(carrier, "quota_wait").inc(len(orders))
            return
        except CarrierError as exc:
            await self._carrier_failed(carrier, orders, exc)
            return
        except (httpx.HTTPError, ValueError) as exc:  # a client bug or transport edge case
            log.exception("%s: track(%s) failed unexpectedly", carrier, numbers)
            error = CarrierError(carrier, "malformed", None, f"{type(exc).__name__}: {exc}")
            await self._carrier_failed(carrier, orders, error)
            return
        answered = time.perf_counter()
        for order in orders:
            result = results.get(order.tracking_number)
            try:
                await self._handle(carrier, order, result, answered)
            except Exception:
                log.exception("%s: order %s: storing/publishing failed; will retry next poll",
                              carrier, order.order_id)
                self._unpublished[order.order_id] = carrier

    async def _handle(self, carrier: str, order: Order, result: CarrierResult | None,
                      answered: float) -> None:
        if order.order_id in self._unpublished:
            await self._republish(carrier, order.order_id)
        if result is None or not result.found:
            reason = "no answer for it" if result is None else (result.error or "not found")
            log.info("%s: order %s tracking number %s not found (%s); polling again next cycle",
                     carrier, order.order_id, order.tracking_number, reason)
            self.metrics.polls.labels(carrier, "not_found").inc()
            return
        recorded = await record_events(self.store, self.publisher, carrier, order.order_id,
                                       with_estimate(result))
        for _event, published in recorded:
            if published:
                self.metrics.published.labels(carrier).inc()
            self.metrics.publish_latency.labels(carrier).observe(time.perf_counter() - answered)
        stored = [event for event, _ in recorded]
        if stored:
            log.info("%s: order %s: %d new event(s), now seq %d (%s)", carrier, order.order_id,
                     len(stored), stored[-1].seq, stored[-1].status)
            current = await self.store.get_order(order.order_id)
            if current is not None and current.status not in ACTIVE_STATUSES:
                await self.scheduler.forget(carrier, order.order_id)
        self.metrics.polls.labels(carrier, "updated" if stored else "unchanged").inc()
        await self._succeeded(carrier, order)

    async def _republish(self, carrier: str, order_id: str) -> None:
        """Publish stored events a failed Redis call left out (the script skips known seqs)."""
        current = await self.store.get_order(order_id)
        state = OrderState.of(current) if current is not None else None
        for event in await self.store.history(order_id):
            await self.publisher.publish(order_id, carrier, event, state)
        self._unpublished.pop(order_id, None)

    async def flush_unpublished(self, carrier: str) -> None:
        """Publish what a failed Redis call left out, for every such order of `carrier`.

        Run by the carrier loop, because the order may have left the active set (the missed
        event was `delivered`) and would never be polled, hence republished, again.
        """
        for order_id in [o for o, c in self._unpublished.items() if c == carrier]:
            try:
                await self._republish(carrier, order_id)
            except Exception as exc:  # noqa: BLE001 - still down: keep it for the next round
                log.warning("%s: order %s: events still unpublished (%s: %s); will retry",
                            carrier, order_id, type(exc).__name__, exc)
                return
            log.info("%s: order %s: events missed during a Redis failure now published",
                     carrier, order_id)

    async def _carrier_failed(self, carrier: str, orders: list[Order], exc: CarrierError) -> None:
        if exc.kind == "daily_quota":
            now = time.time()
            until = now + exc.retry_after if exc.retry_after else next_utc_midnight(now)
            await self.quota.pause(carrier, until)
            log.warning("%s: daily quota spent, carrier paused for every replica for %.0f s: %s",
                        carrier, until - now, exc)
            self.metrics.polls.labels(carrier, "daily_quota").inc(len(orders))
            return
        self.metrics.errors.labels(carrier, exc.kind).inc()
        if exc.kind == "rate_limited" and exc.retry_after:
            # the carrier throttles us as a whole and said for how long: every replica waits,
            # and no order is to blame
            until = time.time() + exc.retry_after
            await self.quota.pause(carrier, until)
            log.warning("%s: rate limited, carrier held for every replica for %.0f s: %s",
                        carrier, exc.retry_after, exc)
            self.metrics.polls.labels(carrier, "rate_limited").inc(len(orders))
            return
        self.metrics.polls.labels(carrier, "failed").inc(len(orders))
        for order in orders:
            count = await self.store.record_failure(order.order_id)
            log.warning("%s: order %s (%s) poll failed, %d in a row; skipped this cycle: %s",
                        carrier, order.order_id, order.tracking_number, count, exc)
            if count > self.failure_threshold:
                await self._flag(carrier, order, count, exc)

    async def _flag(self, carrier: str, order: Order, count: int, exc: CarrierError) -> None:
        current = await self.store.get_order(order.order_id)
        if current is None or current.needs_investigation:
            return
        summary = (f"{carrier} tracking of order {order.order_id} failed {count} times in a row: "
                   f"{exc.kind}")
        details = {
            "order_id": order.order_id, "carrier": carrier,
            "tracking_number": order.tracking_number, "consecutive_failures": count,
            "last_error": str(exc), "replica": self.replica,
        }
        if await self.pager.trigger(order.order_id, summary, details):
            await self.store.set_needs_investigation(order.order_id, True)
            self.metrics.flagged.labels(carrier).inc()
            log.error("order %s flagged for investigation: %s", order.order_id, summary)

    async def _succeeded(self, carrier: str, order: Order) -> None:
        previous = await self.store.record_success(order.order_id)
        if previous <= self.failure_threshold and not order.needs_investigation:
            return
        current = await self.store.get_order(order.order_id)
        if current is None or not current.needs_investigation:
            return
        summary = f"{carrier} tracking of order {order.order_id} works again"
        details = {"order_id": order.order_id, "carrier": carrier,
                   "tracking_number": order.tracking_number, "replica": self.replica}
        if await self.pager.resolve(order.order_id, summary, details):
            await self.store.set_needs_investigation(order.order_id, False)
            log.info("order %s: polling recovered, investigation flag cleared", order.order_id)


async def sleep_or_stop(stopping: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), max(0.0, seconds))
    except TimeoutError:
        pass


class CarrierLoop:
    """One carrier's polling loop in this replica: refresh, claim, poll, repeat."""

    def __init__(self, poller: Poller, carrier: str, client: Any, *, interval: float,
                 requests_per_hour: float, refresh_seconds: float = 15.0, concurrency: int = 8,
                 safety_net: float = 1800.0):
        self.poller = poller
        self.carrier = carrier
        self.client = client
        self.interval = interval
        self.requests_per_hour = requests_per_hour
        self.refresh_seconds = refresh_seconds
        #: an order pushed within this many seconds is polled only this often
        self.safety_net = max(safety_net, interval)
        self.batch_size = int(getattr(client, "batch_size", 1))
        self.orders: dict[str, Order] = {}
        self.spacing = interval
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task] = set()

    async def refresh(self) -> None:
        orders = await self.poller.store.active_orders(self.carrier)
        self.orders = {order.order_id: order for order in orders}
        scheduler = self.poller.scheduler
        count = await scheduler.sync(self.carrier, self.orders)
        now = time.time()
        pushed = await scheduler.pushed_since(self.carrier, now - self.safety_net)
        deferred = deferred_scores(pushed, self.orders, now, self.interval, self.safety_net)
        await scheduler.defer(self.carrier, deferred)
        polled = count - len(deferred)
        args = (polled, len(deferred), self.interval, self.safety_net, self.requests_per_hour,
                self.batch_size)
        self.spacing = spacing_with_push(*args)
        period = period_with_push(*args)
        metrics = self.poller.metrics
        metrics.active_orders.labels(self.carrier).set(count)
        metrics.pushed_orders.labels(self.carrier).set(len(deferred))
        metrics.effective_period.labels(self.carrier).set(period)
        if period > self.interval:
            log.warning("%s: %d active orders (%d with push) need more than the quota allows: "
                        "each order without push is polled every %.0f s instead of %.0f s",
                        self.carrier, count, len(deferred), period, self.interval)

    async def run(self, stopping: asyncio.Event) -> None:
        log.info("%s: polling every %.3g s at most, quota %.0f requests/hour, batch %d",
                 self.carrier, self.interval, self.requests_per_hour, self.batch_size)
        next_refresh = 0.0
        while not stopping.is_set():
            try:
                now = time.monotonic()
                if now >= next_refresh:
                    await self.poller.flush_unpublished(self.carrier)
                    await self.refresh()
                    next_refresh = now + self.refresh_seconds
                state = await self.poller.quota.state(self.carrier)
                self.poller.metrics.quota_remaining.labels(self.carrier).set(state.remaining)
                if state.paused_until is not None:
                    await sleep_or_stop(stopping, min(state.wait_seconds,
                                                      next_refresh - time.monotonic()))
                    continue
                claim = await self.poller.scheduler.claim(
                    self.carrier, self.interval, self.batch_size, self.spacing)
                if not claim.order_ids:
                    await sleep_or_stop(stopping, min(claim.wait_seconds,
                                                      next_refresh - time.monotonic()))
                    continue
                await self._slots.acquire()
                task = asyncio.create_task(self._poll(claim.order_ids))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            except RedisError as exc:  # Redis gone: one readable line per retry, no traceback
                log.warning("%s: redis unavailable (%s); retrying in 1 s", self.carrier, exc)
                await sleep_or_stop(stopping, 1.0)
            except Exception:
                log.exception("%s: polling loop error; retrying in 1 s", self.carrier)
                await sleep_or_stop(stopping, 1.0)
        if self._tasks:
            log.info("%s: stopping, finishing %d in-flight poll(s)", self.carrier,
                     len(self._tasks))
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _poll(self, order_ids: tuple[str, ...]) -> None:
        try:
            orders = []
            for order_id in order_ids:
                order = self.orders.get(order_id) or await self.poller.store.get_order(order_id)
                if order is not None:
                    orders.append(order)
            await self.poller.poll_batch(self.carrier, self.client, orders)
        except Exception:
            log.exception("%s: poll of %s failed", self.carrier, ",".join(order_ids))
        finally:
            self._slots.release()
            try:
                await self.poller.scheduler.release(self.carrier, order_ids)
            except Exception:  # the claim expires by itself
                log.warning("%s: could not release claims of %s", self.carrier, order_ids)
