"""Why a message on `order:tracking:*` was dropped, and a rate-limited log of those drops.

The reader and the fan-out (Cython and twin alike) report a drop as `on_malformed(order_id,
reason)` with one of the reason names below (`order_id` is None when the channel itself is
unreadable). `MalformedLog` is a ready-made `on_malformed`: it logs an order's first drop, then
stays quiet for that order for `interval` seconds, and never writes more than `burst` lines per
interval in all, so a publisher gone wrong cannot flood the pod's log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# reader: the RESP stream or the channel name
NOT_RESP = "not_resp"                  # bytes that are not RESP: the connection is closed
UNEXPECTED_REPLY = "unexpected_reply"  # RESP, but not a reply a subscriber gets
EMPTY_ORDER_ID = "empty_order_id"      # channel `order:tracking:` with nothing after it
BAD_ORDER_ID = "bad_order_id"          # the channel's order id is not UTF-8
PAYLOAD_TOO_LARGE = "payload_too_large"
# the message rule (redis_layout.decode_message): the fan-out and stream entries alike
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
BAD_SEQ = "bad_seq"                    # seq missing, not an integer, or outside 1..2**53-1
MISSING_FIELD = "missing_field"        # `status` or `timestamp` is absent
BAD_FIELD = "bad_field"                # `status` or `timestamp` is not a string

REASONS = (NOT_RESP, UNEXPECTED_REPLY, EMPTY_ORDER_ID, BAD_ORDER_ID, PAYLOAD_TOO_LARGE,
           NOT_JSON, NOT_OBJECT, BAD_SEQ, MISSING_FIELD, BAD_FIELD)

#: an update bigger than this is dropped (the gateway's messages are well under 64 KB)
MAX_PAYLOAD_BYTES = 1 << 20


class MalformedLog:
    """`on_malformed` that logs once per order per `interval` and at most `burst` per interval."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0, burst: int = 20,
                 clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self.burst = burst
        self.clock = clock
        self.suppressed = 0
        self._window_start = float("-inf")
        self._seen: set[str | None] = set()

    def __call__(self, order_id: str | None, reason: str) -> None:
        now = self.clock()
        if now - self._window_start >= self.interval:
            self._window_start = now
            self._seen.clear()
        if order_id in self._seen or len(self._seen) >= self.burst:
            self.suppressed += 1
            return
        self._seen.add(order_id)
        self.logger.warning("dropping malformed message", extra={"fields": {
            "order_id": order_id, "reason": reason, "suppressed": self.suppressed}})
        self.suppressed = 0
