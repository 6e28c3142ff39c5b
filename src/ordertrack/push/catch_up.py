"""After a Redis outage: every watched order's events the pod missed, pushed in order.

Per chunk of CATCH_UP_CHUNK watched orders, one pipeline reads their state `seq`; the orders
whose state is past what the pod saw (`Watch.seq`) get their stream after it, fanned out as
live messages would be (the delivery rule skips what a client already has).
"""

from __future__ import annotations

import logging

from ordertrack import redis_layout
from ordertrack.push import metrics
from ordertrack.push.streams import skip_entry, stream_after

log = logging.getLogger("ordertrack.push")

#: watched orders whose state is compared per pipeline
CATCH_UP_CHUNK = 1000


async def replay_missed(redis, hub, watched: list, on_skip=None) -> int:
    """Push, through the hub, every event of these watched `(order_id, Watch)` pairs published
    after the highest `seq` this pod saw (`Watch.seq`): the state hash's `seq` first (one
    pipeline per CATCH_UP_CHUNK orders), then the stream after it for those behind. Returns how
    many events it pushed. The one catch-up rule: after a reconnect (pattern mode) and after a
    resubscription (sharded mode, push/shard_subscriptions.py)."""
    missed = 0
    for start in range(0, len(watched), CATCH_UP_CHUNK):
        chunk = watched[start:start + CATCH_UP_CHUNK]
        pipe = redis.pipeline(transaction=False)
        for order_id, _ in chunk:
            pipe.hget(redis_layout.state(order_id), "seq")
        seqs = await pipe.execute()
        behind = [(order_id, watch) for (order_id, watch), seq in zip(chunk, seqs, strict=True)
                  if redis_layout.state_seq(seq) > watch.seq]
        if not behind:
            continue
        pipe = redis.pipeline(transaction=False)
        for order_id, watch in behind:
            stream_after(pipe, order_id, watch.seq)
        for (order_id, _watch), entries in zip(behind, await pipe.execute(), strict=True):
            for entry in redis_layout.decode_stream(entries, on_skip or skip_entry(order_id)):
                hub.publish(order_id, entry.payload)
                missed += 1
    return missed


async def catch_up(redis, hub) -> None:
    """After a reconnect: every watched order's missed events."""
    watched = list(hub.watches.items())
    missed = await replay_missed(redis, hub, watched)
    if missed:
        metrics.CATCHUP_EVENTS.inc(missed)
    log.info("caught up after reconnect", extra={"fields": {
        "orders_watched": len(watched), "events_replayed": missed}})
