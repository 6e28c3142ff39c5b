"""Peer server 1: the `websockets` library on asyncio, ONE Redis SUBSCRIBE per connection.

The log's original design as a Python team would first write it: every WebSocket gets its own
redis.asyncio PubSub (so its own Redis connection) on `order:tracking:{order_id}`, and a task
that forwards each message. Frames, close handling and message parsing reuse the pod's pure
protocol functions, so the wire contract is the same; what differs is the architecture.

Auth is a shared secret: the client offers `vantage-tracking-v1, bearer.<secret>`.
`python -m bench.peers.websockets_peer --redis-url URL --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import signal
import sys

import orjson
import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from bench.peers import answer, offered_subprotocols, peer_arguments, refusal
from ordertrack import protocol, redis_layout
from ordertrack.http_edge.refusals import error_body

#: far above what one process's open files allow: the limit is the machine's, not the pool's
POOL_LIMIT = 1_000_000


def json_response(connection: ServerConnection, status: int, code: str, message: str) -> Response:
    """A refusal with our JSON body (respond() would make it text/plain)."""
    response = connection.respond(status, "")
    response.body = error_body(code, message)
    del response.headers["Content-Type"], response.headers["Content-Length"]
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    response.headers["Content-Length"] = str(len(response.body))
    return response


class Peer:
    def __init__(self, redis_url: str, secret: str):
        # Every connection's PubSub holds one Redis connection of its own, so the pool must not
        # cap them (redis-py's default pool holds 100 at most).
        self.redis = aioredis.Redis.from_url(redis_url, decode_responses=True,
                                             max_connections=POOL_LIMIT)
        self.secret = secret

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path, _ = protocol.split_target(request.path)
        if path == "/healthz":
            return connection.respond(200, "ok\n")
        if protocol.order_id_from_path(path) is None:
            return json_response(connection, 404, "NOT_FOUND", "no such path")
        offered = offered_subprotocols(request.headers.get_all("Sec-WebSocket-Protocol"))
        refused = refusal(offered, self.secret)
        return json_response(connection, *refused) if refused else None

    @staticmethod
    def select_subprotocol(connection: ServerConnection, subprotocols) -> str | None:
        return protocol.SUBPROTOCOL if protocol.SUBPROTOCOL in subprotocols else None

    async def handler(self, ws: ServerConnection) -> None:
        path, _ = protocol.split_target(ws.request.path)
        order_id = protocol.order_id_from_path(path)
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            # Subscribe before reading the state, so no update falls between the two.
            await pubsub.subscribe(redis_layout.channel(order_id))
            state = redis_layout.decode_state(await self.redis.hgetall(redis_layout.state(order_id)))
            connection_id = f"ws_conn_{secrets.token_hex(4)}"
            await ws.send(protocol.connection_ack(connection_id, order_id, state.carrier,
                                                  state.status, state.seq), text=True)
            forwarder = asyncio.create_task(self.forward(pubsub, ws))
            try:
                async for payload in ws:
                    await ws.send(answer(payload, isinstance(payload, str)), text=True)
            finally:
                forwarder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await forwarder
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    @staticmethod
    async def forward(pubsub, ws: ServerConnection) -> None:
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            try:
                frame = protocol.tracking_update(orjson.loads(message["data"]))
            except orjson.JSONDecodeError:
                continue
            await ws.send(frame, text=True)


async def main_async(args: argparse.Namespace) -> None:
    peer = Peer(args.redis_url, args.secret)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        peer.handler, args.host, args.port,
        process_request=peer.process_request, select_subprotocol=peer.select_subprotocol,
        ping_interval=args.ping_interval, ping_timeout=args.ping_timeout,
        compression=None, backlog=4096,
    ):
        print(json.dumps({"event": "listening", "peer": "websockets", "host": args.host,
                          "port": args.port}), flush=True)
        await stop
    await peer.redis.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = peer_arguments(__doc__.splitlines()[0])
    parser.add_argument("--ping-interval", type=float, default=30.0)
    parser.add_argument("--ping-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
