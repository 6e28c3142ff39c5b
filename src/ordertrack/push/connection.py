"""One customer's WebSocket: a picows listener with `__slots__` and no Task or timer of its own.

Its heartbeat lives in the pod's timer wheel (`hb_state` says what the next wheel firing means),
its fan-out in the hub. Until the pod has registered it and sent `connection_ack`, updates are
held in `backlog`; afterwards `sent_seq` makes delivery idempotent (replays and catch-ups after a
Redis outage never show a client the same event twice).
"""

from __future__ import annotations

from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from ordertrack import protocol

# hb_state values: what the wheel entry of this connection means when it fires
HB_PING_DUE = 0
HB_PONG_DUE = 1
HB_CLOSE_DUE = 2

TEXT = WSMsgType.TEXT


class Connection(WSListener):
    __slots__ = (
        "pod", "transport", "connection_id", "user_id", "order_id", "carrier",
        "opened_at", "last_ping", "hb_state", "registered", "acked", "sent_seq", "backlog", "resume_seq",
        "close_reason", "cleaned",
    )

    def __init__(self, pod, connection_id: str, user_id: str, order_id: str,
                 resume_seq: int | None):
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
        self.resume_seq = resume_seq
        self.close_reason: protocol.Close | None = None
        self.cleaned = False

    # --- picows callbacks ----------------------------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.pod.on_open(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type == WSMsgType.PONG:
            self.pod.on_pong(self)
        elif msg_type == TEXT:
            if not frame.fin:
                self.close(protocol.MESSAGE_TOO_BIG, "fragmented messages are not accepted")
                return
            self.pod.on_text(self, frame.get_payload_as_bytes())
        elif msg_type == WSMsgType.CLOSE:
            if self.close_reason is None:
                self.close_reason = protocol.CLIENT_CLOSE
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif msg_type == WSMsgType.BINARY or msg_type == WSMsgType.CONTINUATION:
            self.close(protocol.UNSUPPORTED_DATA, "binary frames are not accepted")

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.pod.cleanup(self)

    # --- used by the pod and the hub -----------------------------------------------------------
    def send(self, frame: bytes) -> None:
        transport = self.transport
        transport.send(TEXT, frame)
        if transport.underlying_transport.get_write_buffer_size() > self.pod.max_pending_bytes:
            self.close(protocol.SLOW_CONSUMER)

    def deliver(self, frame: bytes, seq: int | None) -> bool:
        """Send an update unless the client already has it. False when skipped or held back."""
        if self.close_reason is not None:
            return False
        if not self.acked:
            if self.backlog is None:
                self.backlog = []
            self.backlog.append((seq, frame))
            return False
        if seq is not None:
            if seq <= self.sent_seq:
                return False
            self.sent_seq = seq
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
