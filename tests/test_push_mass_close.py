"""Mass closes go through the pod's close scheduler (issue 17 item 5): every connection one
fan-out evicts gets its 1013, exactly once, and the healthy watchers keep receiving meanwhile.
Real `ordertrack serve`, real Redis (behind a proxy that can stall commands, so connections
stay held before their ack), outside clients (the `websockets` library). The stall the
scheduler removes is measured by bench/bench_mass_close.py."""

from __future__ import annotations

import asyncio
from collections import Counter

import redis.asyncio as aioredis

from tests.support import wait_for_async
from tests.support.pods import close_code, connect, publish, recv_event, recv_json, start_pod_async
from tests.support.redis_topologies import FreezingProxy

EVICTED = 150
HEALTHY = 4
# (ES256 tokens: minting an RS256 one parses the RSA key each time, ~0.2 s on a loaded machine)


async def test_every_evicted_connection_gets_1013_once_and_healthy_watchers_keep_receiving(
        procs, tmp_path, keys, own_redis):
    proxy = FreezingProxy(own_redis.port)
    proxy.start()
    direct = aioredis.Redis.from_url(own_redis.url)  # the gateway's side: not through the proxy
    try:
        # the watchdog's probe goes through the stalled commands too: keep it out of the way
        pod = await start_pod_async(procs, tmp_path, proxy.url, keys, ws_max_pending_bytes=16384,
                        redis_subscribe_timeout_seconds=120,
                        redis_subscription_deadline_seconds=120)
        healthy = [await connect(pod, keys.token(f"mc_live{i}", "ord_mc", alg="ES256"), "ord_mc")
                   for i in range(HEALTHY)]
        for ws in healthy:
            assert (await recv_json(ws))["event"] == "connection_ack"
        proxy.stall_commands()  # admission hangs: the next ones are held before their ack
        held = await asyncio.gather(*(
            connect(pod, keys.token(f"mc_held{i}", "ord_mc", alg="ES256"), "ord_mc") for i in range(EVICTED)))
        # ~3 KB each: every held connection passes 16 KB at the 6th, in the same fan-out
        for seq in range(1, 9):
            await publish(direct, "ord_mc", seq, location="x" * 3000)
        codes = await asyncio.gather(*(close_code(ws, timeout=30) for ws in held))
        assert Counter(codes) == {1013: EVICTED}
        for ws in healthy:
            for seq in range(1, 9):
                assert (await recv_event(ws, "tracking_update", timeout=10))["data"]["seq"] == seq
        proxy.resume_commands()
        await publish(direct, "ord_mc", 9)
        for ws in healthy:
            assert (await recv_event(ws, "tracking_update"))["data"]["seq"] == 9

        def evicted_lines():
            return [d for d in pod.disconnects() if d["user_id"].startswith("mc_held")]

        await wait_for_async(lambda: len(evicted_lines()) >= EVICTED, 15,
                             what="every evicted one's line")
        lines = evicted_lines()
        assert len(lines) == EVICTED
        assert len({d["connection_id"] for d in lines}) == EVICTED  # each exactly once
        assert {(d["reason"], d["code"]) for d in lines} == {("slow_consumer", 1013)}
        assert not [d for d in pod.disconnects() if d["user_id"].startswith("mc_live")]
        for ws in healthy:
            await ws.close()
    finally:
        await direct.aclose()
        proxy.stop()
