"""Publish new tracking events to Redis: stream + state hash + channel in one Lua call.

`mode` is PUBSUB_MODE: `pattern` PUBLISHes on `order:tracking:ORDER_ID` (the pods PSUBSCRIBE
`order:tracking:*`), `sharded` SPUBLISHes on `order:tracking:shard:{ORDER_ID}` (the pods
SSUBSCRIBE per order), `both` does the two (the switch-over window, README "Scale-out").
The pods read the state hash for a connection's ack and replay the stream
(`XRANGE key {last_seq+1}-0 +`) on resume. Because one script writes all three, a reader never
sees a message whose state or stream entry is missing. The script refuses a `seq` that is not newer than the order's, so replaying a poll is harmless.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from ordertrack import config, redis_layout
from ordertrack.models import OrderState, StoredEvent

log = logging.getLogger("ordertrack.gateway.publisher")

SCRIPT = (Path(__file__).with_name("publish.lua")).read_text()
#: entries kept per order stream (approximate trim: Redis trims whole macro nodes)
STREAM_MAXLEN = 200
#: stream and state outlive an order's last event by this long, then Redis drops them
STATE_TTL_SECONDS = 30 * 24 * 3600


class Publisher:
    """`await Publisher(redis).publish(order_id, carrier, stored_event) -> bool`."""

    def __init__(self, redis: Any, *, maxlen: int = STREAM_MAXLEN, ttl: int = STATE_TTL_SECONDS,
                 mode: str = config.PUBSUB_PATTERN):
        if mode not in config.PUBSUB_MODES:
            raise ValueError(f"unknown PUBSUB_MODE {mode!r}")
        self.redis = redis
        self.mode = mode
        self.maxlen = maxlen
        self.ttl = ttl
        self._script = redis.register_script(SCRIPT)

    async def published_seq(self, order_id: str) -> int:
        """The newest seq Redis has for the order (0: none, e.g. expired or never published)."""
        return redis_layout.state_seq(await self.redis.hget(redis_layout.state(order_id), "seq"))

    async def publish(self, order_id: str, carrier: str, event: StoredEvent,
                      state: OrderState | None = None) -> bool:
        """True when published; False when the order already has this seq or a later one.

        `state`: the order as the store has it after `event` (the order-state rule applied),
        written to the state hash, so a pod's `connection_ack` says what the REST answer says.
        Without it the hash takes the event's own fields.
        """
        try:
            published = int(await self._call(self.redis, order_id, carrier, event, state)) == 1
        except AttributeError as exc:
            # redis-py's asyncio RedisCluster (8.2), redirected (ASK) to a node added to the
            # cluster that its slot map does not know yet, fails with "'NoneType' object has no
            # attribute 'execute_command'" (or, from its error path, '... 'connection_kwargs'")
            # instead of a Redis error: say it is one, so the caller's Redis-failure path
            # (retry, 503, the next poll) takes it; nothing was written
            if "'NoneType' object has no attribute" not in str(exc):
                raise
            raise RedisConnectionError(f"Redis Cluster node not known yet: {exc}") from exc
        if not published:
            log.info("publish refused: order %s already has seq >= %d", order_id, event.seq)
        return published

    async def queue(self, pipe: Any, order_id: str, carrier: str, event: StoredEvent,
                    state: OrderState | None = None) -> None:
        """Stage the same publish on `pipe` (a pipeline of this Redis), so many orders' publishes
        share one round trip (the load test's feeder); `await pipe.execute()` then gives 1
        (published) or 0 (refused) per publish, in order."""
        await self._call(pipe, order_id, carrier, event, state)

    def _call(self, client: Any, order_id: str, carrier: str, event: StoredEvent,
              state: OrderState | None) -> Any:
        seq = event.seq
        if seq <= 0:
            raise ValueError(f"seq must be positive, got {seq} for order {order_id}")
        body = redis_layout.encode_message(carrier, seq, event.status, event.location,
                                           event.timestamp, event.estimated_delivery, event.raw,
                                           time.time())
        if state is None:
            state = OrderState(event.status, event.timestamp, event.estimated_delivery, seq)
        classic, shard = redis_layout.publish_channels(order_id, self.mode)
        return self._script(
            keys=[redis_layout.stream(order_id), redis_layout.state(order_id)],
            args=[
                seq, body, classic, self.maxlen, self.ttl,
                *redis_layout.state_fields(state.status, event.location, state.last_update,
                                           state.estimated_delivery, carrier),
                shard,
            ],
            client=client,
        )
