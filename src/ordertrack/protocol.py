"""The push wire protocol as pure functions: close codes, frames, client messages.

No I/O here: the pod's server calls these and writes what they return. The HTTP refusals'
codes, beside these close codes, are `ordertrack.http_edge.refusals.CODES`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeGuard
from urllib.parse import quote

import orjson

from ordertrack.http_edge.refusals import Refusal

SUBPROTOCOL = "vantage-tracking-v1"
WS_PATH_PREFIX = "/ws/orders/"
WS_PATH_SUFFIX = "/track"
#: the gateway's request-size limit (Kong request-size-limiting: 4 KB) applies to client frames
MAX_CLIENT_FRAME_BYTES = 4096
#: the largest `seq` anyone may name: JavaScript's Number.MAX_SAFE_INTEGER (the browser client
#: holds seqs as numbers), far below Redis's stream-id limit of 2^64-1
MAX_SEQ = 2**53 - 1
WEBSOCKET_VERSION = "13"


# --- close codes and the reason names used in logs and metrics -------------------------------
@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


#: the codes RFC 6455 section 7.4.1 defines, in the meaning it gives them
CLIENT_CLOSE = Close(1000, "client_close")
SERVER_SHUTDOWN = Close(1001, "server_shutdown")
PROTOCOL_ERROR = Close(1002, "protocol_error")
UNSUPPORTED_DATA = Close(1003, "unsupported_data")
INVALID_PAYLOAD = Close(1007, "invalid_payload")
TOKEN_EXPIRED = Close(1008, "token_expired")
MESSAGE_TOO_BIG = Close(1009, "message_too_big")
SLOW_CONSUMER = Close(1013, "slow_consumer")
#: the transport went away without a close handshake (network drop, process killed): never sent
CONNECTION_LOST = Close(1006, "connection_lost")
RFC6455_CLOSES = (CLIENT_CLOSE, SERVER_SHUTDOWN, PROTOCOL_ERROR, UNSUPPORTED_DATA, INVALID_PAYLOAD,
                  TOKEN_EXPIRED, MESSAGE_TOO_BIG, SLOW_CONSUMER, CONNECTION_LOST)

#: ours, in the range RFC 6455 leaves to applications (4000-4999)
HEARTBEAT_TIMEOUT = Close(4000, "heartbeat_timeout")
CONNECTION_LIMIT = Close(4001, "connection_limit")
INTERNAL_ERROR = Close(4002, "internal_error")
FEATURE_DISABLED = Close(4003, "feature_disabled")
APPLICATION_CLOSES = (HEARTBEAT_TIMEOUT, CONNECTION_LIMIT, INTERNAL_ERROR, FEATURE_DISABLED)

CLOSE_REASONS = RFC6455_CLOSES + APPLICATION_CLOSES
_CLOSE_BY_CODE = {close.code: close for close in CLOSE_REASONS}


def close_for_code(code: int) -> Close:
    """The reason for a close frame picows sent on its own (its parser's protocol errors)."""
    return _CLOSE_BY_CODE.get(code) or Close(code, INTERNAL_ERROR.reason)


#: codes a peer may put in a close frame (RFC 6455 7.4.1 and IANA's registry); 1004-1006 and
#: 1015 are reserved, 1016-2999 unassigned, 5000+ undefined
_PEER_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                               1013, 1014))


def valid_peer_close_code(code: int) -> bool:
    return code in _PEER_CLOSE_CODES or 3000 <= code <= 4999


def close_reply(payload: bytes) -> tuple[int, Close]:
    """Our answer to a client's close frame (RFC 6455 5.5.1, 7.4): the code to send back and the
    reason to log. An empty close is answered with 1000; a code no peer may send, with 1002."""
    if len(payload) < 2:
        return CLIENT_CLOSE.code, CLIENT_CLOSE
    code = int.from_bytes(payload[:2], "big")
    if not valid_peer_close_code(code):
        return PROTOCOL_ERROR.code, PROTOCOL_ERROR
    return code, CLIENT_CLOSE


# frame opcodes (RFC 6455 5.2)
OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2


def frame_violation(opcode: int, fin: bool, rsv: bool) -> tuple[Close, str] | None:
    """Why a client data frame cannot be accepted (None: it can). No extension is ever
    negotiated, and fragmented messages are refused, so every continuation frame is stray."""
    if rsv:
        return PROTOCOL_ERROR, "reserved bits set without a negotiated extension"
    if opcode == OP_CONTINUATION:
        return PROTOCOL_ERROR, "continuation frame without a message to continue"
    if opcode == OP_BINARY:
        return UNSUPPORTED_DATA, "binary frames are not accepted"
    if opcode == OP_TEXT and not fin:
        return MESSAGE_TOO_BIG, "fragmented messages are not accepted"
    return None


# --- the upgrade request ---------------------------------------------------------------------
def header_tokens(value: str | None) -> set[str]:
    """`Connection: keep-alive, Upgrade` -> {"keep-alive", "upgrade"}."""
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


def check_handshake(upgrade: str | None, connection: str | None, version: str | None,
                    key: str | None) -> Refusal | None:
    """RFC 6455 4.2.1/4.2.2 for the headers picows checks too strictly or too loosely: the
    Connection header need only include `Upgrade` (Firefox sends `keep-alive, Upgrade`), and
    any version but 13 gets a 426 naming the one we speak."""
    if "websocket" not in header_tokens(upgrade):
        return Refusal(426, "UPGRADE_REQUIRED", "this endpoint speaks WebSocket only; poll "
                       "/api/v2/orders/{order_id}/tracking for REST", (("Upgrade", "websocket"),))
    if "upgrade" not in header_tokens(connection):
        return Refusal(400, "BAD_REQUEST", "the Connection header must include Upgrade")
    if version != WEBSOCKET_VERSION:
        return Refusal(426, "UPGRADE_REQUIRED", "unsupported Sec-WebSocket-Version; this server "
                       "speaks 13", (("Sec-WebSocket-Version", WEBSOCKET_VERSION),))
    try:
        if len(base64.b64decode((key or "").encode("ascii"), validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeEncodeError):
        return Refusal(400, "BAD_REQUEST", "Sec-WebSocket-Key must be 16 bytes in base64")
    return None


#: bytes a header value may not hold (RFC 9110 5.5: no controls but HTAB)
_BAD_VALUE_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def head_fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """`(lower-case name, value)` of each header line in what was received of a broken head.

    For choosing the refusal and its request id only: the values are not validated.
    """
    fields = []
    for line in head.split(b"\n")[1:]:
        line = line.removesuffix(b"\r")
        if not line:
            break  # end of the head
        name, colon, value = line.partition(b":")
        if colon:
            fields.append((name.strip().lower(), value.strip(b" \t")))
    return fields


def parse_error_refusal(fields: Iterable[tuple[bytes, bytes]], reason: str
                        ) -> tuple[int, str, str]:
    """(status, code, message) for a request head the HTTP parser refused.

    Credentials that cannot even be parsed are a 401, as any other bad credentials are; every
    other malformed head is a 400.
    """
    for name, value in fields:
        if name == b"authorization" and _BAD_VALUE_BYTE.search(value):
            return 401, "UNAUTHORIZED", "malformed Authorization header"
    return 400, "BAD_REQUEST", f"Malformed HTTP request: {reason[:1].lower()}{reason[1:]}"


def websocket_path(order_id: str) -> str:
    """The order's WebSocket path (`order_id_from_path` reads it back)."""
    return f"{WS_PATH_PREFIX}{quote(order_id, safe='')}{WS_PATH_SUFFIX}"


def order_id_from_path(path: str) -> str | None:
    """`/ws/orders/{order_id}/track` -> order_id; anything else -> None (404)."""
    if not (path.startswith(WS_PATH_PREFIX) and path.endswith(WS_PATH_SUFFIX)):
        return None
    order_id = path[len(WS_PATH_PREFIX):-len(WS_PATH_SUFFIX)]
    if not order_id or "/" in order_id or len(order_id) > 128:
        return None
    return order_id


def split_target(target: str) -> tuple[str, str]:
    path, _, query = target.partition("?")
    return path, query


def query_param(query: str, name: str) -> str | None:
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key == name:
            return value
    return None


# --- server -> client frames -----------------------------------------------------------------
CLIENT_UPDATE_FIELDS = ("status", "location", "timestamp", "estimated_delivery", "carrier", "seq")


def connection_ack(connection_id: str, order_id: str, carrier: str | None, status: str | None,
                   seq: int) -> bytes:
    """`connection_ack` from the order's state hash (`redis_layout.decode_state`; the fields
    are None for an order nothing was published for yet)."""
    return orjson.dumps({
        "event": "connection_ack",
        "data": {
            "connection_id": connection_id,
            "order_id": order_id,
            "carrier": carrier,
            "current_status": status,
            "seq": seq,
        },
    })


def tracking_update(message: dict) -> bytes:
    """Client frame for a Redis message: only the customer fields (`raw_carrier_response` and
    `published_at` never leave the pod)."""
    return orjson.dumps({
        "event": "tracking_update",
        "data": {field: message.get(field) for field in CLIENT_UPDATE_FIELDS},
    })


HEARTBEAT_ACK = orjson.dumps({"event": "heartbeat_ack", "data": {}})


def error(code: str, message: str, seq: int | None = None) -> bytes:
    """An `error` event; `seq` (the order's current seq) only for `RESYNC_REQUIRED`."""
    data: dict = {"code": code, "message": message}
    if seq is not None:
        data["seq"] = seq
    return orjson.dumps({"event": "error", "data": data})


# --- client -> server messages ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClientMessage:
    kind: str  # "heartbeat" | "resume" | "invalid"
    last_seq: int | None = None
    error_code: str | None = None
    error_message: str | None = None


HEARTBEAT = ClientMessage("heartbeat")
#: a text frame that is not UTF-8: the connection is closed with 1007 (RFC 6455 8.1)
NOT_UTF8 = ClientMessage("not_utf8")
_BAD_LAST_SEQ = f"last_seq must be a whole number from 0 to {MAX_SEQ}"


def valid_seq(value: object) -> TypeGuard[int]:
    """A `seq` the pod can hold and compare: an int (not a bool) in 0..MAX_SEQ."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEQ


def resume_from(last_seq) -> ClientMessage:
    if not valid_seq(last_seq):
        return ClientMessage("invalid", error_code="INVALID_MESSAGE", error_message=_BAD_LAST_SEQ)
    return ClientMessage("resume", last_seq=last_seq)


def parse_client_message(payload: bytes) -> ClientMessage:
    """Classify a client text frame; anything we cannot accept becomes an `invalid` message
    carrying the `error` event's code and message."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ClientMessage("invalid", error_code="INVALID_JSON",
                             error_message="messages must be JSON objects")
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        return ClientMessage("invalid", error_code="INVALID_MESSAGE",
                             error_message='messages must look like {"event": ..., "data": {...}}')
    event = message["event"]
    if event == "heartbeat":
        return HEARTBEAT
    if event == "resume":
        data = message.get("data")
        return resume_from(data.get("last_seq") if isinstance(data, dict) else None)
    return ClientMessage("invalid", error_code="UNKNOWN_EVENT",
                         error_message=f"unknown event {event[:64]!r}")


def parse_last_seq(value: str | None) -> ClientMessage | None:
    """`?last_seq=N`: None when absent, else a `resume` or an `invalid` message (its `error`
    event follows the ack; the connection stays)."""
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 20):
        return resume_from(None)
    return resume_from(int(value))
