"""Reading an order's stream after a `seq`: what a resume, an admission's replay and the
catch-up after an outage all queue, and how they log an entry they cannot read."""

from __future__ import annotations

import logging

from ordertrack import redis_layout

log = logging.getLogger("ordertrack.push")

#: a replay sends at most this many events; older ones are the resume gap's
RESUME_MAX_EVENTS = 1000


def stream_after(pipe, order_id: str, last_seq: int) -> None:
    """Queue the order's stream entries after `last_seq` (entry ids are `{seq}-0`)."""
    pipe.xrange(redis_layout.stream(order_id), redis_layout.after_seq(last_seq), "+",
                count=RESUME_MAX_EVENTS)


def skip_entry(order_id: str):
    """The `decode_stream` callback that logs an unreadable entry of `order_id`'s stream."""
    def skip(entry_id, exc) -> None:
        log.warning("skipping unreadable stream entry %s of %s: %s", entry_id, order_id, exc)
    return skip
