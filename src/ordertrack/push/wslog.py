"""picows's logger for the pod: a client's protocol errors are rate-limited INFO lines.

picows logs every frame its parser rejects (unmasked, bad opcode, oversized, bad close code...)
as an ERROR, so any client could flood our log and page someone. Those are the client's fault:
they become INFO lines on `ordertrack.push.protocol`, at most `LINES_PER_WINDOW` per
`WINDOW_SECONDS`, each saying how many were left out before it. Everything else picows logs is
passed on unchanged (its exceptions are ours to see). Being a LoggerAdapter, not a Logger, it
also stops picows from creating a child Logger for every connection.
"""

from __future__ import annotations

import logging
import time

LINES_PER_WINDOW = 10
WINDOW_SECONDS = 10.0
#: how picows's messages for a peer's protocol violation start (picows 2.3.1)
CLIENT_FAULTS = ("WS parser error",)

protocol_log = logging.getLogger("ordertrack.push.protocol")


class RateLimit:
    """At most `limit` events per fixed window; counts the ones refused."""

    def __init__(self, limit: int = LINES_PER_WINDOW, window: float = WINDOW_SECONDS):
        self.limit = limit
        self.window = window
        self._window_start = float("-inf")
        self._count = 0
        self.suppressed = 0

    def allow(self, now: float) -> bool:
        if now - self._window_start >= self.window:
            self._window_start = now
            self._count = 0
        if self._count < self.limit:
            self._count += 1
            return True
        self.suppressed += 1
        return False


class PicowsLog(logging.LoggerAdapter):
    def __init__(self, logger: logging.Logger, limit: RateLimit | None = None):
        super().__init__(logger, None)
        self.limit = limit or RateLimit()

    def log(self, level, msg, *args, **kwargs):
        if level >= logging.ERROR and isinstance(msg, str) and msg.startswith(CLIENT_FAULTS):
            if self.limit.allow(time.monotonic()):
                suppressed, self.limit.suppressed = self.limit.suppressed, 0
                protocol_log.info("client protocol error", extra={"fields": {
                    "detail": (msg % args)[:300], "suppressed_before": suppressed}})
            return
        super().log(level, msg, *args, **kwargs)
