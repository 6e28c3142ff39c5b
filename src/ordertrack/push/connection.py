"""One customer's WebSocket: a picows listener with no Task or timer of its own.

Its heartbeat and its token's expiry live in the pod's timer wheel (`hb_state` says what the
next wheel firing means), its fan-out in the hub. Until the pod has registered it and sent
`connection_ack`, updates are held in `backlog` (at most `max_pending_bytes` of them);
afterwards `sent_seq` makes delivery idempotent (replays and catch-ups after a Redis outage
never show a client the same event twice). `offer` is THE delivery rule (push/delivery.py
says it in words) and `deliver` acts on it: send, hold, skip, or close 1013; the fan-out calls
`deliver` for every watcher, the pod for its own replies.

Data frames are written whole (`text_frame`: server frames are unmasked, so the fan-out builds
an update's frame once and writes the same bytes to every watcher) straight to the socket's
transport, never after a close frame went out; picows' `send` only carries control frames
(ping, pong, close). Every byte written to the client (updates, our pings, pongs) counts
against `max_pending_bytes` (WS_MAX_PENDING_BYTES): a client that does not read is closed with
1013, whatever it sends.

One text, two builds (Cython's pure-Python mode): setup.py compiles this file, with the C
layout in ext/ordertrack/push/_connection.pxd (C fields, picows' WSListener as the base), into
`ordertrack.push._connection`; interpreted, it is the twin (`__slots__`). Only the I/O leaves
differ by build (`if cython.compiled`): the compiled one drops the upgrade's request and
response, shrinks picows' write buffer and writes through picows' fields.
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # Cython is needed to build only; interpreted, this runs as plain Python
    from ordertrack.push import interpreted as cython

from multidict import CIMultiDict
from picows import WSCloseCode, WSMsgType

from ordertrack import protocol
from ordertrack.flags.client_class import NATIVE
from ordertrack.push import twins

if cython.compiled:
    from cython.cimports.cpython.bytes import (
        PyBytes_AS_STRING,
        PyBytes_FromStringAndSize,
        PyBytes_GET_SIZE,
    )
    from cython.cimports.cpython.mem import PyMem_Free, PyMem_Malloc
    from cython.cimports.libc.string import memcpy
    from cython.cimports.picows.picows import MemoryBuffer, WSTransport
else:
    import struct

    from picows import WSListener, WSTransport

# hb_state values: what the wheel entry of this connection means when it fires
HB_PING_DUE = 0
HB_PONG_DUE = 1
HB_CLOSE_DUE = 2

# what `offer` says about an update (push/delivery.py has the rules in words)
# (C ints when compiled)
SKIP = cython.declare(cython.int, 0)      # closed, or the client has it: nothing to do
SEND = cython.declare(cython.int, 1)      # write it now (`sent_seq` was raised)
HOLD = cython.declare(cython.int, 2)      # held in `backlog` until the ack
OVERFLOW = cython.declare(cython.int, 3)  # holding it would pass max_pending_bytes: close 1013
#: the `seq` of an update that has none (an `error` frame): never deduplicated
NO_SEQ = cython.declare(cython.longlong, -1)

SLOW_CONSUMER = protocol.SLOW_CONSUMER
TEXT = WSMsgType.TEXT
PING = WSMsgType.PING
PONG = WSMsgType.PONG
CLOSE = WSMsgType.CLOSE
#: the upgrade's headers (the JWT among them) would otherwise live as long as the connection
_NO_HEADERS = CIMultiDict()
INVALID_CLOSE_CODE = b"invalid close code"
# After the 101, picows' write buffer carries only control frames: our pings (8 bytes), pongs
# and close frames (payload <= 125 bytes, RFC 6455 5.5), header 2 bytes; data frames are
# written whole to the transport (write_frame). 128 bytes hold any of them; picows grows the
# buffer again itself (MemoryBuffer.resize -> _reserve, PyMem_Realloc) if it ever needs more.
CONTROL_FRAME_BUFFER = 128


def text_frame(payload: bytes) -> bytes:
    """A whole server-to-client WebSocket text frame (FIN, unmasked: RFC 6455 5.2)."""
    if cython.compiled:
        return c_text_frame(payload)
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


@cython.cfunc
def c_text_frame(payload: bytes) -> bytes:
    """text_frame's bytes, laid out in C (compiled only)."""
    n: cython.Py_ssize_t = PyBytes_GET_SIZE(payload)
    h: cython.Py_ssize_t = 2 if n < 126 else (4 if n < 65536 else 10)
    out: bytes = PyBytes_FromStringAndSize(cython.NULL, n + h)
    p: cython.p_uchar = cython.cast(cython.p_uchar, PyBytes_AS_STRING(out))
    i: cython.int
    p[0] = 0x81
    if n < 126:
        p[1] = n
    elif n < 65536:
        p[1] = 126
        p[2] = (n >> 8) & 0xFF
        p[3] = n & 0xFF
    else:
        p[1] = 127
        for i in range(8):
            p[2 + i] = (n >> (56 - 8 * i)) & 0xFF
    memcpy(p + h, PyBytes_AS_STRING(payload), n)
    return out


@cython.cfunc
def _shrink_write_buffer(transport: WSTransport) -> cython.void:
    """picows allocates a 1,024-byte write buffer per connection and never shrinks it; ours
    only ever carries control frames, so 128 bytes do (~900 B less per connection). Reaches
    into WSTransport._write_buffer (a MemoryBuffer: data, capacity, size) as picows 2.3.1 lays
    it out (pinned in pyproject.toml, both as a dependency and for the build)."""
    if cython.compiled:
        buf: MemoryBuffer = transport._write_buffer
        if buf is None or buf.capacity <= CONTROL_FRAME_BUFFER:
            return
        data: cython.p_char = cython.cast(cython.p_char, PyMem_Malloc(CONTROL_FRAME_BUFFER))
        if data == cython.NULL:
            return  # keep the big one
        # empty between sends: picows writes a frame out (or copies it into the transport)
        # before send() returns, and the 101 went out through the transport, not this buffer
        PyMem_Free(buf.data)
        buf.data = data
        buf.capacity = CONTROL_FRAME_BUFFER
        buf.size = 0


class Connection(WSListener):
    """One customer's WebSocket (see the module docstring)."""

    if not cython.compiled:
        __slots__ = (
            "events", "transport", "connection_id", "user_id", "order_id", "carrier",
            "opened_at", "last_ping", "hb_state", "registered", "acked", "sent_seq", "backlog",
            "held_bytes", "resume_seq", "close_reason", "cleaned", "expires_at", "ping_payload",
            "client_class", "max_pending_bytes",
        )

    def __init__(self, events, connection_id: str, user_id: str, order_id: str, resume,
                 expires_at: float = float("inf"), client_class: str = NATIVE,
                 max_pending_bytes: int = 1 << 20):
        #: what the connection tells of its life: `on_open`, `on_text`, `on_pong`, `cleanup`,
        #: `schedule_close_deadline` (push/lifecycle.py)
        self.events = events
        self.transport = None
        self.connection_id = connection_id
        self.user_id = user_id
        self.order_id = order_id
        self.carrier = None
        self.opened_at = 0.0
        self.last_ping = 0.0
        self.hb_state = HB_PING_DUE
        self.registered = False
        self.acked = False
        self.sent_seq = 0
        #: [(seq, frame)] held until the ack (NO_SEQ for a frame without one), or None
        self.backlog = None
        #: bytes of the updates `offer` holds in `backlog` (against max_pending_bytes)
        self.held_bytes = 0
        self.resume_seq = None
        if resume is not None and resume.kind == "resume":
            self.resume_seq = resume.last_seq
        elif resume is not None:  # a bad ?last_seq=: say so right after the ack
            self.backlog = [(NO_SEQ, protocol.error(resume.error_code, resume.error_message))]
        self.close_reason = None
        self.cleaned = False
        #: the token's `exp` (epoch seconds) until the pod turns it into loop time on open
        self.expires_at = expires_at
        #: payload of the latest client ping not yet answered (answered once per read batch)
        self.ping_payload = None
        #: mobile / desktop / native, from the upgrade's User-Agent: flag targeting (heartbeat)
        self.client_class = client_class
        #: WS_MAX_PENDING_BYTES: bytes held before the ack, or unsent on the socket
        self.max_pending_bytes = max_pending_bytes

    # --- picows callbacks ----------------------------------------------------------------------
    def on_ws_connected(self, transport) -> None:
        self.transport = transport
        if cython.compiled:
            # picows 2.3.1 reads them only before this callback (the upgrade, and the client
            # side's factory); kept, they and their headers (the JWT among them) live as long
            # as the socket
            transport.request = None
            transport.response = None
            _shrink_write_buffer(transport)
        else:
            # from Python only their headers can go (~1-2 KB each)
            transport.request.headers = _NO_HEADERS
            transport.response.headers = _NO_HEADERS
        self.events.on_open(self)

    def on_ws_frame(self, transport, frame) -> None:
        msg_type = frame.msg_type
        rsv: cython.bint = frame.rsv1 or frame.rsv2 or frame.rsv3
        if rsv or not frame.fin or not (
                msg_type == TEXT or msg_type == PING or msg_type == PONG or msg_type == CLOSE):
            self.close(*protocol.frame_violation(int(msg_type), frame.fin, rsv))
        elif msg_type == TEXT:
            self.events.on_text(self, frame.get_payload_as_bytes())
        elif msg_type == PONG:
            self.events.on_pong(self, frame.get_payload_as_bytes())
        elif msg_type == PING:
            # RFC 6455 5.5.3: answering only the latest of several pings is allowed
            self.ping_payload = frame.get_payload_as_bytes()
        else:  # CLOSE
            code, reason = protocol.close_reply(frame.get_payload_as_bytes())
            if self.close_reason is None:
                self.close_reason = reason
            message = frame.get_close_message() if reason is protocol.CLIENT_CLOSE else INVALID_CLOSE_CODE
            transport.send_close(WSCloseCode(code), message)
            transport.disconnect()
            return
        if frame.last_in_buffer and self.ping_payload is not None:
            payload = self.ping_payload
            self.ping_payload = None
            if self.close_reason is None:
                transport.send_pong(payload)
                self.check_pending()

    def on_ws_disconnected(self, transport) -> None:
        self.events.cleanup(self)

    # picows warns on every crossing of the write buffer's watermarks unless these exist; the
    # pending-bytes budget (check_pending) is what acts on a client that does not read
    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    # --- the delivery rule (push/delivery.py) ----------------------------------------------------
    def offer(self, frame: bytes, seq: cython.longlong) -> cython.int:
        """What to do with an update: SEND, HOLD, SKIP or OVERFLOW (push/delivery.py); `seq`
        NO_SEQ (an `error` frame, say) is never deduplicated."""
        held: cython.Py_ssize_t
        if self.close_reason is not None:
            return SKIP
        if not self.acked:
            held = self.held_bytes + len(frame)
            if held > self.max_pending_bytes:
                self.backlog = None
                self.held_bytes = 0
                return OVERFLOW
            if self.backlog is None:
                self.backlog = []
            self.backlog.append((seq, frame))
            self.held_bytes = held
            return HOLD
        if seq != NO_SEQ:
            if seq <= self.sent_seq:
                return SKIP
            self.sent_seq = seq
        return SEND

    def deliver(self, frame: bytes, seq: cython.longlong = NO_SEQ, ws_frame: bytes = None) -> cython.bint:
        """Send, hold or skip an update by `offer`; held past max_pending_bytes, close 1013.
        `ws_frame` is `text_frame(frame)` when the caller built it already (the fan-out builds
        it once for every watcher). True when it was written."""
        verdict: cython.int = self.offer(frame, seq)
        if verdict == SEND:
            self.write_frame(text_frame(frame) if ws_frame is None else ws_frame)
            return True
        if verdict == OVERFLOW:
            self.close(SLOW_CONSUMER)
        return False

    # --- writes ----------------------------------------------------------------------------------
    def write_frame(self, ws_frame: bytes) -> None:
        """A whole WebSocket frame to the socket, never after a close frame went out.

        Compiled: picows' own fast path (WSTransport._fast_write in 2.3.1, through its fields):
        nothing queued in the transport -> one send(2) of the frame, and nothing is pending
        after it; otherwise (or for the unsent rest) the transport's `write`, then the check."""
        transport: WSTransport = self.transport
        if transport.is_close_frame_sent or transport.is_disconnected:
            return
        if cython.compiled:
            size: cython.Py_ssize_t
            sent: cython.Py_ssize_t
            if not transport.is_secure and not transport._tr_get_write_buffer_size():
                size = PyBytes_GET_SIZE(ws_frame)
                sent = c_send(transport._socket, PyBytes_AS_STRING(ws_frame), size, 0)  # noqa: F821 - send(2), declared in the .pxd
                if sent == size:
                    return
                if sent > 0:
                    ws_frame = ws_frame[sent:]
            transport._tr_write(ws_frame)
        else:
            transport.underlying_transport.write(ws_frame)
        self.check_pending()

    def check_pending(self) -> None:
        """After every write: more than max_pending_bytes unsent closes it with 1013."""
        transport: WSTransport = self.transport
        if cython.compiled:
            pending = transport._tr_get_write_buffer_size()
        else:
            pending = transport.underlying_transport.get_write_buffer_size()
        if pending > self.max_pending_bytes:
            self.close(SLOW_CONSUMER)

    def send(self, payload: bytes) -> None:
        """Write one text frame with this payload (a JSON message of the wire contract)."""
        self.write_frame(text_frame(payload))

    def close(self, close, message=None) -> None:
        """Server-initiated close; the first reason given is the one logged. Every close the
        pod starts goes through here: decided now (nothing more is delivered to it), carried
        out by the pod's close scheduler (push/close_scheduler.py: a mass close stalls nobody)."""
        if self.close_reason is not None or self.transport is None:
            return
        self.close_reason = close
        self.events.closes.add(self.close_now, close, message)

    def close_now(self, close, message=None) -> None:
        """The close frame and the disconnect (unless the connection is already going)."""
        transport: WSTransport = self.transport
        if transport.is_close_frame_sent or transport.is_disconnected:
            return
        transport.send_close(WSCloseCode(close.code), (message or close.reason).encode())
        # a client that never answers our close is cut off by the wheel
        self.events.schedule_close_deadline(self)
        transport.disconnect(True)


if not cython.compiled:
    PureConnection = Connection
    #: "cython" or "python": which `Connection` this process uses; IMPLEMENTATIONS has every
    #: one built (the compiled build of this same file, and this interpreted one)
    IMPLEMENTATION, Connection, IMPLEMENTATIONS = twins.choose(
        PureConnection, "ordertrack.push._connection", "Connection")
