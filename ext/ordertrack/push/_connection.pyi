"""Types of the compiled build of src/ordertrack/push/connection.py (module
ordertrack.push._connection); interpreted, that file is the twin (PureConnection)."""
from picows import WSFrame, WSListener, WSTransport

from ordertrack import protocol

def text_frame(payload: bytes) -> bytes: ...

class Connection(WSListener):
    events: object
    transport: WSTransport | None
    connection_id: str
    user_id: str
    order_id: str
    carrier: str | None
    client_class: str
    backlog: list[tuple[int | None, bytes]] | None
    resume_seq: int | None
    close_reason: protocol.Close | None
    ping_payload: bytes | None
    opened_at: float
    last_ping: float
    expires_at: float
    sent_seq: int
    held_bytes: int
    max_pending_bytes: int
    hb_state: int
    registered: bool
    acked: bool
    cleaned: bool
    def __init__(self, events: object, connection_id: str, user_id: str, order_id: str,
                 resume: protocol.ClientMessage | None, expires_at: float = ...,
                 client_class: str = ..., max_pending_bytes: int = ...) -> None: ...
    def on_ws_connected(self, transport: WSTransport) -> None: ...
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None: ...
    def on_ws_disconnected(self, transport: WSTransport) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...
    def offer(self, frame: bytes, seq: int) -> int: ...
    def check_pending(self) -> None: ...
    def send(self, payload: bytes) -> None: ...
    def deliver(self, frame: bytes, seq: int = ..., ws_frame: bytes | None = ...) -> bool: ...
    def write_frame(self, ws_frame: bytes) -> None: ...
    def close(self, close: protocol.Close, message: str | None = ...) -> None: ...
