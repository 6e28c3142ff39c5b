"""One customer's WebSocket: a picows listener with `__slots__` and no Task or timer of its own.

Its heartbeat and its token's expiry live in the pod's timer wheel (`hb_state` says what the
next wheel firing means), its fan-out in the hub. Until the pod has registered it and sent
`connection_ack`, updates are held in `backlog`; afterwards `sent_seq` makes delivery idempotent
(replays and catch-ups after a Redis outage never show a client the same event twice).

Every byte written to the client (updates, our pings, pongs) counts against
`WS_MAX_PENDING_BYTES`: a client that does not read is closed with 1013, whatever it sends.
"""

from __future__ import annotations

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from ordertrack import protocol
from ordertrack.push.delivery import offer

# hb_state values: what the wheel entry of this connection means when it fires
HB_PING_DUE = 0
HB_PONG_DUE = 1
HB_CLOSE_DUE = 2

TEXT = WSMsgType.TEXT
PING = WSMsgType.PING
PONG = WSMsgType.PONG
CLOSE = WSMsgType.CLOSE
_ACCEPTED = frozenset((TEXT, PING, PONG, CLOSE))


class Connection(WSListener):
    __slots__ = (
        "pod", "transport", "connection_id", "user_id", "order_id", "carrier",
        "opened_at", "last_ping", "hb_state", "registered", "acked", "sent_seq", "backlog", "resume_seq",
        "close_reason", "cleaned", "expires_at", "ping_payload",
    )

    def __init__(self, pod, connection_id: str, user_id: str, order_id: str,
                 resume: protocol.ClientMessage | None, expires_at: float = float("inf")):
        self.pod = pod
        self.transport: WSTransport | None = None
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
        self.resume_seq = None
        if resume is not None and resume.kind == "resume":
            self.resume_seq = resume.last_seq
        elif resume is not None:  # a bad ?last_seq=: say so right after the ack
            self.backlog = [(None, protocol.error(resume.error_code, resume.error_message))]
        self.close_reason: protocol.Close | None = None
        self.cleaned = False
        #: the token's `exp` (epoch seconds) until the pod turns it into loop time on open
        self.expires_at = expires_at
        #: payload of the latest client ping not yet answered (answered once per read batch)
        self.ping_payload: bytes | None = None

    # --- picows callbacks ----------------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.pod.on_open(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        rsv = frame.rsv1 or frame.rsv2 or frame.rsv3
        if rsv or not frame.fin or msg_type not in _ACCEPTED:
            self.close(*protocol.frame_violation(msg_type.value, frame.fin, rsv))
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

    def send(self, frame: bytes) -> None:
        self.transport.send(TEXT, frame)
        self.check_pending()

    def deliver(self, frame: bytes, seq: int | None) -> bool:
        """Send a frame by the delivery rules (push/delivery.py): False when held or skipped."""
        if not offer(self, frame, seq):
            return False
        self.send(frame)
        return True

    def close(self, close: protocol.Close, message: str | None = None, abort: bool = False) -> None:
        """Server-initiated close; the first reason given is the one logged."""
        if self.close_reason is not None or self.transport is None:
            return
        self.close_reason = close
        transport = self.transport
        transport.send_close(WSCloseCode(close.code), (message or close.reason).encode())
        if abort:
            transport.disconnect(graceful=False)
        else:
            # a client that never answers our close is cut off by the wheel
            self.pod.schedule_close_deadline(self)
            transport.disconnect(graceful=True)
