"""The REST fallback's read path: Redis as a read-through cache in front of the tracking store.

A herd of pollers (every client whose WebSocket dropped polls every 30 s) must not hammer the
database. An order's answer document is cached in-process and in Redis
(`order:tracking:rest:{ORDER_ID}`, short TTL). Each request makes one Redis round trip: the
order's state-hash `seq` and the kill-switch flag, pipelined (two keys in different hash slots:
no script may read both on a Redis Cluster, a pipeline may). A cached document whose `seq` is
older than the state hash is stale (the gateway published since): it is rebuilt from the store,
and events the store does not show yet are filled in from the order's stream, so the REST
answer never lags what the push pod delivers; the order's fields then follow the order-state
rule (`models.next_order_state`), as the store's will once it has those events. Concurrent rebuilds of one order in this process
share one store read (single flight).

The same round trip reads the `realtime_order_tracking` flag document, which the Redis flag
provider decides from (`ordertrack.flags`; the push pods use the same provider and rules).

The pure functions (`build_document`, `apply_stream`) hold the rules; the
`TrackingReader` does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from ordertrack import redis_layout
from ordertrack.models import Order, OrderState, StoredEvent, next_order_state

log = logging.getLogger("ordertrack.api.tracking")

#: in-process cache bound (oldest entries go first)
LOCAL_CACHE_MAX = 10_000


# --- rules (pure) ------------------------------------------------------------------------------


def history_item(seq: int, status: str, location: str | None, timestamp: str) -> dict[str, Any]:
    return {"status": status, "location": location, "timestamp": timestamp, "seq": seq}


def timeline_key(item: dict[str, Any]) -> tuple[str, int]:
    """History order: by scan time, then seq. Carriers push late scans (an older scan after a
    newer one gets the next seq); the history reads as the shipment went. ISO 8601 UTC
    timestamps with `Z` compare as text."""
    return (item["timestamp"], item["seq"])


def build_document(order: Order, history: Sequence[StoredEvent]) -> dict[str, Any]:
    """The REST answer (without `realtime`) from the store's order and its history.

    The current fields are the store's (`next_order_state`: the newest scan by time)."""
    seq = max([order.seq, *(event.seq for event in history)])
    items = sorted((history_item(e.seq, e.status, e.location, e.timestamp) for e in history),
                   key=timeline_key)
    estimated = order.estimated_delivery
    if estimated is None:
        # an event without an estimate keeps the last one the carrier gave
        by_time = sorted(history, key=lambda e: (e.timestamp, e.seq))
        estimated = next((e.estimated_delivery for e in reversed(by_time)
                          if e.estimated_delivery), None)
    return {
        # the owner: app.py checks it against the token's subject and pops it: never sent
        "user_id": order.user_id,
        "order_id": order.order_id,
        "tracking_number": order.tracking_number,
        "carrier": order.carrier,
        "status": order.status,
        "last_update": order.last_update,
        "estimated_delivery": estimated,
        "seq": seq,
        "history": items,
    }


def apply_stream(doc: dict[str, Any], entries: Sequence[redis_layout.StreamEntry]
                 ) -> dict[str, Any]:
    """`doc` with the stream's events after its `seq` applied (a new doc): each takes its
    place in the history by time, and the order's fields move by the order-state rule, as
    the store moves them (a late, older scan leaves them as they are)."""
    events = [entry.event(doc["order_id"]) for entry in entries if entry.seq > doc["seq"]]
    if not events:
        return doc
    state = next_order_state(
        OrderState(doc["status"], doc.get("last_update"), doc.get("estimated_delivery"),
                   doc["seq"]),
        events,
    )
    items = [history_item(e.seq, e.status, e.location, e.timestamp) for e in events]
    return dict(
        doc, status=state.status, last_update=state.last_update,
        estimated_delivery=state.estimated_delivery, seq=state.seq,
        history=sorted([*doc["history"], *items], key=timeline_key),
    )


def _skip_entry(entry_id: Any, exc: redis_layout.MalformedMessage) -> None:
    log.warning("stream entry %r has no usable msg (%s): skipped", entry_id, exc)


#: after a Redis error, requests skip Redis this long before trying it again
REDIS_RETRY_SECONDS = 1.0


# --- I/O ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackingRead:
    """One read: the document (None: the store has no such order) and the flag document."""

    doc: dict[str, Any] | None
    #: the Redis flag document as read (None: unset)
    flag: bytes | None
    #: where the document came from: "process", "redis", "store" (or "missing")
    source: str
    #: False while Redis is unreachable: no pod can push then, so realtime is off
    redis_up: bool = True


class TrackingReader:
    """`await reader.read(order_id) -> TrackingRead`."""

    def __init__(self, store: Any, redis: Any, *, ttl: float = 5.0,
                 local_max: int = LOCAL_CACHE_MAX):
        self.store = store
        self.redis = redis
        self.ttl = ttl
        self.local_max = local_max
        self._local: dict[str, tuple[dict[str, Any], float]] = {}
        self._inflight: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self._redis_down_logged = float("-inf")
        self._redis_down_until = float("-inf")

    async def read(self, order_id: str) -> TrackingRead:
        """The order's document and the flag. Store errors propagate; Redis errors do not."""
        if time.monotonic() < self._redis_down_until:
            return await self._read_without_redis(order_id, None)
        try:
            raw_seq, raw_flag = await self._seq_and_flag(order_id)
        except RedisError as exc:
            return await self._read_without_redis(order_id, exc)
        flag = raw_flag
        current = redis_layout.state_seq(raw_seq)

        cached = self._local.get(order_id)
        if cached is not None:
            doc, expires = cached
            if doc["seq"] >= current and time.monotonic() < expires:
                return TrackingRead(doc, flag, "process")
            del self._local[order_id]

        try:
            raw_doc = await self.redis.get(redis_layout.rest_cache(order_id))
        except RedisError as exc:
            return await self._read_without_redis(order_id, exc)
        if raw_doc is not None:
            doc = orjson.loads(raw_doc)
            if doc["seq"] >= current:
                self._remember(order_id, doc)
                return TrackingRead(doc, flag, "redis")

        loaded = await self._load_once(order_id, current)
        return TrackingRead(loaded, flag, "store" if loaded is not None else "missing")

    async def _seq_and_flag(self, order_id: str) -> list:
        """The state hash's `seq` and the flag document, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(redis_layout.state(order_id), "seq")
        pipe.get(redis_layout.FLAG_KEY)
        return await pipe.execute()

    async def _read_without_redis(self, order_id: str, exc: Exception | None) -> TrackingRead:
        """Redis is down: answer from this process's cache (TTL only) or the store.

        Tracking data stays available over REST whatever happens to the realtime path. With
        Redis down no pod can push, so the answer tells clients not to open a WebSocket.
        """
        now = time.monotonic()
        if exc is not None:
            # skip Redis for a moment: a request must not wait on connect timeouts
            self._redis_down_until = now + REDIS_RETRY_SECONDS
        if exc is not None and now >= self._redis_down_logged + 10:
            self._redis_down_logged = now
            log.warning("redis unavailable (%s: %s): answering from the store, realtime off",
                        type(exc).__name__, exc)
        cached = self._local.get(order_id)
        if cached is not None and now < cached[1]:
            return TrackingRead(cached[0], None, "process", redis_up=False)
        doc = await self._load_once(order_id, 0, use_redis=False)
        return TrackingRead(doc, None, "store" if doc is not None else "missing", redis_up=False)

    def _remember(self, order_id: str, doc: dict[str, Any]) -> None:
        if len(self._local) >= self.local_max:
            self._local.pop(next(iter(self._local)))
        self._local[order_id] = (doc, time.monotonic() + self.ttl)

    async def _load_once(self, order_id: str, current: int, use_redis: bool = True
                         ) -> dict[str, Any] | None:
        """Rebuild from the store, one rebuild per order at a time in this process."""
        pending = self._inflight.get(order_id)
        if pending is not None:
            doc = await asyncio.shield(pending)
            if doc is None or doc["seq"] >= current:
                return doc
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self._inflight[order_id] = future
        try:
            doc = await self._load(order_id, current, use_redis)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, nobody else must
            raise
        else:
            future.set_result(doc)
            return doc
        finally:
            if self._inflight.get(order_id) is future:
                del self._inflight[order_id]

    async def _load(self, order_id: str, current: int, use_redis: bool) -> dict[str, Any] | None:
        order = await self.store.get_order(order_id)
        if order is None:
            return None
        doc = build_document(order, await self.store.history(order_id))
        if use_redis:
            try:
                if current > doc["seq"]:
                    # published but not (yet) visible in the store: fill in from the stream
                    entries = await self.redis.xrange(redis_layout.stream(order_id),
                                                      redis_layout.after_seq(doc["seq"]), "+")
                    doc = apply_stream(doc, redis_layout.decode_stream(entries, _skip_entry))
                await self.redis.set(redis_layout.rest_cache(order_id), orjson.dumps(doc),
                                     px=int(self.ttl * 1000))
            except RedisError as exc:
                log.warning("redis failed while caching order %s: %s", order_id, exc)
        self._remember(order_id, doc)
        return doc
