"""The real-time flag as the pod applies it: the Redis provider's document re-read on demand
(`refresh`), and, when the flags change, every open connection they no longer allow closed
with 4003 (`on_change`), in slices so a flagd evaluation per connection never stalls delivery
for long; a change during a pass makes one more pass."""

from __future__ import annotations

import asyncio
import logging

from ordertrack import protocol, redis_layout

log = logging.getLogger("ordertrack.push")


class FlagWatch:
    def __init__(self, flags, redis, hub, spawn):
        self.flags = flags
        self.redis = redis
        self.hub = hub
        self.spawn = spawn
        self._running = False
        self._again = False

    async def refresh(self) -> None:
        """The Redis provider's document (other providers watch their own source)."""
        if self.flags.uses_redis:
            self.flags.observe_document(await self.redis.get(redis_layout.FLAG_KEY))

    def on_change(self) -> None:
        if self._running:
            self._again = True
        else:
            self.spawn(self._reevaluate())

    async def _reevaluate(self) -> None:
        self._running = True
        try:
            while True:
                self._again = False
                closed = 0
                for index, conn in enumerate(list(self.hub.connections.values())):
                    if index and index % 200 == 0:
                        await asyncio.sleep(0)
                    if conn.cleaned or conn.close_reason is not None:
                        continue
                    # no decision (provider not ready): what was allowed stays allowed
                    if self.flags.decide(conn.user_id, conn.carrier, conn.client_class) is False:
                        conn.close(protocol.FEATURE_DISABLED)
                        closed += 1
                log.info("flags re-evaluated", extra={"fields": {
                    "connections": len(self.hub), "closed_feature_disabled": closed}})
                if not self._again:
                    return
        finally:
            self._running = False
