"""The pod's first owner of every connection: its HTTP request head, before picows sees it.

picows 2.3.1 parses the upgrade request itself, before our listener factory runs, and answers a
head it refuses with a plain-text 400 whose body quotes the client's bytes, or, for a head of
16 KiB or more, with a silent disconnect. `HandshakeGuard` owns a new connection only until its
head is complete (`\\r\\n\\r\\n`), checks it with picows's own parser, and either answers the
contract's JSON refusal and closes, or hands the connection to a picows `WSProtocol` built as
`ws_create_server` builds it, feeding it the bytes read so far (a pipelined first frame
included). The guard is then dropped: one small object and one timer per connection while its
head arrives, nothing after (see `_hand_over` for what uvloop would otherwise keep).
"""

from __future__ import annotations

import asyncio

from picows import WSAutoPingStrategy
from picows.picows import WSProtocol, _parse_http_request

from ordertrack import protocol
from ordertrack.http_edge.refusals import Refusal, header_bytes, refusal, refusal_bytes
from ordertrack.http_edge.request_id import request_id
from ordertrack.push import metrics

HEAD_END = b"\r\n\r\n"
#: picows 2.3.1 drops a head of this size or more without a word (its `_http_max_size`)
MAX_HEAD_BYTES = 16 * 1024
#: picows 2.3.1 refuses a head with more header lines than this (`_HTTP_MAX_NUM_HEADERS`)
MAX_HEADERS = 128

HEAD_TOO_LARGE = refusal(
    "REQUEST_HEADER_TOO_LARGE",
    f"request line and headers must be under {MAX_HEAD_BYTES} bytes, in at most {MAX_HEADERS} "
    "header lines")

#: how picows 2.3.1's RuntimeError for a refused head starts -> what we say instead (its own
#: text quotes the client's bytes, which are never echoed)
_PICOWS_ERRORS = (
    ("Malformed request line", "the request line must be `GET <target> HTTP/1.1`"),
    ("Unsupported HTTP method", "only GET is served"),
    ("HTTP request target cannot be empty", "the request target is empty"),
    ("Unsupported HTTP version", "only HTTP/1.1 is served"),
    ("Obsolete folded HTTP header", "obsolete line folding (a line starting with a space or "
                                    "tab) is not accepted"),
    ("Malformed header in HTTP request", "a header line without a colon"),
    ("Invalid HTTP header name", "a header name that is not an HTTP token"),
    ("Invalid HTTP header value", "a header value holding control characters"),
    ("Transfer-Encoding is not supported", "a request body is not accepted (Transfer-Encoding)"),
    ("Multiple Content-Length", "a request body is not accepted (Content-Length)"),
    ("HTTP request body is not supported", "a request body is not accepted (Content-Length)"),
)
_UNPARSABLE = "the request head cannot be parsed"


def head_error_reason(error: str) -> str:
    """Our wording for picows's reason to refuse a head: names the rule, never the bytes."""
    for prefix, reason in _PICOWS_ERRORS:
        if error.startswith(prefix):
            return reason
    return _UNPARSABLE


def head_refusal(head: bytes, error: str) -> Refusal:
    """The answer to a complete head picows's parser refused with `error`: 431 for too many
    header lines, 401 when the broken header is Authorization, else 400 (the API's rule)."""
    if error.startswith("HTTP request contains more than"):
        return HEAD_TOO_LARGE
    _status, code, message = protocol.parse_error_refusal(
        protocol.head_fields(head), head_error_reason(error))
    return refusal(code, message)


def head_request_id(head: bytes) -> str:
    """The head's X-Request-ID when it is clean (`http_edge.request_id`), else a fresh one."""
    return request_id(protocol.head_fields(head))


def check_head(data: bytes) -> tuple[int, Refusal | None]:
    """Where the head in `data` ends (-1: not yet) and the refusal it earns (None: hand over)."""
    end = data.find(HEAD_END)
    if end < 0:
        return -1, HEAD_TOO_LARGE if len(data) >= MAX_HEAD_BYTES else None
    if end >= MAX_HEAD_BYTES:
        return end, HEAD_TOO_LARGE
    try:
        _parse_http_request(data[:end])
    except (RuntimeError, ValueError) as exc:
        return end, head_refusal(data[:end], str(exc))
    return end, None


class HandshakeGuard(asyncio.Protocol):
    """Reads one request head, then answers it or hands the connection to picows."""

    __slots__ = ("_make_ws", "_timeout", "_transport", "_head", "_timer")

    def __init__(self, make_ws, timeout: float | None):
        self._make_ws = make_ws
        self._timeout = timeout
        self._transport = None
        self._head = b""
        self._timer = None

    def connection_made(self, transport) -> None:
        self._transport = transport
        if self._timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(self._timeout, transport.close)

    def connection_lost(self, exc) -> None:
        self._done()

    def data_received(self, data: bytes) -> None:
        if self._transport is None:  # already answered: the transport is closing
            return
        if self._head:  # the head came in pieces (rare: a browser sends it in one segment)
            data = self._head + data
        end, refused = check_head(data)
        if refused is not None:
            self._refuse(refused, data[:end] if end >= 0 else data)
        elif end < 0:
            self._head = data
        else:
            self._hand_over(data)

    def _refuse(self, answer: Refusal, head: bytes) -> None:
        transport = self._transport
        self._done()
        metrics.REFUSALS.labels(answer.code).inc()
        transport.write(refusal_bytes(answer.status, answer.code, answer.message,
                                      head_request_id(head), header_bytes(answer.headers)))
        transport.close()

    def _hand_over(self, data: bytes) -> None:
        transport = self._transport
        self._done()
        ws = self._make_ws()
        # uvloop keeps the previous protocol's `data_received` when the new one has none (picows'
        # WSProtocol is a BufferedProtocol): that bound method kept this guard alive as long as
        # the connection (136 B each). Passing through one whose `data_received` is a shared
        # function first leaves that behind instead.
        transport.set_protocol(_HANDED_OVER)
        transport.set_protocol(ws)
        ws.connection_made(transport)
        view, fed = memoryview(data), 0
        while fed < len(data) and not transport.is_closing():
            buffer = ws.get_buffer(-1)  # picows's read buffer: 2 KiB at first, then it grows
            n = min(len(buffer), len(data) - fed)
            buffer[:n] = view[fed:fed + n]
            fed += n
            ws.buffer_updated(n)

    def _done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._transport = None
        self._head = b""


class _HandedOver:
    """What uvloop keeps as a handed-over connection's `data_received` (see `_hand_over`)."""

    __slots__ = ()

    @staticmethod
    def data_received(data: bytes) -> None:  # never called: picows reads into its own buffer
        return None


_HANDED_OVER = _HandedOver()


async def create_server(listener_factory, host, port, *, logger_name,
                        websocket_handshake_timeout: float | None = 5,
                        enable_auto_ping: bool = False, enable_auto_pong: bool = True,
                        max_frame_size: int = 10 * 1024 * 1024,
                        read_buffer_init_size: int = 16 * 1024,
                        use_aiofastnet: bool = False, **server_options) -> asyncio.Server:
    """`picows.ws_create_server` with the guard in front (its arguments; a logger object only).

    The head's deadline is `websocket_handshake_timeout`: a connection that has not sent a
    complete head by then is closed, as picows would close it.
    """
    if use_aiofastnet:
        raise ValueError("the handshake guard hands over the loop's own transports only")

    def make_ws() -> WSProtocol:
        # as picows 2.3.1's ws_create_server builds it (auto-ping timeouts at their defaults)
        return WSProtocol(None, None, False, listener_factory, logger_name, True,
                          websocket_handshake_timeout, enable_auto_ping, 20, 20,
                          WSAutoPingStrategy.PING_WHEN_IDLE, enable_auto_pong, max_frame_size,
                          None, read_buffer_init_size)

    def make_guard() -> HandshakeGuard:
        return HandshakeGuard(make_ws, websocket_handshake_timeout)

    return await asyncio.get_running_loop().create_server(make_guard, host, port,
                                                          **server_options)
