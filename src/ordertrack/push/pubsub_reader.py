"""The pod's ONE Redis pub/sub connection, read by a protocol of its own.

Every pod receives every message published in the cluster (`PSUBSCRIBE order:tracking:*`), so
the cost of a message nobody on this pod watches bounds the cluster's message rate. The
`PubSubReader` protocol therefore does as little as possible per message:

- each read lands in one preallocated buffer (`asyncio.BufferedProtocol`, `READ_BUFFER_BYTES`)
  and is fed to `hiredis.Reader` in `FEED_BYTES` slices; every complete reply of a slice is
  handled in one batch;
- for a `pmessage` the order id is cut from the channel and looked up in `watched` (the hub's
  `order_id -> watch` dict) before anything else is built; only a watched order's payload goes
  on, as `on_update(order_id, watch, payload)` (the signature of `FanOut.publish`: the pod
  passes the fan-out's own method, nothing in between); a handler that raises is logged and
  that message dropped, the subscription goes on (`on_update` may be swapped at any time:
  the broker holds updates that way while it catches up);
- an `smessage` (PUBSUB_MODE=sharded: `order:tracking:shard:{ORDER_ID}`, SSUBSCRIBEd by
  push/shard_subscriptions.py) is handled as a `pmessage` is, its order id cut from between the
  braces; `ssubscribe` / `sunsubscribe` replies (ours, or Redis's own when a slot moved away)
  go to `on_shard(kind, channel)`;
- control channels' `message`s go to `on_control(payload)`; once Redis has confirmed every
  subscription, `on_live()` is called once;
- counters: `replies` (every reply: the broker's watchdog's sign of life), `received`
  (pmessages), `discarded` (unwatched), `malformed` (see
  `ordertrack.malformed` for the reasons, reported through `on_malformed(order_id, reason)`).

Bytes that are not RESP close the connection (the stream cannot be resynchronised) and are
counted as malformed; an error reply (a refused AUTH, say) closes it too. One protocol, and so
one fresh `hiredis.Reader`, per connection: a connection lost mid-message leaves nothing
half-parsed behind. Reconnecting, with backoff, is the broker's job: `connect()` only opens one
connection and returns its protocol; `await reader.closed` says when and why it ended.

One text, two builds (Cython's pure-Python mode, as push/connection.py): setup.py compiles this
file with ext/ordertrack/push/_pubsub_reader.pxd (the C layout of `ReaderCore`) as
`ordertrack.push._pubsub_reader`, used unless it is not built or `ORDERTRACK_PURE_PYTHON=1`;
interpreted, it is the twin (`PurePubSubReader`). Only the channel's cutting differs by build
(`if cython.compiled`: C compares and decodes in place of slices).
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # Cython is needed to build only; interpreted, this runs as plain Python
    from ordertrack.push import interpreted as cython

import asyncio
import logging
import socket
from collections.abc import Callable, Sequence

import hiredis

from ordertrack import malformed as why
from ordertrack import redis_layout
from ordertrack.push import twins
from ordertrack.push.pubsub_sizes import FEED_BYTES, HANDLER_FAILED, LOGGER, READ_BUFFER_BYTES
from ordertrack.redis_target import SubscriptionAddress

if cython.compiled:
    from cython.cimports.cpython.bytes import PyBytes_AS_STRING, PyBytes_GET_SIZE
    from cython.cimports.cpython.unicode import PyUnicode_DecodeUTF8
    from cython.cimports.libc.string import memcmp

log = logging.getLogger(LOGGER)

PREFIX = cython.declare(bytes, redis_layout.CHANNEL_PREFIX.encode())
PREFIX_LEN = cython.declare(cython.Py_ssize_t, len(PREFIX))
PATTERN = redis_layout.CHANNEL_PATTERN.encode()
SHARD_PREFIX = cython.declare(bytes, redis_layout.SHARD_CHANNEL_PREFIX_BYTES)
SHARD_PREFIX_LEN = cython.declare(cython.Py_ssize_t, len(SHARD_PREFIX))
MAX_PAYLOAD_BYTES = cython.declare(cython.Py_ssize_t, why.MAX_PAYLOAD_BYTES)
FEED = cython.declare(cython.Py_ssize_t, FEED_BYTES)
ProtocolError = hiredis.ProtocolError
ReplyError = hiredis.ReplyError
#: the kernel's receive buffer for the connection, so a burst waits in our socket, not in Redis
SOCKET_RCVBUF_BYTES = 4 << 20
KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 5
KEEPALIVE_PROBES = 3


def hello(control_channels: list[str] | tuple[str, ...] = (), password: str | None = None,
          username: str | None = None, db: int = 0, pattern: bool = True) -> bytes:
    """The commands that open a subscription: AUTH and SELECT when asked, then PSUBSCRIBE of
    the order pattern (unless `pattern` is false: PUBSUB_MODE=sharded) and SUBSCRIBE of the
    control channels, pipelined in one write."""
    out = []
    if password is not None:
        args = ("AUTH", username, password) if username else ("AUTH", password)
        out.append(hiredis.pack_command(args))  # type: ignore[arg-type]  # its stub: a 1-tuple
    if db:
        out.append(hiredis.pack_command(("SELECT", str(db))))  # type: ignore[arg-type]  # likewise
    if pattern:
        psubscribe = ("PSUBSCRIBE", redis_layout.CHANNEL_PATTERN)
        out.append(hiredis.pack_command(psubscribe))  # type: ignore[arg-type]  # likewise
    if control_channels:
        out.append(hiredis.pack_command(("SUBSCRIBE", *control_channels)))
    return b"".join(out)


def tune_socket(sock: socket.socket) -> None:
    """TCP keepalive (a dead Redis is noticed in ~25 s) and a big receive buffer."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RCVBUF_BYTES)


def _ignore(*_args) -> None:
    return None


class ReaderCore:
    """The reader's state and rules (see the module docstring); `PubSubReader` makes it an
    `asyncio.BufferedProtocol` (compiled, a C class cannot derive from that Python class)."""

    def __init__(self, watched: dict, on_update: Callable, on_control: Callable | None = None,
                 on_live: Callable | None = None, on_malformed: Callable | None = None,
                 subscriptions: cython.Py_ssize_t = 1, hello: bytes = b"",
                 closed: asyncio.Future | None = None,
                 buffer_size: cython.Py_ssize_t = READ_BUFFER_BYTES):
        self.watched = watched
        self.on_update = on_update
        self.on_control = on_control or _ignore
        self.on_live = on_live or _ignore
        self.on_malformed = on_malformed or _ignore
        self.on_shard = _ignore
        self.subscriptions = subscriptions
        self.hello = hello
        self.closed = closed
        self.transport = None
        self.live = False
        self.confirmed = 0
        self.replies = 0
        self.received = 0
        self.discarded = 0
        self.malformed = 0
        self.error = None
        self._reader = hiredis.Reader()
        self._gets = self._reader.gets
        self._feed = self._reader.feed
        self._buf = bytearray(buffer_size)
        self._view = memoryview(self._buf)

    # --- asyncio.BufferedProtocol ----------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.hello:
            transport.write(self.hello)

    def get_buffer(self, sizehint: cython.Py_ssize_t):
        return self._view

    def buffer_updated(self, nbytes: cython.Py_ssize_t) -> None:
        offset: cython.Py_ssize_t = 0
        if self._reader is None:
            return
        gets = self._gets
        while offset < nbytes:
            self._feed(self._buf, offset,  # type: ignore[arg-type]  # any buffer, its stub: bytes
                       min(FEED, nbytes - offset))
            offset += FEED
            while True:
                try:
                    reply = gets()
                except ProtocolError as exc:
                    self._fail(exc, why.NOT_RESP)
                    return
                if reply is False:
                    break
                self.replies += 1
                if type(reply) is list:
                    self._on_list(reply)
                    if self._reader is None:
                        return
                elif isinstance(reply, ReplyError):
                    self._fail(reply, None)
                    return
                # anything else (`+OK` to AUTH/SELECT) needs no action

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self.live = False
        self._reader = None
        self._gets = None
        self._feed = None
        if self.error is None:
            self.error = exc
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(self.error)

    # --- replies -----------------------------------------------------------------------------------
    def _on_list(self, reply: list) -> cython.int:
        n: cython.Py_ssize_t = len(reply)
        head: cython.Py_ssize_t
        tail: cython.Py_ssize_t
        clen: cython.Py_ssize_t
        if n == 0:
            return self._malformed(None, why.UNEXPECTED_REPLY)
        kind = reply[0]
        if (n == 4 and kind == b"pmessage") or (n == 3 and kind == b"smessage"):
            self.received += 1
            channel = reply[n - 2]
            payload = reply[n - 1]
            if type(channel) is not bytes or type(payload) is not bytes:
                return self._malformed(None, why.UNEXPECTED_REPLY)
            # pattern: order:tracking:ORDER_ID; sharded: order:tracking:shard:{ORDER_ID}
            if n == 4:
                prefix, head, tail = PREFIX, PREFIX_LEN, 0
            else:
                prefix, head, tail = SHARD_PREFIX, SHARD_PREFIX_LEN, 1
            if cython.compiled:
                clen = PyBytes_GET_SIZE(channel)
                cp: cython.p_char = PyBytes_AS_STRING(channel)
                if (clen < head or memcmp(cp, PyBytes_AS_STRING(prefix), head) != 0
                        or (tail and (clen == head or cp[clen - 1] != 125))):  # 125: '}'
                    return self._malformed(None, why.UNEXPECTED_REPLY)
                if clen <= head + tail:
                    return self._malformed(None, why.EMPTY_ORDER_ID)
                try:
                    order_id = PyUnicode_DecodeUTF8(cp + head, clen - head - tail, cython.NULL)
                except UnicodeDecodeError:
                    return self._malformed(None, why.BAD_ORDER_ID)
                if PyBytes_GET_SIZE(payload) > MAX_PAYLOAD_BYTES:
                    return self._malformed(order_id, why.PAYLOAD_TOO_LARGE)
            else:
                if not channel.startswith(prefix) or (tail and not channel.endswith(b"}")):
                    return self._malformed(None, why.UNEXPECTED_REPLY)
                clen = len(channel)
                if clen <= head + tail:
                    return self._malformed(None, why.EMPTY_ORDER_ID)
                try:
                    order_id = channel[head:clen - tail].decode()
                except UnicodeDecodeError:
                    return self._malformed(None, why.BAD_ORDER_ID)
                if len(payload) > MAX_PAYLOAD_BYTES:
                    return self._malformed(order_id, why.PAYLOAD_TOO_LARGE)
            watch = self.watched.get(order_id)
            if watch is None:
                self.discarded += 1
                return 0
            try:
                self.on_update(order_id, watch, payload)
            except Exception:  # noqa: BLE001 - a bug in a handler must not end the subscription
                log.exception(HANDLER_FAILED, order_id)
        elif n == 3 and kind == b"message":
            payload = reply[2]
            if type(payload) is bytes:
                self.on_control(payload)
            else:
                return self._malformed(None, why.UNEXPECTED_REPLY)
        elif n == 3 and (kind == b"ssubscribe" or kind == b"sunsubscribe"):
            self.on_shard(kind, reply[1])
        elif n == 3 and (kind == b"psubscribe" or kind == b"subscribe"):
            self.confirmed += 1
            if self.confirmed == self.subscriptions and not self.live:
                self.live = True
                self.on_live()
        elif not (n == 2 and kind == b"pong"):
            return self._malformed(None, why.UNEXPECTED_REPLY)
        return 0

    def _malformed(self, order_id, reason: str) -> cython.int:  # order_id: str | None
        self.malformed += 1
        self.on_malformed(order_id, reason)
        return 0

    def _fail(self, exc, reason) -> cython.int:  # exc: BaseException, reason: str | None
        """The stream cannot be trusted any more: stop reading and close the connection."""
        self._reader = None
        self._gets = None
        self._feed = None
        self.error = exc
        if reason is not None:
            self._malformed(None, reason)
        if self.transport is not None:
            self.transport.abort()
        return 0


class PubSubReader(ReaderCore, asyncio.BufferedProtocol):
    """The reader as an `asyncio.BufferedProtocol`."""


if not cython.compiled:
    PurePubSubReader = PubSubReader
    #: "cython" or "python": which `PubSubReader` this process uses; IMPLEMENTATIONS has every
    #: one built (the compiled build of this same file, and this interpreted one)
    IMPLEMENTATION, PubSubReader, IMPLEMENTATIONS = twins.choose(
        PurePubSubReader, "ordertrack.push._pubsub_reader", "PubSubReader")


async def connect(address: SubscriptionAddress, watched: dict, on_update: Callable,
                  on_control: Callable | None = None, on_live: Callable | None = None,
                  on_malformed: Callable | None = None, control_channels: Sequence[str] = (),
                  timeout: float = 2.0, impl: type | None = None, pattern: bool = True):
    """Open one subscription connection to `address` (`redis_connect.subscription_address`:
    host and port or a unix path, AUTH and SELECT when it has them, TLS with its `ssl`
    context) and return its reader; `await reader.closed` when it ends. `pattern` false: no
    PSUBSCRIBE (PUBSUB_MODE=sharded; with no control channels either, the connection just
    opens, and its owner writes SSUBSCRIBEs on `reader.transport`)."""
    loop = asyncio.get_running_loop()
    closed = loop.create_future()
    reader = (impl or PubSubReader)(
        watched, on_update, on_control, on_live, on_malformed,
        subscriptions=int(pattern) + len(control_channels),
        hello=hello(list(control_channels), address.password, address.username, address.db,
                    pattern),
        closed=closed)
    if address.path:
        opener = loop.create_unix_connection(lambda: reader, address.path)
    else:
        ssl = address.ssl
        opener = loop.create_connection(lambda: reader, address.host, address.port,
                                        ssl=ssl, server_hostname=address.host if ssl else None)
    transport, _ = await asyncio.wait_for(opener, timeout)
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family != socket.AF_UNIX:
        tune_socket(sock)
    return reader
