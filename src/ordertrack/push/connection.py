"""One customer's WebSocket: a picows listener with no Task or timer of its own.

Its heartbeat and its token's expiry live in the pod's timer wheel (`hb_state` says what the
next wheel firing means), its fan-out in the hub. Until the pod has registered it and sent
`connection_ack`, updates are held in `backlog` (at most WS_MAX_PENDING_BYTES of them:
push/delivery.py); afterwards `sent_seq` makes delivery idempotent (replays and catch-ups after
a Redis outage never show a client the same event twice).

Data frames are written whole (`fanout.text_frame`: server frames are unmasked, so the fan-out builds
an update's frame once and writes the same bytes to every watcher) straight to the socket's
transport, never after a close frame went out; picows' `send` only carries control frames
(ping, pong, close). Every byte written to the client (updates, our pings, pongs) counts
against `WS_MAX_PENDING_BYTES`: a client that does not read is closed with 1013, whatever it
sends.

This module holds the pure-Python twin (`__slots__`); the Cython extension type
`ordertrack.push._connection.Connection` (C fields, a shrunk picows write buffer) has the same
behaviour and attribute names and is used unless it is not built or `ORDERTRACK_PURE_PYTHON=1`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multidict import CIMultiDict
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from ordertrack import protocol
from ordertrack.flags.client_class import NATIVE
from ordertrack.push import twins
from ordertrack.push.delivery import OVERFLOW, SEND, offer
from ordertrack.push.fanout import text_frame

# hb_state values: what the wheel entry of this connection means when it fires
HB_PING_DUE = 0
HB_PONG_DUE = 1
HB_CLOSE_DUE = 2

TEXT = WSMsgType.TEXT
PING = WSMsgType.PING
PONG = WSMsgType.PONG
CLOSE = WSMsgType.CLOSE
_ACCEPTED = frozenset((TEXT, PING, PONG, CLOSE))
#: the upgrade's headers (the JWT among them) would otherwise live as long as the connection
_NO_HEADERS: CIMultiDict[str] = CIMultiDict()


class PureConnection(WSListener):
    """The pure-Python twin (see the module docstring)."""

    __slots__ = (
        "pod", "transport", "connection_id", "user_id", "order_id", "carrier",
        "opened_at", "last_ping", "hb_state", "registered", "acked", "sent_seq", "backlog",
        "held_bytes", "resume_seq", "close_reason", "cleaned", "expires_at", "ping_payload",
        "client_class",
    )

    def __init__(self, pod, connection_id: str, user_id: str, order_id: str,
                 resume: protocol.ClientMessage | None, expires_at: float = float("inf"),
                 client_class: str = NATIVE):
        self.pod = pod
        # set by on_ws_connected, before anything uses it
        self.transport: WSTransport = None  # type: ignore[assignment]
        self.connection_id = connection_id
        self.user_id = user_id
        self.order_id = order_id
        self.carrier: str | None = None
        self.opened_at = 0.0
        self.last_ping = 0.0
        self.hb_state = HB_PING_DUE
        self.registered = False
        self.acked = False
        self.sent_seq = 0
        self.backlog: list | None = None
        #: bytes of the updates `delivery.offer` holds in `backlog` (WS_MAX_PENDING_BYTES)
        self.held_bytes = 0
        self.resume_seq = None
        if resume is not None and resume.kind == "resume":
            self.resume_seq = resume.last_seq
        elif resume is not None:  # a bad ?last_seq=: say so right after the ack
            self.backlog = [(None, protocol.error(resume.error_code or "", resume.error_message or ""))]
        self.close_reason: protocol.Close | None = None
        self.cleaned = False
        #: the token's `exp` (epoch seconds) until the pod turns it into loop time on open
        self.expires_at = expires_at
        #: payload of the latest client ping not yet answered (answered once per read batch)
        self.ping_payload: bytes | None = None
        #: mobile / desktop / native, from the upgrade's User-Agent: flag targeting (heartbeat)
        self.client_class = client_class

    @property
    def max_pending_bytes(self) -> int:
        return self.pod.max_pending_bytes

    # --- picows callbacks ----------------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        # picows keeps the upgrade's request and response for the connection's lifetime; from
        # Python only their headers can go (~1-2 KB each: the Cython type drops both objects)
        transport.request.headers = _NO_HEADERS
        transport.response.headers = _NO_HEADERS
        self.pod.on_open(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        rsv = frame.rsv1 or frame.rsv2 or frame.rsv3
        if rsv or not frame.fin or msg_type not in _ACCEPTED:
            # not None: the condition above is its rule
            self.close(*protocol.frame_violation(msg_type.value, frame.fin, rsv))  # type: ignore[misc]
        elif msg_type == TEXT:
            self.pod.on_text(self, frame.get_payload_as_bytes())
        elif msg_type == PONG:
            self.pod.on_pong(self, frame.get_payload_as_bytes())
        elif msg_type == PING:
            # RFC 6455 5.5.3: answering only the latest of several pings is allowed
            self.ping_payload = frame.get_payload_as_bytes()
        else:  # CLOSE
            code, reason = protocol.close_reply(frame.get_payload_as_bytes())
            if self.close_reason is None:
                self.close_reason = reason
            message = frame.get_close_message() if reason is protocol.CLIENT_CLOSE else b"invalid close code"
            transport.send_close(WSCloseCode(code), message)
            transport.disconnect()
            return
        if frame.last_in_buffer and self.ping_payload is not None:
            payload, self.ping_payload = self.ping_payload, None
            if self.close_reason is None:
                transport.send_pong(payload)
                self.check_pending()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.pod.cleanup(self)

    # picows warns on every crossing of the write buffer's watermarks unless these exist; the
    # pending-bytes budget (check_pending) is what acts on a client that does not read
    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    # --- used by the pod and the hub -----------------------------------------------------------
    def check_pending(self) -> None:
        """After every write: more than WS_MAX_PENDING_BYTES unsent closes it with 1013."""
        if self.transport.underlying_transport.get_write_buffer_size() > self.pod.max_pending_bytes:
            self.close(protocol.SLOW_CONSUMER)

    def send_frame(self, frame: bytes) -> None:
        """Write a whole WebSocket frame (`text_frame`), unless a close frame went out."""
        transport = self.transport
        if transport.is_close_frame_sent or transport.is_disconnected:
            return
        transport.underlying_transport.write(frame)
        self.check_pending()

    def send(self, payload: bytes) -> None:
        """Write one text frame with this payload (a JSON message of the wire contract)."""
        self.send_frame(text_frame(payload))

    def deliver(self, frame: bytes, seq: int | None) -> bool:
        """Send a frame by the delivery rules (push/delivery.py): False when held or skipped
        (or held past WS_MAX_PENDING_BYTES: then it is closed 1013)."""
        verdict = offer(self, frame, seq)
        if verdict == SEND:
            self.send(frame)
            return True
        if verdict == OVERFLOW:
            self.close(protocol.SLOW_CONSUMER)
        return False

    def close(self, close: protocol.Close, message: str | None = None, abort: bool = False) -> None:
        """Server-initiated close; the first reason given is the one logged. Decided now
        (nothing more is delivered to it), carried out by the pod's close scheduler
        (push/close_scheduler.py: a mass close stalls nobody)."""
        if self.close_reason is not None or self.transport is None:
            return
        self.close_reason = close
        self.pod.closes.add(self.close_now, close, message, abort)

    def close_now(self, close: protocol.Close, message: str | None = None, abort: bool = False) -> None:
        """The close frame and the disconnect (unless the connection is already going)."""
        transport = self.transport
        if transport.is_close_frame_sent or transport.is_disconnected:
            return
        transport.send_close(WSCloseCode(close.code), (message or close.reason).encode())
        if abort:
            transport.disconnect(graceful=False)
        else:
            # a client that never answers our close is cut off by the wheel
            self.pod.schedule_close_deadline(self)
            transport.disconnect(graceful=True)


#: "cython" or "python": which `Connection` this process uses; IMPLEMENTATIONS has every one built
IMPLEMENTATION: str
IMPLEMENTATIONS: dict[str, type[PureConnection]]
if TYPE_CHECKING:  # to a type checker both are the twin's type (the .pyi says the same)
    Connection = PureConnection
else:
    IMPLEMENTATION, Connection, IMPLEMENTATIONS = twins.choose(
        PureConnection, "ordertrack.push._connection", "Connection")
