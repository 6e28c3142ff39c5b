"""Check every installed peer against a private redis-server: PASS/FAIL per peer.

For each peer: start it, refuse a wrong token (401), open a WebSocket with our subprotocols and
get `vantage-tracking-v1` back, receive `connection_ack` for the order, get `heartbeat_ack` for
a heartbeat and a pong for a ping, publish one update the way the peer is fed, and receive it
as a `tracking_update` with exactly the customer fields. `python -m bench.peers.check [names]`;
exit 1 when an installed peer fails (or, with --require-all, when one is not installed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
import redis
import websockets
from websockets.asyncio.client import connect

from bench.lib import bench_message, free_port, start_redis, stop_process
from bench.peers import PEERS, PeerSpec, nchan_body
from ordertrack import protocol, redis_layout

STEP_TIMEOUT_SECONDS = 5.0


async def _receive(ws, event: str) -> dict:
    """The next frame of kind `event` (a peer may send an extra ack first, see README.md)."""
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), STEP_TIMEOUT_SECONDS))
        if frame.get("event") == event:
            return frame
        if frame.get("event") != "connection_ack":
            raise AssertionError(f"expected {event}, got {frame}")


def publish(peer: PeerSpec, redis_url: str, order_id: str, body: bytes) -> None:
    if peer.publish_mode == "redis-publish":
        client = redis.Redis.from_url(redis_url)
        try:
            client.publish(redis_layout.channel(order_id), body)
        finally:
            client.close()
    else:
        response = httpx.post(peer.publish_url(order_id), content=nchan_body(body),
                              headers={"Content-Type": "application/json"}, timeout=5.0)
        if response.status_code >= 300:
            raise AssertionError(f"publisher answered {response.status_code}: {response.text}")


async def exercise(peer: PeerSpec, redis_url: str) -> None:
    order_id = f"check_{peer.name.replace('-', '_')}_{int(time.time())}"
    try:
        async with connect(peer.ws_url(order_id), subprotocols=peer.subprotocols("wrong")):
            raise AssertionError("a wrong token was accepted")
    except websockets.InvalidStatus as exc:
        if exc.response.status_code != 401:
            raise AssertionError(f"a wrong token got {exc.response.status_code}, not 401") from None

    async with connect(peer.ws_url(order_id), subprotocols=peer.subprotocols(),
                       open_timeout=STEP_TIMEOUT_SECONDS) as ws:
        if ws.subprotocol != protocol.SUBPROTOCOL:
            raise AssertionError(f"negotiated subprotocol {ws.subprotocol!r}")
        ack = await _receive(ws, "connection_ack")
        if ack["data"].get("order_id") != order_id or "seq" not in ack["data"]:
            raise AssertionError(f"bad connection_ack {ack}")
        await ws.send('{"event":"heartbeat"}')
        await _receive(ws, "heartbeat_ack")
        await asyncio.wait_for(await ws.ping(), STEP_TIMEOUT_SECONDS)
        sent_at = time.time()
        message = bench_message(7, sent_at)
        await asyncio.to_thread(publish, peer, redis_url, order_id, message)
        update = await _receive(ws, "tracking_update")
        expected = {f: orjson.loads(message)[f] for f in protocol.CLIENT_UPDATE_FIELDS}
        if update["data"] != expected:
            raise AssertionError(f"update {update['data']} != {expected}")


def check(peer: PeerSpec, redis_url: str, workdir: Path) -> tuple[bool, str]:
    try:
        proc = peer.start(redis_url, free_port(), workdir / peer.name)
    except RuntimeError as exc:
        return False, str(exc)
    try:
        asyncio.run(exercise(peer, redis_url))
        return True, "ack, heartbeat_ack, pong, update, 401 for a wrong token"
    except (AssertionError, OSError, TimeoutError, websockets.WebSocketException) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        stop_process(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"peers to check: {', '.join(PEERS)} (default: all)")
    parser.add_argument("--require-all", action="store_true",
                        help="a peer that is not installed counts as a failure")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(PEERS))
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(PEERS)}")
    failed = False
    with tempfile.TemporaryDirectory(prefix="ordertrack-peers-") as tmp:
        workdir = Path(tmp)
        redis_proc, redis_url = start_redis(workdir)
        try:
            for name in args.names or PEERS:
                peer = PEERS[name]
                if not peer.installed():
                    print(f"SKIP {name}: not installed: {peer.reason()}", flush=True)
                    failed |= args.require_all
                    continue
                ok, detail = check(peer, redis_url, workdir)
                print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
                failed |= not ok
        finally:
            stop_process(redis_proc)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
