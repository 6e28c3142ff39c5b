"""Store then publish an order's new scans: the one path for polled and pushed scans alike.

`append_events` keeps the scans the history lacks (one scan, one event: `models.scan_identity`)
and numbers them; each is then published by the one Lua call (stream + state + channel), the
state hash holding the order as the store now has it (the order-state rule,
`models.next_order_state`), so a pod's ack says what the REST answer says. So a push and a poll
reporting the same scan, in either order, store and publish it once.
"""

from __future__ import annotations

import logging
from typing import Any

from ordertrack.gateway.publisher import Publisher
from ordertrack.models import OrderState, StoredEvent, TrackingEvent

log = logging.getLogger("ordertrack.gateway.record")


async def catch_up(store: Any, publisher: Publisher, carrier: str, order_id: str,
                   first_new: int, state: OrderState | None = None) -> None:
    """Publish stored events Redis lacks (seq below `first_new`) before newer ones.

    Another call (or process) may have stored them while it could not reach Redis, and the
    script refuses a seq older than the order's, so they would be skipped for good. Redis
    knowing nothing of the order is such a gap too: its first publish failed, or Redis
    restarted empty or let the keys expire. The store is the truth and Redis its copy, so
    the stored events are published again, in seq order (what the script then keeps as the
    state is what the store says).
    """
    have = await publisher.published_seq(order_id)
    if have >= first_new - 1:
        return
    missed = [e for e in await store.history(order_id) if have < e.seq < first_new]
    if not missed:
        return
    log.warning("%s: order %s: Redis has seq %d, store has up to %d: publishing %d missed "
                "event(s) first", carrier, order_id, have, first_new - 1, len(missed))
    for event in missed:
        await publisher.publish(order_id, carrier, event, state)


async def record_events(store: Any, publisher: Publisher, carrier: str, order_id: str,
                        events: list[TrackingEvent]) -> list[tuple[StoredEvent, bool]]:
    """Store the scans the order lacks and publish each: [(stored event, published?)].

    Empty when every scan was known already (a repeated delivery, a poll after a push).
    Raises OrderNotFound, and Redis errors after storing (the caller republishes later).
    """
    stored = await store.append_events(order_id, events)
    if not stored:
        return []
    current = await store.get_order(order_id)
    state = OrderState.of(current) if current is not None else None
    await catch_up(store, publisher, carrier, order_id, stored[0].seq, state)
    return [(event, await publisher.publish(order_id, carrier, event, state)) for event in stored]
