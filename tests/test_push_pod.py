"""The push pod end to end: real `ordertrack serve` processes, real Redis, real WebSocket clients."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import jwt
import pytest
import redis.asyncio as aioredis
import websockets

from ordertrack import redis_layout
from ordertrack.gateway.publisher import Publisher
from ordertrack.models import StoredEvent
from tests.support import generate_keys, jwks_server, wait_for_async
from tests.support.pods import (
    OP_PONG,
    Heartbeats,
    close_code,
    connect,
    open_raw,
    publish,
    recv_event,
    recv_json,
    start_pod,
    start_pod_async,
    upgrade_headers,
    wait_registry_empty_async,
)

JSON_CT = "application/json; charset=utf-8"


# --- refusals -----------------------------------------------------------------------------------
def refused(pod, path, headers, status, code):
    response = httpx.get(pod.base + path, headers=headers, timeout=5)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == JSON_CT
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    return response


def test_refusals_carry_status_json_body_and_request_id(pod, keys, tmp_path):
    path = "/ws/orders/ord_1/track"
    missing = refused(pod, path, upgrade_headers(**{"X-Request-ID": "req_ws_track_002"}), 401, "UNAUTHORIZED")
    assert missing.headers["x-request-id"] == "req_ws_track_002"

    expired = keys.token("u1", "ord_1", ttl=-10)
    assert "expired" in refused(pod, path, upgrade_headers(expired), 401, "UNAUTHORIZED").json()["message"]

    other = generate_keys(tmp_path / "other").token("u1", "ord_1")
    refused(pod, path, upgrade_headers(other), 401, "UNAUTHORIZED")
    refused(pod, path, upgrade_headers("not.a.jwt"), 401, "UNAUTHORIZED")
    hs256 = jwt.encode({"sub": "u1", "order_id": "ord_1", "exp": time.time() + 60}, "x" * 32, "HS256")
    refused(pod, path, upgrade_headers(hs256), 401, "UNAUTHORIZED")
    no_exp = jwt.encode({"sub": "u1", "order_id": "ord_1"}, keys.private_pem, "RS256")
    refused(pod, path, upgrade_headers(no_exp), 401, "UNAUTHORIZED")

    good = keys.token("u1", "ord_1")
    # a token in the query string is refused even when it is valid
    refused(pod, path + f"?token={good}", upgrade_headers(), 401, "UNAUTHORIZED")

    forbidden = refused(pod, "/ws/orders/ord_other_user_order/track", upgrade_headers(good), 403, "FORBIDDEN")
    assert forbidden.json()["message"] == "You can only track orders you own"
    assert forbidden.headers["x-request-id"]

    refused(pod, "/ws/somewhere/else", upgrade_headers(good), 404, "NOT_FOUND")


def test_ack_carries_state_and_101_headers(pod, keys, rsync):
    rsync.hset(redis_layout.state("ord_1a2b"), mapping={
        "status": "in_transit", "carrier": "dhl", "seq": 7, "location": "Newark NJ",
        "timestamp": "2025-10-03T14:02:00Z", "estimated_delivery": "2025-10-04T18:00:00Z"})

    async def scenario():
        ws = await websockets.connect(
            pod.url("ord_1a2b"), subprotocols=["vantage-tracking-v1"],
            additional_headers={"Authorization": f"Bearer {keys.token('u1', 'ord_1a2b')}",
                                "X-Request-ID": "req_ws_track_001"})
        async with ws:
            headers = ws.response.headers
            assert ws.subprotocol == "vantage-tracking-v1"
            assert headers["x-request-id"] == "req_ws_track_001"
            assert headers["x-ws-connection-id"].startswith("ws_conn_")
            assert len(headers["x-ws-connection-id"]) == len("ws_conn_") + 8
            ack = await recv_json(ws)
            assert ack == {"event": "connection_ack", "data": {
                "connection_id": headers["x-ws-connection-id"], "order_id": "ord_1a2b",
                "carrier": "dhl", "current_status": "in_transit", "seq": 7}}

    asyncio.run(scenario())


async def test_browser_style_bearer_subprotocol_and_es256(pod, keys):
    ws = await connect(pod, keys.token("u2", "ord_b", alg="ES256"), "ord_b", via_subprotocol=True)
    async with ws:
        assert ws.subprotocol == "vantage-tracking-v1"
        assert (await recv_json(ws))["event"] == "connection_ack"


async def test_order_ids_claim_allows_each_listed_order(pod, keys):
    token = keys.token("u3", ["ord_x", "ord_y"])
    for order in ("ord_x", "ord_y"):
        async with await connect(pod, token, order) as ws:
            assert (await recv_json(ws))["data"]["order_id"] == order


# --- fan-out ------------------------------------------------------------------------------------
async def test_update_reaches_every_watcher_of_its_order_and_no_other(pod, keys, rasync):
    watchers = [await connect(pod, keys.token(f"w{i}", "ord_fan"), "ord_fan") for i in range(3)]
    bystander = await connect(pod, keys.token("b", "ord_quiet"), "ord_quiet")
    for ws in [*watchers, bystander]:
        assert (await recv_json(ws))["event"] == "connection_ack"

    await publish(rasync, "ord_fan", 1, status="out_for_delivery", location="Local Delivery Vehicle, Brooklyn NY")
    for ws in watchers:
        update = await recv_json(ws)
        assert update == {"event": "tracking_update", "data": {
            "status": "out_for_delivery", "location": "Local Delivery Vehicle, Brooklyn NY",
            "timestamp": "2025-10-03T14:01:00Z", "estimated_delivery": "2025-10-04T18:00:00Z",
            "carrier": "dhl", "seq": 1}}
        assert "raw_carrier_response" not in update["data"]

    await bystander.send('{"event":"heartbeat"}')
    # the bystander's next frame is its heartbeat_ack: the other order's update never came
    assert (await recv_json(bystander))["event"] == "heartbeat_ack"
    for ws in [*watchers, bystander]:
        await ws.close()


# --- client messages ----------------------------------------------------------------------------
async def test_client_messages_heartbeat_garbage_binary_and_oversize(pod, keys):
    token = keys.token("u4", "ord_msg")
    async with await connect(pod, token, "ord_msg") as ws:
        await recv_json(ws)
        await ws.send('{"event":"heartbeat"}')
        assert await recv_json(ws) == {"event": "heartbeat_ack", "data": {}}
        await ws.send("not json at all")
        error = await recv_json(ws)
        assert error["event"] == "error" and error["data"]["code"] == "INVALID_JSON"
        await ws.send('{"event":"subscribe_everything"}')
        assert (await recv_json(ws))["data"]["code"] == "UNKNOWN_EVENT"
        await ws.send(b"\x00\x01binary")
        assert await close_code(ws) == 1003

    async with await connect(pod, token, "ord_msg") as ws:
        await recv_json(ws)
        await ws.send('{"event":"heartbeat","pad":"' + "x" * 5000 + '"}')
        assert await close_code(ws) == 1009
    await wait_for_async(lambda: {d["reason"] for d in pod.disconnects()} >= {"unsupported_data"}, 5)


# --- per-user limit across pods -----------------------------------------------------------------
async def test_sixth_connection_across_two_pods_closes_the_oldest_with_4001(
        procs, tmp_path, redis_url, keys, rsync):
    pod_a = await start_pod_async(procs, tmp_path, redis_url, keys, name="pod-a")
    pod_b = await start_pod_async(procs, tmp_path, redis_url, keys, name="pod-b")
    token = keys.token("shopper", "ord_limit")
    conns = []
    for i in range(5):
        ws = await connect(pod_a if i % 2 == 0 else pod_b, token, "ord_limit")
        conns.append((ws, (await recv_json(ws))["data"]["connection_id"]))
        # distinct open times, so "oldest" is well defined: the clock (ms) has moved past this one
        await wait_for_async(lambda: time.time() * 1000 > max(
            score for _, score in rsync.zrange(redis_layout.user("shopper"), 0, -1, withscores=True)),
            5, interval=0.001, what="the next millisecond")
    assert rsync.zcard(redis_layout.user("shopper")) == 5

    sixth = await connect(pod_b, token, "ord_limit")
    await recv_json(sixth)
    oldest, _ = conns[0]  # on pod A: the eviction crossed pods
    assert await close_code(oldest) == 4001
    for ws, _ in conns[1:]:
        await ws.send('{"event":"heartbeat"}')
        assert (await recv_event(ws, "heartbeat_ack"))["event"] == "heartbeat_ack"
    assert rsync.zcard(redis_layout.user("shopper")) == 5
    await wait_for_async(lambda: any(d["reason"] == "connection_limit" for d in pod_a.disconnects()), 5)

    for ws, _ in conns[1:]:
        await ws.close()
    await sixth.close()
    await wait_registry_empty_async(rsync, "shopper")


async def test_a_dead_pod_leaves_no_slots_behind(procs, tmp_path, redis_url, keys, rsync):
    lease = {"pod_lease_seconds": 1}
    survivor = await start_pod_async(procs, tmp_path, redis_url, keys, name="survivor", **lease)
    doomed = await start_pod_async(procs, tmp_path, redis_url, keys, name="doomed", **lease)
    token = keys.token("u5", "ord_dead")
    # the user's oldest connection is on the survivor, four newer ones on the doomed pod
    first = await connect(survivor, token, "ord_dead")
    await recv_json(first)
    conns = [await connect(doomed, token, "ord_dead") for _ in range(4)]
    for ws in conns:
        await recv_json(ws)
    doomed.proc.kill()
    doomed.proc.wait()

    def doomed_lease_over():
        leases = rsync.zrange(redis_layout.PODS_KEY, 0, -1, withscores=True)
        return all(score < time.time() * 1000 for pod_id, score in leases
                   if pod_id.startswith(b"doomed"))
    await wait_for_async(doomed_lease_over, 5, what="the doomed pod's lease over")
    # its four clients reconnect to the survivor: none of the five live ones is evicted on
    # behalf of the dead pod's ghosts (the oldest, on the survivor, would be first)
    fresh = [await connect(survivor, token, "ord_dead") for _ in range(4)]
    for ws in fresh:
        assert (await recv_json(ws))["event"] == "connection_ack"
    await first.send('{"event":"heartbeat"}')
    assert (await recv_event(first, "heartbeat_ack"))["event"] == "heartbeat_ack"
    members = [m.decode() for m in rsync.zrange(redis_layout.user("u5"), 0, -1)]
    assert len(members) == 5 and all(m.startswith("survivor") for m in members)
    assert not any(d["reason"] == "connection_limit" for d in survivor.disconnects())
    for ws in [first, *fresh]:
        await ws.close()


# --- heartbeat ------------------------------------------------------------------------------------
async def test_only_the_answer_to_the_pods_ping_keeps_a_client_open(procs, tmp_path, redis_url,
                                                                    keys):
    """A phone gone to sleep (answers nothing) and a client that sends pongs of its own accord
    (never the answer to our ping) are both closed with 4000; a client that answers stays."""
    pod = await start_pod_async(procs, tmp_path, redis_url, keys,
                                heartbeat_interval_seconds=0.3, heartbeat_timeout_seconds=0.8)
    beats = {}
    for user in ("silent", "deaf", "lively"):
        beats[user] = Heartbeats(await open_raw(pod, keys.token(user, "ord_hb"), "ord_hb"))
        assert (await beats[user].text())["event"] == "connection_ack"
    silent, deaf, lively = beats.values()

    async def unsolicited_pongs():
        while True:
            await deaf.raw.send(OP_PONG, b"")
            await asyncio.sleep(0.1)  # pacing of the pongs, not a wait for anything

    silent.stop_answering()
    deaf.stop_answering()
    sender = asyncio.ensure_future(unsolicited_pongs())
    try:
        await silent.unanswered_ping()
        await deaf.unanswered_ping()
        assert await silent.close_code() == 4000
        assert await deaf.close_code() == 4000
        # the lively one answered pings sent after both deadlines passed, and is still open
        answered = lively.answered
        await wait_for_async(lambda: lively.answered >= answered + 2, 10, what="two more pings")
        assert await lively.still_open()
    finally:
        sender.cancel()
        for each in beats.values():
            each.stop()
    await wait_for_async(lambda: sorted(d["user_id"] for d in pod.disconnects()
                                        if d["reason"] == "heartbeat_timeout")
                         == ["deaf", "silent"], 10, what="two heartbeat timeouts logged")


# --- Redis failures -------------------------------------------------------------------------------
async def test_new_connection_closed_4002_while_redis_is_down(procs, tmp_path, own_redis, keys):
    pod = await start_pod_async(procs, tmp_path, own_redis.url, keys, redis_subscribe_timeout_seconds=0.5)
    own_redis.stop()
    await wait_for_async(lambda: httpx.get(pod.base + "/readyz").status_code == 503, 5, what="readyz 503")
    ws = await connect(pod, keys.token("u8", "ord_down"), "ord_down")
    assert await close_code(ws) == 4002
    await wait_for_async(lambda: any(d["reason"] == "internal_error" for d in pod.disconnects()), 5)
    own_redis.start()
    await wait_for_async(lambda: httpx.get(pod.base + "/readyz").status_code == 200, 10, what="readyz 200")
    async with await connect(pod, keys.token("u8", "ord_down"), "ord_down") as again:
        assert (await recv_json(again))["event"] == "connection_ack"


async def test_redis_restart_mid_stream_loses_no_update(procs, tmp_path, own_redis, keys):
    pod = await start_pod_async(procs, tmp_path, own_redis.url, keys)
    ws = await connect(pod, keys.token("u9", "ord_restart"), "ord_restart")
    await recv_json(ws)
    client = aioredis.Redis.from_url(own_redis.url)
    await publish(client, "ord_restart", 1)
    assert (await recv_event(ws, "tracking_update"))["data"]["seq"] == 1
    await client.aclose()

    own_redis.stop()
    own_redis.start()  # restarts empty, as a failed-over Redis without persistence would
    client = aioredis.Redis.from_url(own_redis.url)
    # the gateway goes on publishing while the pod is still reconnecting
    for seq in (2, 3, 4):
        await publish(client, "ord_restart", seq)
    seqs = []
    while len(seqs) < 3:
        seqs.append((await recv_event(ws, "tracking_update", timeout=10))["data"]["seq"])
    assert seqs == [2, 3, 4]
    await publish(client, "ord_restart", 5)
    assert (await recv_event(ws, "tracking_update"))["data"]["seq"] == 5
    # the pod put its connection back in the (now empty) user registry
    assert await client.zcard(redis_layout.user("u9")) == 1
    await ws.close()
    await client.aclose()


# --- resume ---------------------------------------------------------------------------------------
async def test_resume_replays_missed_events_in_order_then_live(pod, keys, rasync):
    for seq in (1, 2, 3, 4):
        await publish(rasync, "ord_resume", seq)
    token = keys.token("u10", "ord_resume")
    async with await connect(pod, token, "ord_resume", query="last_seq=2") as ws:
        assert (await recv_json(ws))["data"]["seq"] == 4
        assert [(await recv_json(ws))["data"]["seq"] for _ in range(2)] == [3, 4]
        await publish(rasync, "ord_resume", 5)
        assert (await recv_json(ws))["data"]["seq"] == 5

    async with await connect(pod, token, "ord_resume") as ws:
        assert (await recv_json(ws))["data"]["seq"] == 5
        await ws.send('{"event":"resume","data":{"last_seq":3}}')
        assert [(await recv_json(ws))["data"]["seq"] for _ in range(2)] == [4, 5]


async def test_resume_from_trimmed_history_says_so(pod, keys, rasync):
    for seq in (5, 6):
        await publish(rasync, "ord_trim", seq)
    async with await connect(pod, keys.token("u11", "ord_trim"), "ord_trim", query="last_seq=1") as ws:
        await recv_json(ws)
        error = await recv_json(ws)
        assert error["event"] == "error" and error["data"]["code"] == "RESUME_UNAVAILABLE"


# --- capacity, kill switch, origin ------------------------------------------------------------------
async def test_pod_at_capacity_answers_503_with_retry_after(procs, tmp_path, redis_url, keys):
    pod = await start_pod_async(procs, tmp_path, redis_url, keys, max_connections_per_pod=2)
    held = [await connect(pod, keys.token(f"c{i}", "ord_cap"), "ord_cap") for i in range(2)]
    response = refused(pod, "/ws/orders/ord_cap/track", upgrade_headers(keys.token("c3", "ord_cap")),
                       503, "POD_AT_CAPACITY")
    assert int(response.headers["retry-after"]) > 0
    for ws in held:
        await ws.close()


async def test_kill_switch_closes_with_4003_and_refuses_new_upgrades(pod, keys, redis_url):
    ws = await connect(pod, keys.token("u12", "ord_kill"), "ord_kill")
    await recv_json(ws)
    from ordertrack.cli import main as cli

    assert await asyncio.to_thread(cli, ["flag", "--redis-url", redis_url, "--enabled", "false"]) == 0
    assert await close_code(ws) == 4003
    refused(pod, "/ws/orders/ord_kill/track", upgrade_headers(keys.token("u12", "ord_kill")),
            503, "FEATURE_DISABLED")
    assert await asyncio.to_thread(cli, ["flag", "--redis-url", redis_url, "--enabled", "true"]) == 0
    await wait_for_async(lambda: httpx.get(pod.base + "/ws/orders/ord_kill/track",
                               headers=upgrade_headers(keys.token("u12", "ord_kill"))).status_code != 503, 10)


async def test_allowed_origins(procs, tmp_path, redis_url, keys):
    pod = await start_pod_async(procs, tmp_path, redis_url, keys, allowed_origins="https://www.vantage.com")
    token = keys.token("u13", "ord_o")
    refused(pod, "/ws/orders/ord_o/track", upgrade_headers(token, Origin="https://evil.example"),
            403, "FORBIDDEN")
    ws = await connect(pod, token, "ord_o", origin="https://www.vantage.com")
    async with ws:
        assert (await recv_json(ws))["event"] == "connection_ack"


# --- slow consumer ---------------------------------------------------------------------------------
async def test_client_that_stops_reading_is_cut_off_not_buffered(procs, tmp_path, redis_url, keys,
                                                                 rasync, rsync):
    pod = await start_pod_async(procs, tmp_path, redis_url, keys, ws_max_pending_bytes=65536,
                    heartbeat_timeout_seconds=0.5)
    token = keys.token("u14", "ord_slow")
    # a raw socket with a tiny receive buffer that completes the handshake and then reads nothing
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", pod.port))
    request = "GET /ws/orders/ord_slow/track HTTP/1.1\r\nHost: x\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in upgrade_headers(token).items()) + "\r\n"
    sock.sendall(request.encode())
    # admitted (registered, watching the order) before anything is published
    await wait_for_async(lambda: rsync.zcard(redis_layout.user("u14")) == 1, 10, what="admitted")
    big = "x" * 60000
    # ~12 MB: more than the kernel's socket buffers hold, so the pod's own buffer must fill
    for seq in range(1, 200):
        await Publisher(rasync).publish("ord_slow", "dhl",
            StoredEvent("ord_slow", seq, "in_transit", big, "2025-10-03T14:00:00Z", None))
    await wait_for_async(lambda: any(d["reason"] == "slow_consumer" for d in pod.disconnects()), 15,
             what="slow consumer closed")
    sock.close()


# --- drain and cleanup -----------------------------------------------------------------------------
async def test_sigterm_drains_with_1001_and_leaves_registry_empty(procs, tmp_path, redis_url, keys, rsync):
    pod = await start_pod_async(procs, tmp_path, redis_url, keys, drain_seconds=0.5)
    conns = [await connect(pod, keys.token(f"d{i}", "ord_drain"), "ord_drain") for i in range(6)]
    for ws in conns:
        await recv_json(ws)
    assert sum(rsync.zcard(redis_layout.user(f"d{i}")) for i in range(6)) == 6
    pod.proc.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*(close_code(ws) for ws in conns))
    assert codes == [1001] * 6
    assert await asyncio.to_thread(pod.proc.wait, 10) == 0
    reasons = [d["reason"] for d in pod.disconnects()]
    assert reasons.count("server_shutdown") == 6
    assert all(rsync.zcard(redis_layout.user(f"d{i}")) == 0 for i in range(6))
    # its lease is over at once: slots it could not release would count no more
    assert [score for _, score in rsync.zrange(redis_layout.PODS_KEY, 0, -1, withscores=True)] == [0]


async def test_cleanup_runs_once_per_connection_and_empties_the_registry(pod, keys, rsync):
    users = [f"e{i}" for i in range(4)]
    conns = [await connect(pod, keys.token(u, "ord_clean"), "ord_clean") for u in users]
    for ws in conns:
        await recv_json(ws)
    await conns[0].close()                      # client close
    conns[1].transport.abort()                  # network drop, no close frame
    await conns[2].send(b"\x01")                # server close (1003)
    await close_code(conns[2])
    await conns[3].close()
    for user in users:
        await wait_registry_empty_async(rsync, user)
    await wait_for_async(lambda: len(pod.disconnects()) == 4, 5)
    lines = pod.disconnects()
    assert sorted(d["connection_id"] for d in lines) == sorted(set(d["connection_id"] for d in lines))
    assert {d["reason"] for d in lines} == {"client_close", "connection_lost", "unsupported_data"}
    for line in lines:
        assert set(line) >= {"connection_id", "user_id", "order_id", "reason", "duration_s"}


# --- configuration ----------------------------------------------------------------------------------
@pytest.mark.parametrize("env", [
    {"HEARTBEAT_INTERVAL_SECONDS": "soon"},
    {"MAX_CONNECTIONS_PER_POD": "-1"},
    {"PORT": "99999"},
    {"REDIS_URL": "localhost:6379"},
    {"LOG_LEVEL": "LOUD"},
    {"JWT_JWKS_URL": "notaurl"},
])
def test_bad_setting_stops_startup_with_one_line_and_exit_2(procs, tmp_path, keys, env):
    full = {"JWT_PUBLIC_KEY": str(keys.public_path), **env}
    result = subprocess.run([sys.executable, "-m", "ordertrack", "serve"], capture_output=True,
                            text=True, env={**os.environ, **full}, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and next(iter(env)) in lines[0]


# --- JWKS -------------------------------------------------------------------------------------------
async def test_jwks_keys_are_chosen_by_kid(procs, tmp_path, redis_url, keys):
    """Keys come from JWT_JWKS_URL (fetched in the background), selected by `kid`."""
    with jwks_server(keys.public_pem, "key-2026") as url:
        pod = await start_pod_async(procs, tmp_path, redis_url, keys, jwt_public_key="", jwt_jwks_url=url)
        with_kid = jwt.encode({"sub": "u20", "order_id": "ord_jwks", "exp": time.time() + 60},
                              keys.private_pem, "RS256", headers={"kid": "key-2026"})
        async with await connect(pod, with_kid, "ord_jwks") as ws:
            assert (await recv_json(ws))["event"] == "connection_ack"
        unknown_kid = jwt.encode({"sub": "u20", "order_id": "ord_jwks", "exp": time.time() + 60},
                                 keys.private_pem, "RS256", headers={"kid": "retired"})
        refused(pod, "/ws/orders/ord_jwks/track", upgrade_headers(unknown_kid), 401, "UNAUTHORIZED")


async def test_resume_sent_right_after_open_is_honoured(pod, keys, rasync):
    """Browsers send `resume` as soon as the socket opens, often before the ack is out."""
    for seq in (1, 2, 3):
        await publish(rasync, "ord_early", seq)
    token = keys.token("u21", "ord_early")
    for _ in range(5):
        ws = await connect(pod, token, "ord_early")
        await ws.send('{"event":"resume","data":{"last_seq":1}}')
        async with ws:
            assert (await recv_json(ws))["event"] == "connection_ack"
            assert [(await recv_json(ws))["data"]["seq"] for _ in range(2)] == [2, 3]
            await ws.send('{"event":"heartbeat"}')
            assert (await recv_json(ws))["event"] == "heartbeat_ack"


async def test_sigterm_while_redis_is_down_still_exits(procs, tmp_path, own_redis, keys):
    pod = await start_pod_async(procs, tmp_path, own_redis.url, keys, drain_seconds=0.2)
    ws = await connect(pod, keys.token("u22", "ord_gone"), "ord_gone")
    await recv_json(ws)
    own_redis.stop()
    pod.proc.send_signal(signal.SIGTERM)
    assert await close_code(ws) == 1001
    assert await asyncio.to_thread(pod.proc.wait, 20) == 0


def test_busy_port_stops_startup_with_one_line_and_exit_2(keys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "JWT_PUBLIC_KEY": str(keys.public_path), "HOST": "127.0.0.1",
               "PORT": str(port), "METRICS_PORT": "0", "REDIS_URL": "redis://127.0.0.1:1/0"}
        result = subprocess.run([sys.executable, "-m", "ordertrack", "serve"], capture_output=True,
                                text=True, env=env, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [next(
        line for line in result.stderr.splitlines() if f"PORT {port}" in line)]


def test_plain_get_on_the_websocket_path_is_a_json_426(pod, keys):
    response = httpx.get(pod.url("ord_1").replace("ws://", "http://"),
                         headers={"Authorization": f"Bearer {keys.token('u1', 'ord_1')}",
                                  "X-Request-ID": "req_plain"})
    assert response.status_code == 426
    assert response.headers["content-type"] == JSON_CT
    assert response.headers["x-request-id"] == "req_plain"
    assert response.json()["error"] == "UPGRADE_REQUIRED"


async def test_active_connections_gauge_reaches_the_datadog_agent(procs, tmp_path, redis_url, keys,
                                                                  rasync):
    """The log's `vantage.ws.order_tracking.active_connections`, tagged pod/region/carrier: a
    connection counts under its order's carrier once acked (`unknown` for an order with no state
    yet), and leaves the count when it closes."""
    await rasync.hset(redis_layout.state("ord_dd_dhl"), mapping={
        "status": "in_transit", "carrier": "dhl", "seq": 1, "timestamp": "2025-10-03T14:02:00Z"})
    agent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    agent.bind(("127.0.0.1", 0))
    agent.settimeout(5)
    pod = await start_pod_async(procs, tmp_path, redis_url, keys, name="dd-pod", region="us-east-1",
                    datadog_agent_host="127.0.0.1", datadog_agent_port=agent.getsockname()[1],
                    datadog_interval_seconds=0.2)
    orders = ["ord_dd_dhl", "ord_dd_dhl", "ord_dd_new"]
    conns = [await connect(pod, keys.token(f"dd{i}", order), order) for i, order in enumerate(orders)]
    for ws in conns:
        await recv_json(ws)

    def gauges_reach(expected: dict[str, int]) -> dict[str, int]:
        """Read the agent's packets until the latest value per carrier is `expected`."""
        latest: dict[str, int] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and latest != expected:
            try:
                packet = agent.recv(4096).decode()
            except TimeoutError:
                break
            for line in packet.splitlines():
                if line.startswith("vantage.ws.order_tracking.active_connections:"):
                    assert "pod:dd-pod" in line and "region:us-east-1" in line and "|g" in line
                    carrier = line.split("carrier:")[1].split(",")[0]
                    latest[carrier] = int(float(line.split(":")[1].split("|")[0]))
        return latest

    every = {"ups": 0, "fedex": 0, "dhl": 0, "unknown": 0}
    assert await asyncio.to_thread(gauges_reach, {**every, "dhl": 2, "unknown": 1}) == \
        {**every, "dhl": 2, "unknown": 1}
    await conns[0].close()
    assert await asyncio.to_thread(gauges_reach, {**every, "dhl": 1, "unknown": 1}) == \
        {**every, "dhl": 1, "unknown": 1}
    for ws in conns[1:]:
        await ws.close()
    assert await asyncio.to_thread(gauges_reach, every) == every
    agent.close()


@pytest.mark.parametrize("pure", ["0", "1"])
def test_the_pod_says_which_hot_path_it_runs_and_the_variable_picks_the_twins(
        procs, tmp_path, redis_url, keys, pure):
    pod = start_pod(procs, tmp_path, redis_url, keys, ordertrack_pure_python=pure)
    said = next(line for line in pod.log_lines() if line.get("msg") == "hot path")
    expected = "python" if pure == "1" else "cython"
    assert {said[k] for k in ("pubsub_reader", "fanout", "wheel", "connection")} == {expected}
