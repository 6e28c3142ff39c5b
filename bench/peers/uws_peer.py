"""Peer server 4: uWebSockets (C++, through socketify's bundled build), ONE PSUBSCRIBE per process.

The fastest WebSocket server one can run from Python here: the sockets, the upgrade, framing,
pings and the fan-out live in uWebSockets (C++); Python only sees the upgrade decision, the
ack and each Redis message once. Every order is a uWS topic: a message on
`order:tracking:{order_id}` is shaped once (`protocol.tracking_update`) and handed to
`app.publish(order_id, frame)`, which writes it to every subscribed socket in C++. A socket
subscribes to its order's topic only once its `connection_ack` is out; updates that arrive
before (between the upgrade and the state read) are held for it and sent after the ack, in
order (as the Node peer does), so no client sees an update before its ack.

The loops: socketify drives uWS's libuv loop by polling it from asyncio (`call_soon` while
busy, every 10 ms once idle), which would put up to 10 ms on every delivery and spin a core.
Here uvloop runs asyncio (the Redis subscription and state reads) and watches the libuv loop's
own epoll descriptor (`uv_backend_fd`): when a uWS socket is ready, the libuv loop runs one
non-blocking round; so does it after each batch of Redis messages (uWS sends a topic's
messages when its loop drains them) and every 0.5 s (uWS's own timers: timeouts, pings).

Auth is a shared secret: the client offers `vantage-tracking-v1, bearer.<secret>`.
`python -m bench.peers.uws_peer --redis-url URL --port N`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import ctypes.util
import json
import os
import secrets
import signal
import sys
from urllib.parse import urlsplit

import hiredis
import orjson

from bench.peers import answer, offered_subprotocols, peer_arguments, refusal
from ordertrack import protocol, redis_layout
from ordertrack.http_edge.refusals import error_body

#: uWS closes a socket that neither sent nor got anything for this long, pinging it before
#: (sendPingsAutomatically); a multiple of 4 s, its timer's resolution. The other peers ping
#: every 30 s.
IDLE_TIMEOUT_SECONDS = 32
#: how often the libuv loop runs for its timers when no socket is ready
TIMER_ROUND_SECONDS = 0.5
CHANNEL_PREFIX = redis_layout.channel("")


class Conn:
    """One WebSocket's state (uWS user data): its order, its held updates until the ack."""

    __slots__ = ("order_id", "ws", "held", "closed")

    def __init__(self, order_id: str):
        self.order_id = order_id
        self.ws = None
        self.held: list[bytes] | None = []
        self.closed = False


class Subscription(asyncio.Protocol):
    """The process's one `PSUBSCRIBE order:tracking:*` connection, parsed by hiredis."""

    def __init__(self, on_message, on_batch_end):
        self.reader = hiredis.Reader()
        self.on_message = on_message
        self.on_batch_end = on_batch_end
        self.subscribed = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        pattern = redis_layout.CHANNEL_PATTERN.encode()
        transport.write(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(pattern), pattern))

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if reply[0] == b"pmessage":
                self.on_message(reply[2], reply[3])
            elif reply[0] == b"psubscribe" and not self.subscribed.done():
                self.subscribed.set_result(True)
        self.on_batch_end()

    def connection_lost(self, exc) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)


class Commands(asyncio.Protocol):
    """One Redis connection for every state read, pipelined: HGETALLs go out as they come and
    their replies are matched in order (a pool would open a connection per concurrent read)."""

    def __init__(self):
        self.reader = hiredis.Reader()
        self.transport = None
        self.waiting: collections.deque[asyncio.Future] = collections.deque()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def hgetall(self, key: str) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self.transport is None or self.transport.is_closing():
            future.set_exception(ConnectionError("redis command connection closed"))
            return future
        raw = key.encode()
        self.transport.write(b"*2\r\n$7\r\nHGETALL\r\n$%d\r\n%s\r\n" % (len(raw), raw))
        self.waiting.append(future)
        return future

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            future = self.waiting.popleft()
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(reply)
            else:
                future.set_result(dict(zip(reply[::2], reply[1::2], strict=True)))

    def connection_lost(self, exc) -> None:
        self.transport = None
        while self.waiting:
            self.waiting.popleft().set_exception(ConnectionError(f"redis connection lost: {exc}"))


class UwsPeer:
    def __init__(self, redis_url: str, secret: str):
        from socketify import App, CompressOptions, OpCode

        self.redis_url = redis_url
        self.secret = secret
        self.text = OpCode.TEXT
        self.app = App()
        self.loop = asyncio.get_running_loop()
        self.loop.set_task_factory(None)  # socketify's own task factory is for its polling
        self.uv = self.app.loop.uv_loop
        self.commands: Commands | None = None
        #: order_id -> connections waiting for their ack (their updates are held)
        self.pending: dict[str, list[Conn]] = {}
        self.app.get("/healthz", lambda res, req: res.end("ok\n"))
        self.app.any("/*", lambda res, req: self._refuse(res, 404, "NOT_FOUND", "no such path"))
        self.app.ws("/ws/orders/:order_id/track", {
            "compression": CompressOptions.DISABLED,
            "max_payload_length": 4096,
            "idle_timeout": IDLE_TIMEOUT_SECONDS,
            "send_pings_automatically": True,
            "upgrade": self._upgrade,
            "open": self._open,
            "message": self._message,
            "close": self._close,
        })

    # --- uWS handlers ------------------------------------------------------------------------
    def _refuse(self, res, status: int, code: str, message: str) -> None:
        res.write_status(status)
        res.write_header("Content-Type", "application/json; charset=utf-8")
        res.end(error_body(code, message))

    def _upgrade(self, res, req, socket_context) -> None:
        order_id = req.get_parameter(0)
        if not order_id or protocol.order_id_from_path(f"/ws/orders/{order_id}/track") is None:
            self._refuse(res, 404, "NOT_FOUND", "no such path")
            return
        refused = refusal(offered_subprotocols([req.get_header("sec-websocket-protocol") or ""]),
                          self.secret)
        if refused:
            self._refuse(res, *refused)
            return
        res.upgrade(req.get_header("sec-websocket-key"), protocol.SUBPROTOCOL, "",
                    socket_context, Conn(order_id))

    def _open(self, ws) -> None:
        conn: Conn = ws.get_user_data()
        conn.ws = ws
        self.pending.setdefault(conn.order_id, []).append(conn)
        future = self.commands.hgetall(redis_layout.state(conn.order_id))
        future.add_done_callback(lambda f: self._acknowledge(conn, f))

    def _acknowledge(self, conn: Conn, future: asyncio.Future) -> None:
        waiting = self.pending.get(conn.order_id)
        if waiting is not None:
            waiting.remove(conn)
            if not waiting:
                del self.pending[conn.order_id]
        held, conn.held = conn.held, None
        if conn.closed:
            return
        if future.exception() is not None:
            conn.ws.end(1011, "internal_error")
            self.uv.run_nowait()
            return
        state = redis_layout.decode_state(future.result())
        ack = protocol.connection_ack(f"ws_conn_{secrets.token_hex(4)}", conn.order_id,
                                      state.carrier, state.status, state.seq)
        ws = conn.ws
        ws.send(ack, self.text)
        for frame in held or ():
            ws.send(frame, self.text)
        ws.subscribe(conn.order_id)
        self.uv.run_nowait()

    def _message(self, ws, message, opcode) -> None:
        ws.send(answer(message, opcode == self.text), self.text)

    def _close(self, ws, code, message) -> None:
        conn: Conn = ws.get_user_data()
        if conn is not None:
            conn.closed = True

    # --- Redis ---------------------------------------------------------------------------------
    def _on_redis_message(self, channel: bytes, payload: bytes) -> None:
        order_id = channel[len(CHANNEL_PREFIX):].decode()
        waiting = self.pending.get(order_id)
        if not waiting and not self.app.num_subscribers(order_id):
            return
        try:
            frame = protocol.tracking_update(orjson.loads(payload))
        except (orjson.JSONDecodeError, TypeError, AttributeError):
            return
        for conn in waiting or ():
            conn.held.append(frame)
        self.app.publish(order_id, frame, self.text)

    async def subscribe(self) -> Subscription:
        """The subscription (returned) and the command connection, both up."""
        url = urlsplit(self.redis_url)
        host, port = url.hostname or "127.0.0.1", url.port or 6379
        _, self.commands = await self.loop.create_connection(Commands, host, port)
        _, sub = await self.loop.create_connection(
            lambda: Subscription(self._on_redis_message, self.uv.run_nowait), host, port)
        await asyncio.wait_for(sub.subscribed, 5.0)
        return sub

    # --- the two loops -------------------------------------------------------------------------
    def attach(self) -> None:
        """Run the libuv loop's round whenever one of its sockets is ready, and for its timers."""
        libuv = ctypes.CDLL(ctypes.util.find_library("uv") or "libuv.so.1")
        libuv.uv_backend_fd.argtypes = [ctypes.c_void_p]
        from socketify.native import ffi

        native = int(ffi.cast("uintptr_t", self.uv.get_native_loop()))
        fd = libuv.uv_backend_fd(native)
        if fd < 0:
            raise RuntimeError("libuv loop has no backend descriptor")
        self.loop.add_reader(fd, self.uv.run_nowait)

        def timers() -> None:
            self.uv.run_nowait()
            self.loop.call_later(TIMER_ROUND_SECONDS, timers)

        timers()

    def listen(self, host: str, port: int) -> None:
        from socketify import AppListenOptions

        listening = []  # socketify calls back only once the socket listens
        self.app.listen(AppListenOptions(port=port, host=host), listening.append)
        self.uv.run_nowait()
        if not listening:
            raise OSError(f"uWS could not listen on {host}:{port}")


async def main_async(args: argparse.Namespace) -> None:
    peer = UwsPeer(args.redis_url, args.secret)
    try:
        subscription = await peer.subscribe()
        peer.listen(args.host, args.port)
    except (OSError, TimeoutError) as exc:
        print(json.dumps({"event": "error", "peer": "uws", "message": str(exc)}), flush=True)
        sys.exit(1)
    peer.attach()
    stop = peer.loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        peer.loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    print(json.dumps({"event": "listening", "peer": "uws", "host": args.host, "port": args.port,
                      "pid": os.getpid()}), flush=True)
    done, _ = await asyncio.wait([stop, subscription.closed], return_when=asyncio.FIRST_COMPLETED)
    if subscription.closed in done:
        print(json.dumps({"event": "error", "peer": "uws",
                          "message": f"redis subscription lost: {subscription.closed.result()}"}),
              flush=True)
        sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    args = peer_arguments(__doc__.splitlines()[0]).parse_args(argv)
    import uvloop

    uvloop.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
