"""Publish new tracking events to Redis: stream + state hash + channel in one Lua call.

The push pods PSUBSCRIBE `order:tracking:*`, read the state hash for a connection's ack and
replay the stream (`XRANGE key {last_seq+1}-0 +`) on resume. Because one script writes all
three, a reader never sees a message whose state or stream entry is missing. The script
refuses a `seq` that is not newer than the order's, so replaying a poll is harmless.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import orjson

from ordertrack import keys
from ordertrack.models import StoredEvent

log = logging.getLogger("ordertrack.gateway.publisher")

SCRIPT = (Path(__file__).with_name("publish.lua")).read_text()
#: entries kept per order stream (approximate trim: Redis trims whole macro nodes)
STREAM_MAXLEN = 200
#: stream and state outlive an order's last event by this long, then Redis drops them
STATE_TTL_SECONDS = 30 * 24 * 3600


def message(
    carrier: str,
    seq: int,
    status: str,
    location: str | None,
    timestamp: str,
    estimated_delivery: str | None,
    raw: dict[str, Any] | None,
    published_at: float,
) -> bytes:
    """The channel/stream message JSON (DESIGN.md, "Redis")."""
    return orjson.dumps(
        {
            "status": status,
            "location": location,
            "timestamp": timestamp,
            "estimated_delivery": estimated_delivery,
            "carrier": carrier,
            "raw_carrier_response": raw,
            "seq": seq,
            "published_at": published_at,
        }
    )


def _text(value: str | None) -> str:
    return "" if value is None else value


class Publisher:
    """`await Publisher(redis).publish(order_id, carrier, stored_event) -> bool`."""

    def __init__(self, redis: Any, *, maxlen: int = STREAM_MAXLEN, ttl: int = STATE_TTL_SECONDS):
        self.redis = redis
        self.maxlen = maxlen
        self.ttl = ttl
        self._script = redis.register_script(SCRIPT)

    async def published_seq(self, order_id: str) -> int:
        """The newest seq Redis has for the order (0: none, e.g. expired or never published)."""
        value = await self.redis.hget(keys.state(order_id), "seq")
        return int(value) if value else 0

    async def publish(self, order_id: str, carrier: str, event: StoredEvent) -> bool:
        """True when published; False when the order already has this seq or a later one."""
        return await self.publish_fields(
            order_id, carrier, event.seq, event.status, event.location, event.timestamp,
            event.estimated_delivery, event.raw,
        )

    async def publish_fields(
        self,
        order_id: str,
        carrier: str,
        seq: int,
        status: str,
        location: str | None,
        timestamp: str,
        estimated_delivery: str | None,
        raw: dict[str, Any] | None = None,
    ) -> bool:
        result = await self._call(self.redis, order_id, carrier, seq, status, location,
                                  timestamp, estimated_delivery, raw)
        published = int(result) == 1
        if not published:
            log.info("publish refused: order %s already has seq >= %d", order_id, seq)
        return published

    async def queue(
        self,
        pipe: Any,
        order_id: str,
        carrier: str,
        seq: int,
        status: str,
        location: str | None,
        timestamp: str,
        estimated_delivery: str | None,
        raw: dict[str, Any] | None = None,
    ) -> None:
        """Stage the same publish on `pipe` (a pipeline of this Redis), so many orders' publishes
        share one round trip (the load test's feeder); `await pipe.execute()` then gives 1
        (published) or 0 (refused) per publish, in order."""
        await self._call(pipe, order_id, carrier, seq, status, location, timestamp,
                         estimated_delivery, raw)

    def _call(self, client: Any, order_id: str, carrier: str, seq: int, status: str,
              location: str | None, timestamp: str, estimated_delivery: str | None,
              raw: dict[str, Any] | None) -> Any:
        if seq <= 0:
            raise ValueError(f"seq must be positive, got {seq} for order {order_id}")
        body = message(carrier, seq, status, location, timestamp, estimated_delivery, raw,
                       time.time())
        return self._script(
            keys=[keys.stream(order_id), keys.state(order_id)],
            args=[
                seq, body, keys.channel(order_id), self.maxlen, self.ttl,
                status, _text(location), timestamp, _text(estimated_delivery), carrier,
            ],
            client=client,
        )


async def publish_event(
    redis: Any,
    order_id: str,
    carrier: str,
    seq: int,
    status: str,
    location: str | None,
    timestamp: str,
    estimated_delivery: str | None,
    raw: dict[str, Any] | None = None,
) -> bool:
    """One-shot publish, for tests of other parts and for tools."""
    return await Publisher(redis).publish_fields(
        order_id, carrier, seq, status, location, timestamp, estimated_delivery, raw
    )
