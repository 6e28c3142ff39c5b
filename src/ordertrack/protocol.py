"""The push wire protocol as pure functions: close codes, frames, client messages.

No I/O here: the pod's server calls these and writes what they return.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

SUBPROTOCOL = "vantage-tracking-v1"
WS_PATH_PREFIX = "/ws/orders/"
WS_PATH_SUFFIX = "/track"
#: the gateway's request-size limit (Kong request-size-limiting: 4 KB) applies to client frames
MAX_CLIENT_FRAME_BYTES = 4096


# --- close codes and the reason names used in logs and metrics -------------------------------
@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


CLIENT_CLOSE = Close(1000, "client_close")
SERVER_SHUTDOWN = Close(1001, "server_shutdown")
UNSUPPORTED_DATA = Close(1003, "unsupported_data")
MESSAGE_TOO_BIG = Close(1009, "message_too_big")
SLOW_CONSUMER = Close(1013, "slow_consumer")
HEARTBEAT_TIMEOUT = Close(4000, "heartbeat_timeout")
CONNECTION_LIMIT = Close(4001, "connection_limit")
INTERNAL_ERROR = Close(4002, "internal_error")
FEATURE_DISABLED = Close(4003, "feature_disabled")
#: the transport went away without a close handshake (network drop, process killed)
CONNECTION_LOST = Close(1006, "connection_lost")

CLOSE_REASONS = (
    CLIENT_CLOSE, SERVER_SHUTDOWN, UNSUPPORTED_DATA, MESSAGE_TOO_BIG, SLOW_CONSUMER,
    HEARTBEAT_TIMEOUT, CONNECTION_LIMIT, INTERNAL_ERROR, FEATURE_DISABLED, CONNECTION_LOST,
)


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


def refusal_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": code, "message": message})


def connection_ack(connection_id: str, order_id: str, state: dict) -> bytes:
    """`connection_ack` from the order's state hash (values may be missing for a new order)."""
    return orjson.dumps({
        "event": "connection_ack",
        "data": {
            "connection_id": connection_id,
            "order_id": order_id,
            "carrier": state.get("carrier") or None,
            "current_status": state.get("status") or None,
            "seq": int(state.get("seq") or 0),
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


def error(code: str, message: str) -> bytes:
    return orjson.dumps({"event": "error", "data": {"code": code, "message": message}})


# --- client -> server messages ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClientMessage:
    kind: str  # "heartbeat" | "resume" | "invalid"
    last_seq: int | None = None
    error_code: str | None = None
    error_message: str | None = None


HEARTBEAT = ClientMessage("heartbeat")


def parse_client_message(payload: bytes) -> ClientMessage:
    """Classify a client text frame; anything we cannot accept becomes an `invalid` message
    carrying the `error` event's code and message."""
    try:
        message = orjson.loads(payload)
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
        last_seq = data.get("last_seq") if isinstance(data, dict) else None
        if not isinstance(last_seq, int) or isinstance(last_seq, bool) or last_seq < 0:
            return ClientMessage("invalid", error_code="INVALID_MESSAGE",
                                 error_message="resume needs data.last_seq, a whole number >= 0")
        return ClientMessage("resume", last_seq=last_seq)
    return ClientMessage("invalid", error_code="UNKNOWN_EVENT",
                         error_message=f"unknown event {event[:64]!r}")


def parse_last_seq(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        seq = int(value)
    except ValueError:
        return None
    return seq if seq >= 0 else None
