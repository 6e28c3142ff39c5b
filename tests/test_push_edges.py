"""The push pod's edges (issue 7): one customer must not hurt the others, a token's connection
ends with the token, bad bytes get the contract's answers, one bad message kills nothing.
Real `ordertrack serve` processes, real Redis, outside clients (websockets or raw sockets)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import redis.asyncio as aioredis
import uvloop
from picows import ws_create_server

from ordertrack import auth, config, redis_layout
from ordertrack.push.pod import Pod
from ordertrack.push.settings import SETTINGS
from tests.support import free_port, wait_for_async
from tests.support.pods import (
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawWebSocket,
    close_code,
    connect,
    encode_frame,
    open_raw,
    publish,
    recv_event,
    recv_json,
    start_pod_async,
    upgrade_headers,
)
from tests.support.redis_topologies import FreezingProxy

HUGE = 18446744073709551615  # 2^64 - 1: the value


async def still_open(ws) -> None:
    await ws.send('{"event":"heartbeat"}')
    assert (await recv_event(ws, "heartbeat_ack"))["event"] == "heartbeat_ack"


# --- 1. one customer cannot stall every other's admission -----------------------------------------
async def test_out_of_range_last_seq_is_an_error_and_stalls_nobody(pod, keys, rasync):
    await publish(rasync, "ord_huge", 1)
    bad, good = await asyncio.gather(
        connect(pod, keys.token("greedy", "ord_huge"), "ord_huge", query=f"last_seq={HUGE}"),
        connect(pod, keys.token("bystander", "ord_calm"), "ord_calm"))
    # the bystander is admitted (it used to wait for 4002 with everyone else)
    assert (await recv_json(good))["event"] == "connection_ack"
    assert (await recv_json(bad))["data"]["seq"] == 1
    error = await recv_json(bad)
    assert error["event"] == "error" and error["data"]["code"] == "INVALID_MESSAGE"
    assert "last_seq" in error["data"]["message"]
    await still_open(bad)

    # the same in a `resume` message, sent before and after the ack
    early = await connect(pod, keys.token("greedy2", "ord_huge"), "ord_huge")
    await early.send(json.dumps({"event": "resume", "data": {"last_seq": HUGE}}))
    other = await connect(pod, keys.token("bystander2", "ord_calm"), "ord_calm")
    assert (await recv_json(other))["event"] == "connection_ack"
    assert (await recv_event(early, "error"))["data"]["code"] == "INVALID_MESSAGE"
    await bad.send(json.dumps({"event": "resume", "data": {"last_seq": 2**63}}))
    assert (await recv_event(bad, "error"))["data"]["code"] == "INVALID_MESSAGE"
    await publish(rasync, "ord_huge", 2)
    for ws in (bad, early):
        assert (await recv_event(ws, "tracking_update"))["data"]["seq"] == 2
        await still_open(ws)
    for ws in (bad, good, early, other):
        await ws.close()


async def test_an_order_with_unreadable_keys_fails_only_its_own_connection(pod, keys, rsync):
    rsync.set(redis_layout.state("ord_broken"), "not a hash")   # WRONGTYPE for HGETALL
    rsync.set(redis_layout.stream("ord_nohist"), "not a stream")  # WRONGTYPE for XRANGE
    broken, resumer, fine = await asyncio.gather(
        connect(pod, keys.token("b1", "ord_broken"), "ord_broken"),
        connect(pod, keys.token("b2", "ord_nohist"), "ord_nohist", query="last_seq=3"),
        connect(pod, keys.token("b3", "ord_fine"), "ord_fine"))
    assert (await recv_json(fine))["event"] == "connection_ack"
    assert await close_code(broken) == 4002
    assert (await recv_json(resumer))["event"] == "connection_ack"
    assert (await recv_json(resumer))["data"]["code"] == "RESUME_UNAVAILABLE"
    await still_open(resumer)
    await still_open(fine)
    await resumer.close()
    await fine.close()


async def test_a_connection_held_before_its_ack_past_the_pending_bytes_is_closed_1013(
        procs, tmp_path, keys, own_redis):
    """Updates held for a connection whose admission is stuck (the command Redis stalled while
    pub/sub flows) count against WS_MAX_PENDING_BYTES: past it the connection is closed 1013,
    so the client reconnects and resumes; the order's live watcher, and a connection held for
    another order, are unharmed."""
    proxy = FreezingProxy(own_redis.port)
    proxy.start()
    direct = aioredis.Redis.from_url(own_redis.url)  # the gateway's side: not through the proxy
    try:
        pod = await start_pod_async(procs, tmp_path, proxy.url, keys, ws_max_pending_bytes=16384)
        live = await connect(pod, keys.token("h_live", "ord_held"), "ord_held")
        assert (await recv_json(live))["event"] == "connection_ack"
        proxy.stall_commands()  # admission's round trip now hangs; the subscription does not
        held = await connect(pod, keys.token("h_held", "ord_held"), "ord_held")
        calm = await connect(pod, keys.token("h_calm", "ord_calm_h"), "ord_calm_h")
        for seq in range(1, 9):  # ~3 KB each: past 16 KB held at the 6th
            await publish(direct, "ord_held", seq, location="x" * 3000)
        assert await close_code(held, timeout=10) == 1013
        for seq in range(1, 9):
            assert (await recv_event(live, "tracking_update"))["data"]["seq"] == seq
        proxy.resume_commands()
        assert (await recv_json(calm, timeout=10))["event"] == "connection_ack"
        await publish(direct, "ord_held", 9)
        assert (await recv_event(live, "tracking_update"))["data"]["seq"] == 9
        await still_open(live)
        await still_open(calm)
        await wait_for_async(lambda: any(d["user_id"] == "h_held" for d in pod.disconnects()), 5,
                 what="the held connection's disconnect line")
        gone = [d for d in pod.disconnects() if d["user_id"] == "h_held"]
        assert [(d["reason"], d["code"]) for d in gone] == [("slow_consumer", 1013)]
        assert not [d for d in pod.disconnects() if d["user_id"] != "h_held"]
        await live.close()
        await calm.close()
    finally:
        await direct.aclose()
        proxy.stop()


# --- 2. pings and pongs ------------------------------------------------------------------------------
async def test_a_ping_flood_is_answered_once_per_batch_with_the_latest_payload(pod, keys):
    """What keeps a pod's memory flat under a ping flood (its RSS: bench/ping_flood.py)."""
    raw = await open_raw(pod, keys.token("batch", "ord_ping"), "ord_ping")
    assert (await raw.recv_json())["event"] == "connection_ack"
    raw.writer.write(b"".join(encode_frame(OP_PING, b"%03d" % i) for i in range(50)))
    await raw.writer.drain()
    await raw.send(OP_TEXT, b'{"event":"heartbeat"}')
    pongs = []
    while True:
        opcode, payload = await raw.recv()
        if opcode == OP_TEXT:
            assert json.loads(payload)["event"] == "heartbeat_ack"
            break
        assert opcode == OP_PONG
        pongs.append(payload)
    assert 1 <= len(pongs) < 50
    assert pongs[-1] == b"049"

    # a polite client's ping is answered with its own payload
    async with await connect(pod, keys.token("polite", "ord_ping"), "ord_ping") as ws:
        await recv_json(ws)
        await asyncio.wait_for(await ws.ping(b"hello"), 5)


# --- 3. a connection ends with its token ---------------------------------------------------------------
@pytest.mark.parametrize("interval", [30, 0.4])
async def test_the_connection_closes_with_1008_when_the_token_expires(
        procs, tmp_path, redis_url, keys, rasync, interval):
    pod = await start_pod_async(procs, tmp_path, redis_url, keys, heartbeat_interval_seconds=interval,
                    heartbeat_timeout_seconds=min(interval, 10))
    ws = await connect(pod, keys.token("brief", "ord_exp", ttl=2), "ord_exp")
    assert (await recv_json(ws))["event"] == "connection_ack"
    await publish(rasync, "ord_exp", 1)
    assert (await recv_event(ws, "tracking_update"))["data"]["seq"] == 1
    # well before the first ping would be due at 30 s (15-30 s with jitter)
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 8)
    except Exception as exc:  # noqa: BLE001 - ConnectionClosed carries the close frame
        assert exc.rcvd.code == 1008 and exc.rcvd.reason == "token_expired"
    await wait_for_async(lambda: [(d["reason"], d["code"]) for d in pod.disconnects()] == [("token_expired", 1008)],
             5)


# --- 4. bytes that are not ASCII in headers ------------------------------------------------------------
async def test_headers_that_are_not_ascii_get_the_contracts_json_answers(pod, keys):
    health = await RawWebSocket.open(pod, "/healthz", {"X-Request-ID": b"\xff"})
    assert health.status == 200 and health.json() == {"status": "ok"}
    assert health.headers["x-request-id"].startswith("req_")

    for credentials in ({"Authorization": b"Bearer \xff\xfe"},
                        {"Sec-WebSocket-Protocol": b"vantage-tracking-v1, bearer.\xff\xfe"}):
        headers = {**upgrade_headers(), **credentials, "X-Request-ID": b"caf\xe9"}
        refused = await RawWebSocket.open(pod, "/ws/orders/ord_1/track", headers)
        assert refused.status == 401
        assert refused.headers["content-type"] == "application/json; charset=utf-8"
        assert refused.json()["error"] == "UNAUTHORIZED"
        assert refused.headers["x-request-id"].startswith("req_")

    long_id = "r" * 500
    upgraded = await open_raw(pod, keys.token("hdr", "ord_1"), "ord_1", **{"X-Request-ID": long_id})
    assert upgraded.headers["x-request-id"].startswith("req_")
    assert (await upgraded.recv_json())["event"] == "connection_ack"
    kept = await RawWebSocket.open(pod, "/healthz", {"X-Request-ID": "req_fine-1"})
    assert kept.headers["x-request-id"] == "req_fine-1"
    lines = pod.log_lines()
    assert not any(line["level"] == "error" or "exc" in line for line in lines), lines
    assert "Traceback" not in pod.log.read_text()


# --- 5. one bad message on a channel kills nothing -----------------------------------------------------
@pytest.mark.parametrize("bad", [
    b'{"op":"evict","connection_id":["x"]}',
    b'{"op":"evict","connection_id":{"a":1}}',
    b'{"op":"evict"}',
    b'["op"]',
    b"\xff not json",
])
async def test_a_malformed_control_message_leaves_the_pod_subscribed(pod, keys, rasync, bad):
    async with await connect(pod, keys.token("ctl", "ord_ctl"), "ord_ctl") as ws:
        await recv_json(ws)
        await rasync.publish(redis_layout.CONTROL_ALL, bad)
        await publish(rasync, "ord_ctl", 1)
        assert (await recv_event(ws, "tracking_update"))["data"]["seq"] == 1
        async with httpx.AsyncClient(base_url=pod.base) as client:
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/healthz")).status_code == 200


async def test_a_seq_of_2_63_does_not_silence_the_order(pod, keys, rasync):
    def message(seq):  # straight onto the channel, as a buggy or hostile publisher would
        return redis_layout.encode_message("dhl", seq, "in_transit", None, "2025-10-03T14:00:00Z",
                                           None, None, time.time())

    await rasync.hset(redis_layout.state("ord_bigstate"), mapping={"status": "x", "seq": 2**63})
    big_state = await connect(pod, keys.token("big", ["ord_big", "ord_bigstate"]), "ord_bigstate")
    assert (await recv_json(big_state))["data"]["seq"] == 0
    big_message = await connect(pod, keys.token("big", ["ord_big", "ord_bigstate"]), "ord_big")
    await recv_json(big_message)
    await rasync.publish(redis_layout.channel("ord_big"), message(2**63))
    for seq in (1, 2):
        await rasync.publish(redis_layout.channel("ord_big"), message(seq))
        await rasync.publish(redis_layout.channel("ord_bigstate"), message(seq))
        assert (await recv_event(big_message, "tracking_update"))["data"]["seq"] == seq
        assert (await recv_event(big_state, "tracking_update"))["data"]["seq"] == seq
    await big_state.close()
    await big_message.close()


def test_healthz_fails_when_a_loop_the_pod_needs_has_died(redis_url, keys):
    """The loop's death is simulated by cancelling its task (the known causes are fixed):
    liveness must then fail, so Kubernetes restarts the pod."""
    port = free_port()
    cfg = config.load(SETTINGS, environ={
        "REDIS_URL": redis_url, "HOST": "127.0.0.1", "PORT": str(port), "METRICS_PORT": "0"})

    async def scenario():
        pod = Pod(cfg, auth.Verifier(keys.public_pem.decode()))
        server = await ws_create_server(pod.listener_factory(), "127.0.0.1", port)
        await pod.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.get("/healthz")).status_code == 200
                admission = next(t for t in asyncio.all_tasks()
                                 if t.get_name() == "admission")
                admission.cancel()
                await asyncio.wait([admission], timeout=5)
                response = await client.get("/healthz")
                assert response.status_code == 503
                assert response.json() == {"status": "unhealthy",
                                           "reason": "admission stopped"}
        finally:
            await pod.stop()
            server.close()

    uvloop.run(scenario())
