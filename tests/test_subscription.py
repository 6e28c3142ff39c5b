"""The broker (push/subscription.py) against a real redis-server that restarts: it resubscribes,
and a live update never overtakes the catch-up that runs after a reconnect."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
import uvloop

from ordertrack import redis_connect
from ordertrack.push.hub import Watch
from ordertrack.push.subscription import Subscription
from tests.support import wait_for_async


def test_updates_wait_for_the_catch_up_after_a_reconnect(own_redis):
    seen: list = []

    async def scenario():
        lives: list[bool] = []
        resubscribed = asyncio.Event()

        async def on_live(again: bool) -> None:
            lives.append(again)
            if not again:
                return
            # while the pod catches up, the gateway publishes a newer update
            read_before = broker.received
            client = aioredis.Redis.from_url(own_redis.url)
            await client.publish("order:tracking:ord_1", b"live 5")
            await client.aclose()
            # the reader has read it (and the broker holds it) before the catch-up ends
            await wait_for_async(lambda: broker.received > read_before, 10, what="live 5 read")
            assert seen == []
            seen.append("catch-up 3..4")
            resubscribed.set()

        broker = Subscription(redis_connect.parse_redis_url(own_redis.url), ["ws:control:all"], {"ord_1": Watch()},
                        on_update=lambda order_id, watch, payload: seen.append(payload.decode()),
                        on_control=lambda payload: None, on_live=on_live)
        task = asyncio.get_running_loop().create_task(broker.run())
        await asyncio.wait_for(broker.live.wait(), 10)
        await wait_for_async(lambda: lives == [False], 10, what="first on_live")
        own_redis.stop()
        own_redis.start()
        await asyncio.wait_for(resubscribed.wait(), 15)
        await wait_for_async(lambda: len(seen) == 2, 10, what="the held update handed on")
        broker.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return lives

    assert uvloop.run(scenario()) == [False, True]
    assert seen == ["catch-up 3..4", "live 5"]
